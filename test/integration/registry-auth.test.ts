import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { TestRegistry } from '../helpers/registry.js';
import { useTestRegistries } from '../helpers/registry-suite.js';
import { startProxy } from '../helpers/registry-proxy.js';
import { marked, nodeStore, pushFixture, writeAuthFile } from '../helpers/registry-fixtures.js';

let basic: TestRegistry;
let token: TestRegistry;
let base: string;
const skip = useTestRegistries('registry-auth', [{ htpasswd: true }, { tokenAuth: true }], (dir, registries) => {
  base = dir;
  [basic, token] = registries;
});

test(
  "basic auth (the registry's htpasswd): credentials from a docker config.json, both entry styles",
  { skip },
  async () => {
    const layout = join(base, 'basic');
    const written = await pushFixture(basic, layout, marked('basic'), 'acme/basic');
    const [user, password] = Object.entries(basic.users)[0]!;
    // "auth": base64(user:password), keyed by host:port
    const a = await writeAuthFile(join(base, 'a.json'), basic.host, user, password, 'auth');
    assert.equal(
      (await nodeStore(base, 'basic-a', { authFile: a }).ensure(`${basic.host}/acme/basic:v1`)).manifestDigest,
      written.manifestDigest,
    );
    // "username"/"password", keyed by a URL as `docker login` writes for some registries
    const b = await writeAuthFile(join(base, 'b.json'), `http://${basic.host}/v2/`, user, password, 'fields');
    assert.equal(
      (await nodeStore(base, 'basic-b', { authFile: b }).ensure(`${basic.host}/acme/basic:v1`)).manifestDigest,
      written.manifestDigest,
    );
    // EMBERS_REGISTRY_AUTH_FILE is the default path
    const saved = process.env.EMBERS_REGISTRY_AUTH_FILE;
    process.env.EMBERS_REGISTRY_AUTH_FILE = a;
    try {
      const { ImageStore } = await import('../../src/image/store.js');
      const store = new ImageStore(join(base, 'basic-env', 'images'), join(base, 'basic-env', 'tmp'));
      assert.equal((await store.ensure(`${basic.host}/acme/basic:v1`)).manifestDigest, written.manifestDigest);
    } finally {
      if (saved === undefined) delete process.env.EMBERS_REGISTRY_AUTH_FILE;
      else process.env.EMBERS_REGISTRY_AUTH_FILE = saved;
    }
  },
);

test(
  'bearer tokens (registry auth: token): 401 challenge, token from the realm with basic credentials, retry with Bearer',
  { skip },
  async () => {
    const layout = join(base, 'token');
    const written = await pushFixture(token, layout, marked('token'), 'acme/token');
    const [user, password] = Object.entries(token.users)[0]!;
    const authFile = await writeAuthFile(join(base, 't.json'), token.host, user, password);
    const proxy = await startProxy(token.host);
    try {
      // through a logging proxy, to see the dance (the proxy passes headers through unchanged)
      const store = nodeStore(base, 'token-node', {
        authFile: await writeAuthFile(join(base, 'tp.json'), proxy.host, user, password),
      });
      const before = token.tokenRequests.length;
      const image = await store.ensure(`${proxy.host}/acme/token:v1`);
      assert.equal(image.manifestDigest, written.manifestDigest);
      const asked = token.tokenRequests.slice(before);
      assert.equal(asked.length, 1, 'one token for the whole pull (cached)');
      assert.equal(asked[0]!.user, user, 'basic credentials sent to the realm');
      assert.ok(asked[0]!.granted);
      const url = new URL(asked[0]!.url, 'http://x');
      assert.equal(url.searchParams.get('service'), 'embers-test-registry');
      assert.deepEqual(url.searchParams.getAll('scope'), ['repository:acme/token:pull']);
      assert.equal(proxy.requests[0]!.status, 401, 'first answer: the challenge');
      assert.equal(proxy.requests[1]!.url, proxy.requests[0]!.url, 'then the same request again, with the token');
      assert.equal(proxy.requests[1]!.status, 200);
      assert.ok(
        proxy.requests.slice(1).every((r) => r.status === 200),
        'every later request sends the cached token up front',
      );
    } finally {
      await proxy.stop();
    }
    // directly, on another node: same image
    const direct = await nodeStore(base, 'token-direct', { authFile }).ensure(`${token.host}/acme/token:v1`);
    assert.equal(direct.rootfsSha256, (await nodeStore(base, 'token-local').ensure(layout)).rootfsSha256);
  },
);

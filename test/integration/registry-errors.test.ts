import { test } from 'node:test';
import assert from 'node:assert/strict';
import { open, readdir, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { isEmbersError, type ErrorCode } from '../../src/errors.js';
import type { WrittenImage } from '../../src/examples/oci-layout.js';
import type { ImageStore } from '../../src/image/store.js';
import { freePort, type TestRegistry } from '../helpers/registry.js';
import { useTestRegistries } from '../helpers/registry-suite.js';
import { startProxy } from '../helpers/registry-proxy.js';
import {
  assertNothingHalfWritten,
  f,
  nodeStore,
  noise,
  pushFixture,
  writeAuthFile,
} from '../helpers/registry-fixtures.js';

let reg: TestRegistry;
let authReg: TestRegistry;
let tokenReg: TestRegistry;
let base: string;
let n = 0;
const skip = useTestRegistries('registry-errors', [{}, { htpasswd: true }, { tokenAuth: true }], (dir, registries) => {
  base = dir;
  [reg, authReg, tokenReg] = registries;
});

/** Pushes a two-layer image (a small layer and a 256 KiB one) to `repo:v1` of `registry`. */
async function pushImage(registry: TestRegistry, repo: string): Promise<WrittenImage> {
  const layout = join(base, `layout-${repo.replace(/\//g, '-')}-${++n}`);
  const written = await pushFixture(
    registry,
    layout,
    { layers: [{ entries: [f('small', repo)] }, { entries: [f('big', noise(256 * 1024, n))], compression: 'none' }] },
    repo,
  );
  return written;
}

function node(opts: Parameters<typeof nodeStore>[2] = {}): { store: ImageStore; images: string; tmp: string } {
  const name = `node-${++n}`;
  return { store: nodeStore(base, name, opts), images: join(base, name, 'images'), tmp: join(base, name, 'tmp') };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<Error> {
  let caught: Error | undefined;
  await assert.rejects(p, (e: unknown) => {
    assert.ok(
      isEmbersError(e, code),
      `expected ${code}, got ${String((e as { code?: string }).code)}: ${(e as Error).message}`,
    );
    if (message) assert.match((e as Error).message, message);
    caught = e as Error;
    return true;
  });
  return caught!;
}

test(
  'unknown repository, unknown tag, unknown digest: EMB_IMAGE_NOT_FOUND naming what is missing',
  { skip },
  async () => {
    await pushImage(reg, 'acme/known');
    const { store, images, tmp } = node();
    await rejectsWith(
      store.ensure(`${reg.host}/acme/nope:v1`),
      'EMB_IMAGE_NOT_FOUND',
      /acme\/nope:v1 is not on the registry: the repository does not exist/,
    );
    await rejectsWith(
      store.pull(`${reg.host}/acme/known:v2`),
      'EMB_IMAGE_NOT_FOUND',
      /the tag does not exist \(tags: v1\) \(MANIFEST_UNKNOWN\)/,
    );
    await rejectsWith(
      store.ensure(`${reg.host}/acme/known@sha256:${'0'.repeat(64)}`),
      'EMB_IMAGE_NOT_FOUND',
      /no manifest has that digest/,
    );
    await assertNothingHalfWritten(images, tmp);
    assert.deepEqual(await store.listImages(), []);
    // and a reference that is not one
    await rejectsWith(
      store.ensure(`${reg.host}/Acme/Known:v1`),
      'EMB_IMAGE_REFERENCE_INVALID',
      /repositories are lowercase/,
    );
    await rejectsWith(store.inspect(`${reg.host}/acme/known:v1`), 'EMB_IMAGE_NOT_FOUND', /not in the image cache/);
  },
);

test('a blob corrupted in the registry storage: EMB_IMAGE_DIGEST_MISMATCH, never stored', { skip }, async () => {
  const written = await pushImage(reg, 'acme/corrupt');
  const big = written.layerDigests[1]!;
  const fh = await open(reg.blobDataPath(big), 'r+');
  await fh.write(Buffer.from('CORRUPTED'), 0, 9, 1000);
  await fh.close();
  const { store, images, tmp } = node();
  await rejectsWith(
    store.ensure(`${reg.host}/acme/corrupt:v1`),
    'EMB_IMAGE_DIGEST_MISMATCH',
    new RegExp(`blob ${big} from .* does not match its digest`),
  );
  await assertNothingHalfWritten(images, tmp, { notStored: [big, written.manifestDigest] });
  assert.deepEqual(await store.listImages(), []);
});

test(
  'a blob truncated in the registry storage: EMB_IMAGE_DIGEST_MISMATCH on its size, never stored',
  { skip },
  async () => {
    const written = await pushImage(reg, 'acme/truncated');
    const big = written.layerDigests[1]!;
    await truncate(reg.blobDataPath(big), 100_000);
    const { store, images, tmp } = node();
    await rejectsWith(
      store.ensure(`${reg.host}/acme/truncated:v1`),
      'EMB_IMAGE_DIGEST_MISMATCH',
      /is 100000 bytes, but its descriptor says/,
    );
    await assertNothingHalfWritten(images, tmp, { notStored: [big, written.manifestDigest] });
  },
);

test(
  'a body cut short on every request: EMB_REGISTRY_UNREACHABLE after the retries, the part kept hidden for a resume',
  { skip },
  async () => {
    const written = await pushImage(reg, 'acme/cut');
    const big = written.layerDigests[1]!;
    const proxy = await startProxy(reg.host, { cut: ({ url }) => (url.endsWith(big) ? 0 : undefined) });
    try {
      const { store, images, tmp } = node();
      const err = await rejectsWith(
        store.ensure(`${proxy.host}/acme/cut:v1`),
        'EMB_REGISTRY_UNREACHABLE',
        /broke after 0 of \d+ bytes/,
      );
      assert.ok(err.message.includes(big));
      assert.equal(proxy.requests.filter((r) => r.url.endsWith(big)).length, 3, 'tried 3 times (FAST_RETRY)');
      await assertNothingHalfWritten(images, tmp, { notStored: [big, written.manifestDigest], parts: true });
    } finally {
      await proxy.stop();
    }
  },
);

test(
  'registry down: EMB_REGISTRY_UNREACHABLE; plain HTTP to a registry not marked insecure is refused: EMB_REGISTRY_TLS',
  { skip },
  async () => {
    const port = await freePort();
    const { store, images, tmp } = node();
    await rejectsWith(
      store.ensure(`127.0.0.1:${port}/acme/fn:v1`),
      'EMB_REGISTRY_UNREACHABLE',
      new RegExp(`127\\.0\\.0\\.1:${port}\\) could not be reached: ECONNREFUSED`),
    ); // how fast: `npm run bench -- failures`
    await assertNothingHalfWritten(images, tmp);

    await pushImage(reg, 'acme/tls');
    const strict = node({ insecureRegistries: [] });
    await rejectsWith(strict.store.ensure(`${reg.host}/acme/tls:v1`), 'EMB_REGISTRY_TLS');
    await assertNothingHalfWritten(strict.images, strict.tmp);
    // listed by host and port, it works
    const listed = node({ insecureRegistries: [reg.host] });
    assert.ok((await listed.store.ensure(`${reg.host}/acme/tls:v1`)).rootfsSha256);
  },
);

test(
  'auth refused: wrong password or no credentials, with basic auth (htpasswd) and with bearer tokens',
  { skip },
  async () => {
    await pushImage(authReg, 'acme/private');
    await pushImage(tokenReg, 'acme/private');
    const [user] = Object.keys(authReg.users);
    for (const registry of [authReg, tokenReg]) {
      const wrong = node();
      await writeAuthFile(join(base, `wrong-${n}.json`), registry.host, user!, 'not-the-password');
      const wrongStore = nodeStore(base, `wrong-${n}`, { authFile: join(base, `wrong-${n}.json`) });
      const err = await rejectsWith(
        wrongStore.ensure(`${registry.host}/acme/private:v1`),
        'EMB_REGISTRY_AUTH',
        new RegExp(`"${user}"`),
      );
      assert.equal((err as unknown as { details: { username: string } }).details.username, user);
      await assertNothingHalfWritten(join(base, `wrong-${n}`, 'images'), join(base, `wrong-${n}`, 'tmp'));

      await rejectsWith(
        wrong.store.ensure(`${registry.host}/acme/private:v1`),
        'EMB_REGISTRY_AUTH',
        registry === authReg ? /needs credentials/ : /refused anonymous access/,
      );
      await assertNothingHalfWritten(wrong.images, wrong.tmp);
    }
    // the token service was asked with the (wrong) basic credentials
    assert.ok(tokenReg.tokenRequests.some((r) => r.user === user && !r.granted));
  },
);

test('an interrupted pull leaves no rootfs and no visible blob; the next pull completes', { skip }, async () => {
  const written = await pushImage(reg, 'acme/again');
  const big = written.layerDigests[1]!;
  const proxy = await startProxy(reg.host, {
    cut: ({ url, n: count }) => (url.endsWith(big) && count === 1 ? 65536 : undefined),
  });
  try {
    const { store, images, tmp } = node({ retry: { attempts: 1 } });
    await rejectsWith(store.ensure(`${proxy.host}/acme/again:v1`), 'EMB_REGISTRY_UNREACHABLE');
    await assertNothingHalfWritten(images, tmp, { notStored: [big], parts: true });
    const parts = await readdir(join(images, 'blobs', '.partial'));
    assert.deepEqual(parts, [`${big.slice(7)}.part`]);
    const kept = (await stat(join(images, 'blobs', '.partial', parts[0]!))).size;
    assert.equal(kept, 65536, 'the part holds every byte that arrived before the cut');
    const image = await store.ensure(`${proxy.host}/acme/again:v1`);
    assert.equal(
      proxy.requests.filter((r) => r.url.endsWith(big)).at(-1)?.range,
      `bytes=${kept}-`,
      'resumed where it broke',
    );
    assert.equal(image.manifestDigest, written.manifestDigest);
    assert.deepEqual(await readdir(join(images, 'blobs', '.partial')), [], 'the part became the blob');
  } finally {
    await proxy.stop();
  }
});

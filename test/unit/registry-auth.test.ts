import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { basicHeader, loadAuthFile, normalizeAuthKey, parseChallenges } from '../../src/image/registry/auth.js';
import {
  compileRegistryOptions,
  defaultAuthFile,
  insecureFromEnv,
  isInsecure,
} from '../../src/image/registry/options.js';
import { describePullEvent, pullProgressDisplay, type PullEvent } from '../../src/image/registry/progress.js';

test('WWW-Authenticate: Docker Hub, GHCR and registry challenges; several challenges in one header', () => {
  assert.deepEqual(
    parseChallenges(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    ),
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/alpine:pull',
        },
      },
    ],
  );
  assert.deepEqual(
    parseChallenges('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:acme/fn:pull"')[0]!.params
      .service,
    'ghcr.io',
  );
  assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [
    { scheme: 'basic', params: { realm: 'Registry Realm' } },
  ]);
  assert.deepEqual(
    parseChallenges(
      'Basic realm="a, b", Bearer realm="https://x/t", service=svc , scope="repository:a:pull repository:b:pull"',
    ),
    [
      { scheme: 'basic', params: { realm: 'a, b' } },
      {
        scheme: 'bearer',
        params: { realm: 'https://x/t', service: 'svc', scope: 'repository:a:pull repository:b:pull' },
      },
    ],
  );
  assert.deepEqual(parseChallenges('bearer realm="q\\"uote"'), [{ scheme: 'bearer', params: { realm: 'q"uote' } }]);
  assert.deepEqual(parseChallenges(undefined), []);
  assert.deepEqual(parseChallenges('Negotiate'), [{ scheme: 'negotiate', params: {} }]);
});

test('credentials file: docker config.json auths, both entry styles, keys with scheme and path', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-auth-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'config.json');
  await writeFile(
    file,
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw:with:colons').toString('base64') },
        'ghcr.io': { username: 'gh', password: 'token' },
        'http://LOCALHOST:5000/v2/': { auth: Buffer.from('local:pw').toString('base64') },
        'empty.example': {},
      },
      credsStore: 'desktop',
    }),
  );
  const creds = await loadAuthFile(file);
  assert.deepEqual([...creds.entries()].sort(), [
    ['docker.io', { username: 'hub', password: 'pw:with:colons' }],
    ['ghcr.io', { username: 'gh', password: 'token' }],
    ['localhost:5000', { username: 'local', password: 'pw' }],
  ]);
  assert.equal(basicHeader({ username: 'a', password: 'b' }), `Basic ${Buffer.from('a:b').toString('base64')}`);
  assert.equal(normalizeAuthKey('registry-1.docker.io'), 'docker.io');
  assert.deepEqual(await loadAuthFile(join(dir, 'missing.json')), new Map());
  await writeFile(file, '{ not json');
  await assert.rejects(
    loadAuthFile(file),
    (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID') && /not valid/.test((e as Error).message),
  );
  await writeFile(file, JSON.stringify({ auths: { x: { auth: Buffer.from('nocolon').toString('base64') } } }));
  await assert.rejects(
    loadAuthFile(file),
    (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID') && /user:password/.test((e as Error).message),
  );
});

test('insecure registries: localhost and 127.0.0.1 by default, EMBERS_INSECURE_REGISTRIES replaces the list', () => {
  assert.ok(isInsecure('localhost:5000', insecureFromEnv({})));
  assert.ok(isInsecure('127.0.0.1:41234', insecureFromEnv({})));
  assert.ok(isInsecure('[::1]:5000', insecureFromEnv({})));
  assert.ok(!isInsecure('ghcr.io', insecureFromEnv({})));
  const env = insecureFromEnv({ EMBERS_INSECURE_REGISTRIES: ' reg.lan:5000, build-cache ' });
  assert.deepEqual(env, ['reg.lan:5000', 'build-cache']);
  assert.ok(isInsecure('reg.lan:5000', env));
  assert.ok(!isInsecure('reg.lan:5001', env), 'host:port entries match that port only');
  assert.ok(isInsecure('build-cache:80', env), 'host entries match any port');
  assert.ok(!isInsecure('localhost:5000', env), 'the list replaces the defaults');
  assert.deepEqual(insecureFromEnv({ EMBERS_INSECURE_REGISTRIES: '' }), []);
  assert.throws(
    () => compileRegistryOptions({ insecureRegistries: ['http://x'] }),
    (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID'),
  );
  assert.throws(
    () => compileRegistryOptions({ concurrency: 0 }),
    (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID'),
  );
  assert.equal(defaultAuthFile({ EMBERS_REGISTRY_AUTH_FILE: '/etc/embers/auth.json' }), '/etc/embers/auth.json');
  assert.equal(defaultAuthFile({ DOCKER_CONFIG: '/cfg' }), '/cfg/config.json');
  const c = compileRegistryOptions({ authFile: '/a', insecureRegistries: [] });
  assert.deepEqual(
    { concurrency: c.concurrency, timeoutMs: c.timeoutMs, attempts: c.retry.attempts },
    { concurrency: 3, timeoutMs: 30_000, attempts: 5 },
  );
});

test('progress: text lines for the CLI, in place on a terminal', () => {
  const ref = 'localhost:5000/fn:1';
  const events: PullEvent[] = [
    {
      type: 'resolved',
      reference: ref,
      manifestDigest: `sha256:${'1'.repeat(64)}`,
      platform: 'linux/amd64',
      layers: [{ digest: `sha256:${'2'.repeat(64)}`, size: 3 << 20, cached: false }],
      bytesTotal: 3 << 20,
      bytesCached: 0,
    },
    {
      type: 'layer',
      reference: ref,
      index: 0,
      count: 1,
      digest: `sha256:${'2'.repeat(64)}`,
      status: 'downloading',
      bytesDone: 1 << 20,
      bytesTotal: 3 << 20,
      resumedFrom: 0,
      imageBytesDone: 1 << 20,
      imageBytesTotal: 3 << 20,
    },
    {
      type: 'layer',
      reference: ref,
      index: 0,
      count: 1,
      digest: `sha256:${'2'.repeat(64)}`,
      status: 'done',
      bytesDone: 3 << 20,
      bytesTotal: 3 << 20,
      resumedFrom: 1 << 20,
      imageBytesDone: 3 << 20,
      imageBytesTotal: 3 << 20,
    },
    {
      type: 'done',
      reference: ref,
      manifestDigest: `sha256:${'1'.repeat(64)}`,
      rootfsSha256: 'f'.repeat(64),
      bytesDownloaded: 2 << 20,
      ms: 1500,
    },
  ];
  assert.equal(describePullEvent(events[1]!), undefined);
  assert.equal(describePullEvent(events[2]!), 'layer 1/1 222222222222: downloaded 3.0 MiB (resumed at 1.0 MiB)');
  let plain = '';
  const sink = { write: (s: string) => ((plain += s), true), isTTY: false } as unknown as NodeJS.WritableStream;
  const show = pullProgressDisplay(sink);
  for (const e of events) show(e);
  assert.deepEqual(plain.trim().split('\n').length, 3);
  let tty = '';
  const term = { write: (s: string) => ((tty += s), true), isTTY: true } as unknown as NodeJS.WritableStream & {
    isTTY: boolean;
  };
  const live = pullProgressDisplay(term);
  for (const e of events) live(e);
  assert.match(tty, /1\.0 MiB\/3\.0 MiB {2}33%/);
  assert.match(tty, /\x1b\[1A/, 'redraws in place');
});

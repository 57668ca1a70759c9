import { test } from 'node:test';
import assert from 'node:assert/strict';
import { environment, s3Settings } from '../../src/config.js';
import { isEmbersError } from '../../src/errors.js';
import { repoPath } from '../helpers/repo.js';
import { runOverTree } from '../helpers/source-tree.js';

/**
 * `npm run lint` runs scripts/check-env-reads.mjs over src/: only src/config.ts may read the
 * environment. These tests run the same script over small trees, to prove it can fail.
 */
function check(files: Record<string, string>): Promise<{ status: number | null; output: string }> {
  return runOverTree('embers-env-reads-', files, process.execPath, [repoPath('scripts', 'check-env-reads.mjs'), 'src']);
}

const clean = {
  'src/config.ts': 'export const home = () => process.env.EMBERS_HOME;\n',
  'src/node/node.ts':
    "import { home } from '../config.js';\n// process.env is read by config.ts only\nexport const where = () => home() ?? 'process.env';\n",
};

test('env reads: a tree where only src/config.ts reads process.env passes', () => {
  return check(clean).then((r) => assert.equal(r.status, 0, r.output));
});

test('env reads: process.env outside the configuration module fails lint, naming the file and line', async () => {
  const r = await check({
    ...clean,
    'src/vmm/select.ts':
      "export const x = 1;\nexport const bin = () => process.env.EMBERS_FIRECRACKER_BIN ?? 'firecracker';\n",
  });
  assert.equal(r.status, 1, r.output);
  assert.match(r.output, /src\/vmm\/select\.ts:2: process\.env/);
});

test('env reads: the other ways to reach the environment fail too', async () => {
  const ways = {
    'src/a.ts': "export const a = process['env'].HOME;\n",
    'src/b.ts': 'export const b = globalThis.process.env.HOME;\n',
    'src/c.ts': 'const { env } = process;\nexport const c = env.HOME;\n',
    'src/d.ts': "import { env } from 'node:process';\nexport const d = env.HOME;\n",
    'src/e.ts': "import proc from 'process';\nexport const e = proc.env.HOME;\n",
  };
  const r = await check({ ...clean, ...ways });
  assert.equal(r.status, 1, r.output);
  for (const file of Object.keys(ways))
    assert.match(r.output, new RegExp(`${file.replace('.', '\\.')}:\\d+:`), `${file} is reported`);
});

test('config: every variable is read through environment(), with its default', () => {
  const none = environment({});
  assert.equal(none.runDir, '/run/embers');
  assert.equal(none.registry.insecure, undefined);
  assert.deepEqual(none.daemon.peers, []);
  assert.equal(none.firecracker.diffSnapshots, false);
  assert.equal(none.tscKhz, undefined);
  const set = environment({
    EMBERS_RUN_DIR: '/tmp/run',
    EMBERS_INSECURE_REGISTRIES: ' a:5000, ,b ',
    EMBERS_PEERS: 'http://p1:7070, http://p2:7070',
    EMBERS_TSC_KHZ: '2400000',
    EMBERS_REGISTRY_AUTH_FILE: '/etc/auth.json',
  });
  assert.equal(set.runDir, '/tmp/run');
  assert.deepEqual(set.registry.insecure, ['a:5000', 'b']);
  assert.deepEqual(set.daemon.peers, ['http://p1:7070', 'http://p2:7070']);
  assert.equal(set.tscKhz, 2_400_000);
  assert.equal(set.registry.authFile, '/etc/auth.json');
  assert.equal(environment({ EMBERS_TSC_KHZ: '2.5' }).tscKhz, undefined, 'not a positive integer: ignored');
  assert.deepEqual(
    environment({ EMBERS_INSECURE_REGISTRIES: '' }).registry.insecure,
    [],
    'set but empty: no insecure registry',
  );
});

test('config: one S3 parser for flags and EMBERS_S3_*: flags win, credentials only from the environment', () => {
  const env = environment({
    EMBERS_S3_BUCKET: 'from-env',
    EMBERS_S3_REGION: 'eu-west-1',
    EMBERS_S3_ACCESS_KEY_ID: 'k',
    EMBERS_S3_SECRET_ACCESS_KEY: 's',
  });
  assert.deepEqual(s3Settings({ bucket: 'from-flag', endpoint: 'http://127.0.0.1:9000' }, env), {
    endpoint: 'http://127.0.0.1:9000',
    region: 'eu-west-1',
    bucket: 'from-flag',
    prefix: undefined,
    credentials: { accessKeyId: 'k', secretAccessKey: 's' },
  });
  assert.equal(
    s3Settings({}, environment({ EMBERS_S3_PREFIX: '' })),
    undefined,
    'an empty prefix alone configures no store',
  );
  assert.equal(
    s3Settings({}, environment({ EMBERS_S3_BUCKET: 'b', EMBERS_S3_PREFIX: ' ' }))?.prefix,
    '',
    "'' is the bucket root",
  );
  assert.throws(
    () => s3Settings({ endpoint: 'http://x' }, environment({})),
    (e: unknown) => isEmbersError(e, 'EMB_USAGE') && /--s3-bucket/.test(e.message),
  );
});

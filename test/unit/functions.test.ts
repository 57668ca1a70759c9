import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import {
  FunctionStore,
  canonicalJson,
  revisionId,
  runtimeSpec,
  snapshotKey,
  validateFunctionConfig,
  validateFunctionName,
} from '../../src/node/functions.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const invalid = (field?: string) => (err: unknown) => {
  assert.ok(isEmbersError(err, 'EMB_FUNCTION_SPEC_INVALID'), String(err));
  if (field) assert.equal(err.details.field, field);
  return true;
};

test('function spec: defaults as documented, the node mode as the snapshot default', () => {
  const spec = validateFunctionConfig({ image: 'ghcr.io/acme/fn:1' }, 'local');
  assert.deepEqual(spec, {
    image: 'ghcr.io/acme/fn:1',
    vcpus: 1,
    memoryMiB: 256,
    port: 8080,
    env: [],
    minInstances: 0,
    maxInstances: 10,
    concurrency: 1,
    idleTimeoutSeconds: 60,
    snapshots: 'local',
    snapshotWhen: 'first-invocation',
    maxQueue: 100,
    requestTimeoutSeconds: 60,
  });
  assert.equal(validateFunctionConfig({ image: 'x' }, 'remote').snapshots, 'remote');
  assert.equal(validateFunctionConfig({ image: 'x', snapshots: 'disabled' }, 'remote').snapshots, 'disabled');
});

test('function spec: bad names, image references, types, ranges and unknown fields are refused naming the field', () => {
  for (const name of ['', 'A', '1abc', 'a_b', 'a'.repeat(41), 'a/b', '../x', 7])
    assert.throws(() => validateFunctionName(name), invalid());
  assert.equal(validateFunctionName('hello-1'), 'hello-1');
  assert.throws(() => validateFunctionConfig(null, 'local'), invalid());
  assert.throws(() => validateFunctionConfig([], 'local'), invalid());
  assert.throws(() => validateFunctionConfig({}, 'local'), invalid('image'));
  assert.throws(() => validateFunctionConfig({ image: 'a b' }, 'local'), invalid('image'));
  assert.throws(() => validateFunctionConfig({ image: 'x'.repeat(513) }, 'local'), invalid('image'));
  assert.throws(() => validateFunctionConfig({ image: 'x', memoryMiB: 32 }, 'local'), invalid('memoryMiB'));
  assert.throws(() => validateFunctionConfig({ image: 'x', memoryMiB: '256' }, 'local'), invalid('memoryMiB'));
  assert.throws(() => validateFunctionConfig({ image: 'x', vcpus: 1.5 }, 'local'), invalid('vcpus'));
  assert.throws(() => validateFunctionConfig({ image: 'x', port: 70000 }, 'local'), invalid('port'));
  assert.throws(() => validateFunctionConfig({ image: 'x', maxInstances: 0 }, 'local'), invalid('maxInstances'));
  assert.throws(
    () => validateFunctionConfig({ image: 'x', minInstances: 3, maxInstances: 2 }, 'local'),
    invalid('minInstances'),
  );
  assert.throws(
    () => validateFunctionConfig({ image: 'x', idleTimeoutSeconds: 0 }, 'local'),
    invalid('idleTimeoutSeconds'),
  );
  assert.throws(() => validateFunctionConfig({ image: 'x', env: ['NOEQUALS'] }, 'local'), invalid('env'));
  assert.throws(() => validateFunctionConfig({ image: 'x', env: 'A=1' }, 'local'), invalid('env'));
  assert.throws(() => validateFunctionConfig({ image: 'x', snapshots: 'sometimes' }, 'local'), invalid('snapshots'));
  assert.throws(() => validateFunctionConfig({ image: 'x', snapshots: 'remote' }, 'local'), invalid('snapshots'));
  assert.throws(() => validateFunctionConfig({ image: 'x', snapshots: 'local' }, 'disabled'), invalid('snapshots'));
  assert.throws(() => validateFunctionConfig({ image: 'x', snapshotWhen: 'never' }, 'local'), invalid('snapshotWhen'));
  assert.throws(() => validateFunctionConfig({ image: 'x', memory: 256 }, 'local'), invalid('memory'));
});

test('function spec: vcpus or memory beyond what the host has are refused at deploy', () => {
  const host = { cpus: 2, memoryMiB: 1024 };
  const spec = validateFunctionConfig({ image: 'x', vcpus: 2, memoryMiB: 1024 }, 'local', host);
  assert.deepEqual([spec.vcpus, spec.memoryMiB], [2, 1024]);
  assert.throws(
    () => validateFunctionConfig({ image: 'x', vcpus: 3 }, 'local', host),
    (e) => invalid('vcpus')(e) && /vcpus 3 is not possible here: this host has 2 CPU/.test((e as Error).message),
  );
  assert.throws(
    () => validateFunctionConfig({ image: 'x', memoryMiB: 1025 }, 'local', host),
    (e) =>
      invalid('memoryMiB')(e) &&
      /memoryMiB 1025 is not possible here: this host has 1024 MiB/.test((e as Error).message),
  );
});

test('revisions: a change of the image digest or of any spec field is a new revision; key order is not', () => {
  const spec = validateFunctionConfig({ image: 'x', env: ['A=1'] }, 'local');
  const rev = revisionId(DIGEST, spec);
  assert.match(rev, /^rev-[0-9a-f]{16}$/);
  assert.equal(revisionId(DIGEST, { ...spec }), rev);
  assert.equal(revisionId(DIGEST, Object.fromEntries(Object.entries(spec).reverse()) as typeof spec), rev);
  assert.notEqual(revisionId(`sha256:${'b'.repeat(64)}`, spec), rev);
  assert.notEqual(revisionId(DIGEST, { ...spec, memoryMiB: 512 }), rev);
  assert.notEqual(revisionId(DIGEST, { ...spec, maxInstances: 3 }), rev);
  assert.notEqual(revisionId(DIGEST, { ...spec, env: ['A=2'] }), rev);
  // a snapshot serves every revision that runs the same VM: scaling fields are not in its key
  const key = snapshotKey(DIGEST, runtimeSpec(spec));
  assert.equal(snapshotKey(DIGEST, runtimeSpec({ ...spec, maxInstances: 3, idleTimeoutSeconds: 5 })), key);
  assert.notEqual(snapshotKey(DIGEST, runtimeSpec({ ...spec, memoryMiB: 512 })), key);
  assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: undefined }] }), '{"a":[{"d":2}],"b":1}');
});

test('function store: put/get/list/remove persist atomically; same spec keeps the revision, a new one replaces it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-functions-'));
  try {
    const store = new FunctionStore(join(dir, 'functions'));
    assert.deepEqual(await store.list(), []);
    const spec = validateFunctionConfig({ image: 'x' }, 'local');
    const first = await store.put('hello', spec, DIGEST);
    assert.equal(first.changed, true);
    const again = await store.put('hello', { ...spec }, DIGEST);
    assert.equal(again.changed, false);
    assert.deepEqual(again.record, first.record);
    const updated = await store.put('hello', { ...spec, memoryMiB: 512 }, DIGEST);
    assert.equal(updated.changed, true);
    assert.notEqual(updated.record.revision.id, first.record.revision.id);
    assert.equal(updated.record.createdAt, first.record.createdAt);
    // a reopened store (a restarted daemon) sees the same; a temp file of an interrupted write is not a function
    await writeFile(join(dir, 'functions', '.hello.json.tmp-1-abc'), '{"half');
    const reopened = new FunctionStore(join(dir, 'functions'));
    assert.deepEqual(
      (await reopened.list()).map((r) => [r.name, r.revision.id]),
      [['hello', updated.record.revision.id]],
    );
    assert.equal(await reopened.remove('hello'), true);
    assert.equal(await reopened.remove('hello'), false);
    assert.equal(await reopened.get('hello'), undefined);
    assert.deepEqual(await readdir(join(dir, 'functions')), ['.hello.json.tmp-1-abc']);
    await assert.rejects(reopened.get('../etc/passwd'), invalid());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

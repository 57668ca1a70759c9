import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isEmbersError } from '../../src/errors.js';
import { parseConfig } from '../../src/image/manifest.js';
import { validateFunctionSpec, type FunctionSpec } from '../../src/node/function-spec.js';
import { runtimeSpec, snapshotKey, validateFunctionConfig } from '../../src/node/functions.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const host = { cpus: 2, memoryMiB: 4096 };
const fn = (over: Partial<FunctionSpec>): FunctionSpec => ({
  image: 'x',
  vcpus: 1,
  memoryMiB: 128,
  port: 8080,
  env: [],
  ...over,
});

test('restore hook: an image declares it with labels; a bad label is refused with the image error', () => {
  const labelled = parseConfig(
    {
      config: {
        Labels: { 'org.embers.restore-hook': '/hook', 'org.embers.restore-hook-timeout-ms': '2500', other: 'x' },
      },
    },
    DIGEST,
  );
  assert.deepEqual(labelled.config.restoreHook, { path: '/hook', timeoutMs: 2500 });
  assert.deepEqual(
    parseConfig({ config: { Labels: { 'org.embers.restore-hook': '/bin/reseed' } } }, DIGEST).config.restoreHook,
    { path: '/bin/reseed' },
  );
  assert.equal(parseConfig({ config: {} }, DIGEST).config.restoreHook, undefined);
  for (const Labels of [
    { 'org.embers.restore-hook': 'relative/hook' },
    { 'org.embers.restore-hook': '/hook', 'org.embers.restore-hook-timeout-ms': 'soon' },
    { 'org.embers.restore-hook': '/hook', 'org.embers.restore-hook-timeout-ms': '0' },
  ]) {
    assert.throws(
      () => parseConfig({ config: { Labels } }, DIGEST),
      (e: unknown) => isEmbersError(e, 'EMB_IMAGE_MANIFEST_INVALID') && /restore-hook/.test(e.message),
    );
  }
  assert.throws(
    () => parseConfig({ config: { Labels: 'no' } }, DIGEST),
    (e: unknown) => isEmbersError(e, 'EMB_IMAGE_MANIFEST_INVALID'),
  );
});

test('restore hook: a function spec may declare one; a relative path or a bad timeout is refused before anything starts', () => {
  validateFunctionSpec(fn({ restoreHook: { path: '/hook' } }), host);
  validateFunctionSpec(fn({ restoreHook: { path: '/hook', timeoutMs: 1000 } }), host);
  for (const restoreHook of [
    { path: 'hook' },
    { path: '/hook', timeoutMs: 0 },
    { path: '/hook', timeoutMs: 1.5 },
    { path: '' },
  ]) {
    assert.throws(
      () => validateFunctionSpec(fn({ restoreHook }), host),
      (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID') && e.details.field === 'restoreHook',
    );
  }
});

test('restore hook in the daemon: a function spec field, in the runtime spec and the snapshot key only when set', () => {
  const plain = validateFunctionConfig({ image: 'img' }, 'local');
  const hooked = validateFunctionConfig({ image: 'img', restoreHook: { path: '/hook', timeoutMs: 5000 } }, 'local');
  assert.deepEqual(runtimeSpec(hooked).restoreHook, { path: '/hook', timeoutMs: 5000 });
  assert.equal('restoreHook' in runtimeSpec(plain), false);
  const digest = `sha256:${'b'.repeat(64)}`;
  assert.notEqual(
    snapshotKey(digest, runtimeSpec(plain)),
    snapshotKey(digest, runtimeSpec(hooked)),
    'another hook: another snapshot',
  );
  assert.equal(
    snapshotKey(digest, runtimeSpec(plain)),
    snapshotKey(digest, { image: 'img', vcpus: 1, memoryMiB: 256, port: 8080, env: [] }),
    'specs without a hook keep their keys',
  );
  for (const restoreHook of [{ path: 'rel' }, { path: '/h', timeoutMs: 0 }, { path: '/h', other: 1 }, '/h']) {
    assert.throws(
      () => validateFunctionConfig({ image: 'img', restoreHook }, 'local'),
      (e: unknown) => isEmbersError(e, 'EMB_FUNCTION_SPEC_INVALID') && e.details.field === 'restoreHook',
    );
  }
});

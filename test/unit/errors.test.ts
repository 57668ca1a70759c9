import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERRORS, EmbersError, asEmbersError, isEmbersError } from '../../src/errors.js';

test('error catalogue: stable EMB_ codes, each with a summary, a hint and an exit code', () => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    assert.match(code, /^EMB_[A-Z0-9]+(_[A-Z0-9]+)*$/);
    assert.ok(spec.summary.length > 5, code);
    assert.ok(spec.hint.length > 5, code);
    assert.ok(Number.isInteger(spec.exit) && spec.exit > 0 && spec.exit < 126, code);
  }
});

test('EmbersError carries code, hint, details and serialises to JSON', () => {
  const e = new EmbersError('EMB_IMAGE_NOT_FOUND', 'no image at /x', { ref: '/x' });
  assert.equal(e.code, 'EMB_IMAGE_NOT_FOUND');
  assert.equal(e.hint, ERRORS.EMB_IMAGE_NOT_FOUND.hint);
  assert.equal(e.exitCode, 66);
  assert.deepEqual(JSON.parse(JSON.stringify(e)), { code: 'EMB_IMAGE_NOT_FOUND', message: 'no image at /x', hint: e.hint, details: { ref: '/x' } });
  assert.ok(isEmbersError(e, 'EMB_IMAGE_NOT_FOUND'));
  assert.ok(!isEmbersError(e, 'EMB_INTERNAL'));
  assert.equal(asEmbersError(new Error('boom')).code, 'EMB_INTERNAL');
  assert.equal(asEmbersError(e), e);
});

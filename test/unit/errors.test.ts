import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { ERRORS, EmbersError, asEmbersError, isEmbersError } from '../../src/errors.js';
import { asNoSpaceError, isNoSpace, requireFreeSpace } from '../../src/util/fs.js';

test('error catalogue: stable EMB_ codes, each with a summary, a hint and an exit code', () => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    assert.match(code, /^EMB_[A-Z0-9]+(_[A-Z0-9]+)*$/);
    assert.ok(spec.summary.length > 5, code);
    assert.ok(spec.hint.length > 5, code);
    assert.ok(Number.isInteger(spec.exit) && spec.exit > 0 && spec.exit < 126, code);
  }
});

test('EmbersError carries code, hint, details and serialises to JSON', () => {
  const e = EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'no-image', ref: '/x' });
  assert.equal(e.code, 'EMB_IMAGE_NOT_FOUND');
  assert.equal(e.hint, ERRORS.EMB_IMAGE_NOT_FOUND.hint);
  assert.equal(e.exitCode, 66);
  assert.deepEqual(JSON.parse(JSON.stringify(e)), {
    code: 'EMB_IMAGE_NOT_FOUND',
    message: 'no image at "/x": not an OCI layout directory or docker save archive',
    hint: e.hint,
    details: { problem: 'no-image', ref: '/x' },
  });
  assert.ok(isEmbersError(e, 'EMB_IMAGE_NOT_FOUND'));
  assert.ok(!isEmbersError(e, 'EMB_INTERNAL'));
  assert.equal(asEmbersError(new Error('boom')).code, 'EMB_INTERNAL');
  assert.equal(asEmbersError(e), e);
});

test('a full filesystem is recognised however it surfaces, and reported as EMB_NO_SPACE with the space left', async () => {
  const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), {
    code: 'ENOSPC',
    syscall: 'write',
  });
  const cp = new EmbersError('EMB_HOST_COMMAND_FAILED', 'cp a b failed (exit code 1)', {
    stderr: "cp: error writing 'b': No space left on device",
  });
  const qemu = new EmbersError(
    'EMB_VMM_COMMAND_FAILED',
    'migration failed: Unable to write to file: No space left on device',
  );
  const wrapped = new EmbersError(
    'EMB_REMOTE_REQUEST_FAILED',
    'reading a range failed',
    { problem: 'refused' },
    { cause: enospc },
  );
  for (const err of [enospc, cp, qemu, wrapped]) assert.equal(isNoSpace(err), true, String(err));
  for (const err of [
    new Error('ECONNRESET'),
    new EmbersError('EMB_SNAPSHOT_CORRUPT', 'sha256 differs'),
    undefined,
    'text',
  ]) {
    assert.equal(isNoSpace(err), false, String(err));
  }

  const converted = await asNoSpaceError(wrapped, 'pulling snapshot snap-1', tmpdir());
  assert.ok(isEmbersError(converted, 'EMB_NO_SPACE'));
  assert.match(
    converted.message,
    /^pulling snapshot snap-1 failed: no space left on the filesystem of .* \(\d+\.\d MiB free of \d+\.\d MiB after cleaning up\)/,
  );
  assert.ok(typeof converted.details.freeBytes === 'number' && typeof converted.details.totalBytes === 'number');
  assert.match(converted.hint, /`embers snapshot rm ID`/);
  assert.match(converted.hint, /`embers image gc`/);
  assert.equal(converted.exitCode, 74);
  assert.equal(converted.cause, wrapped);
  assert.equal(await asNoSpaceError(converted, 'again', tmpdir()), converted, 'converted once');
  const other = new Error('EACCES');
  assert.equal(await asNoSpaceError(other, 'x', tmpdir()), other, 'other errors pass unchanged');
});

test('a step that needs more space than is free is refused up front with EMB_NO_SPACE', async () => {
  await requireFreeSpace(tmpdir(), 1, 'a tiny step');
  await assert.rejects(requireFreeSpace(tmpdir(), Number.MAX_SAFE_INTEGER, 'snapshot create of x'), (err: unknown) => {
    assert.ok(isEmbersError(err, 'EMB_NO_SPACE'));
    assert.match(
      err.message,
      /^snapshot create of x needs about \d+\.\d MiB on the filesystem of .*, and \d+\.\d MiB are free; nothing was started$/,
    );
    return true;
  });
});

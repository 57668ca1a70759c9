import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, open, readFile, truncate, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { applyDelta, diffByComparison, writeDelta } from '../../src/disk/delta.js';
import { isEmbersError } from '../../src/errors.js';
import { sha256File } from '../../src/util/fs.js';
import { withTempDir } from '../helpers/temp-dir.js';

async function patch(path: string, offset: number, data: Buffer) {
  const fh = await open(path, 'r+');
  await fh.write(data, 0, data.length, offset);
  await fh.close();
}

/** In `dir`: base.img of `size` random bytes, and disk.img, its copy. */
async function baseAndCopy(dir: string, size: number): Promise<{ base: string; disk: string }> {
  const base = join(dir, 'base.img');
  const disk = join(dir, 'disk.img');
  await writeFile(base, randomBytes(size));
  await copyFile(base, disk);
  return { base, disk };
}

/** Asserts that `delta` applied to a copy of `base` (restored.img beside it) gives `disk`, byte for byte. */
async function assertRestores(base: string, delta: string, disk: string): Promise<void> {
  const restored = join(dirname(base), 'restored.img');
  await copyFile(base, restored);
  await applyDelta(delta, restored);
  assert.equal(await sha256File(restored), await sha256File(disk));
}

test('block delta: base + delta is bit-identical to the changed disk, and holds only the changed runs', async () => {
  await withTempDir('delta', async (dir) => {
    const { base, disk } = await baseAndCopy(dir, 3 * 1024 * 1024 + 1000); // not block-aligned
    await patch(disk, 10, Buffer.from('hello')); // inside block 0
    await patch(disk, 4096 * 5, randomBytes(4096 * 3)); // blocks 5..7: one run
    await patch(disk, 1024 * 1024 - 2, randomBytes(4)); // straddles a chunk boundary
    await patch(disk, 3 * 1024 * 1024 + 500, randomBytes(2000)); // past the base's last full block, grows the file
    const runs = await diffByComparison(base, disk);
    assert.deepEqual(runs[0], { offset: 0, length: 4096 });
    assert.deepEqual(runs[1], { offset: 4096 * 5, length: 4096 * 3 });
    const delta = join(dir, 'disk.delta');
    const stats = await writeDelta(disk, runs, delta);
    assert.ok(stats.changedBytes < 40 * 1024, `only changed blocks are stored (${stats.changedBytes})`);
    await assertRestores(base, delta, disk);
  });
});

test('block delta: a disk that shrank or is unchanged', async () => {
  await withTempDir('delta', async (dir) => {
    const { base, disk } = await baseAndCopy(dir, 64 * 1024);
    assert.deepEqual(await diffByComparison(base, disk), []);
    await truncate(disk, 32 * 1024);
    const delta = join(dir, 'd');
    await writeDelta(disk, await diffByComparison(base, disk), delta);
    await assertRestores(base, delta, disk);
  });
});

test('block delta: a truncated or modified delta is refused before the target changes', async () => {
  await withTempDir('delta', async (dir) => {
    const { base, disk } = await baseAndCopy(dir, 256 * 1024);
    await patch(disk, 8192, randomBytes(10000));
    const delta = join(dir, 'disk.delta');
    await writeDelta(disk, await diffByComparison(base, disk), delta);
    const target = join(dir, 't.img');
    const full = await readFile(delta);
    for (const bad of [
      full.subarray(0, full.length - 100),
      Buffer.concat([full.subarray(0, 200), Buffer.from([full[200] ^ 1]), full.subarray(201)]),
    ]) {
      await writeFile(delta, bad);
      await copyFile(base, target);
      const before = await sha256File(target);
      await assert.rejects(applyDelta(delta, target), (err) => isEmbersError(err, 'EMB_SNAPSHOT_CORRUPT'));
      assert.equal(await sha256File(target), before);
    }
  });
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { cloneDisk } from '../../src/disk/clone.js';
import { applyDelta, diffByComparison, writeDelta } from '../../src/disk/delta.js';
import { diffByExtents } from '../../src/disk/extents.js';
import { run } from '../../src/util/exec.js';
import { withXfsMount } from '../helpers/xfs.js';
import { sha256File } from '../../src/util/fs.js';

async function patch(path: string, offset: number, data: Buffer) {
  const fh = await open(path, 'r+');
  await fh.write(data, 0, data.length, offset);
  await fh.sync();
  await fh.close();
}

test('FIEMAP delta on a reflink filesystem (XFS): finds exactly the changed blocks, and base + delta = clone', async () => {
  await withXfsMount('512M', async (mnt, dir) => {
    const base = join(mnt, 'base.img');
    await writeFile(base, Buffer.concat([randomBytes(8 << 20), Buffer.alloc(4 << 20), randomBytes(4 << 20)]));
    await run('truncate', ['-s', '32M', base]); // a sparse tail
    const clone = join(mnt, 'clone.img');
    assert.equal(await cloneDisk(base, clone), 'reflink');
    assert.deepEqual(await diffByExtents(base, clone), [], 'a fresh clone shares every block');

    await patch(clone, 4096 * 10, randomBytes(4096 * 3)); // rewritten blocks
    await patch(clone, (8 << 20) + 4096, randomBytes(100)); // inside the base's zero region (a hole or zeros)
    await patch(clone, 20 << 20, randomBytes(8192)); // in the sparse tail
    await run('fallocate', ['-p', '-o', String(1 << 20), '-l', '65536', clone]); // a punched hole over base data
    await patch(clone, (32 << 20) + 10, Buffer.from('grown')); // growth past the end

    const byExtents = await diffByExtents(base, clone);
    assert.ok(byExtents.length >= 4);
    const changed = byExtents.reduce((n, r) => n + r.length, 0);
    assert.ok(changed < 512 * 1024, `only changed extents are listed (${changed} bytes)`);
    // every block that really differs is inside a listed run
    for (const r of await diffByComparison(base, clone)) {
      assert.ok(
        byExtents.some((e) => e.offset <= r.offset && r.offset + r.length <= e.offset + e.length),
        `run at ${r.offset} missing`,
      );
    }
    // and applying the delta gives the clone's bytes
    const delta = join(dir, 'd.delta');
    await writeDelta(clone, byExtents, delta);
    const restored = join(dir, 'restored.img');
    await run('cp', ['--sparse=always', base, restored]);
    await applyDelta(delta, restored);
    assert.equal(await sha256File(restored), await sha256File(clone));

    // a second-generation clone (as the snapshot's frozen copy is) still diffs against the base exactly
    const copy = join(mnt, 'copy.img');
    await cloneDisk(clone, copy);
    assert.deepEqual(await diffByExtents(base, copy), byExtents);
  });
});

import { mkdtemp, rm, writeFile, stat } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyDelta, diffByComparison, writeDelta } from '../src/disk/delta.js';
import { diffByExtents } from '../src/disk/extents.js';
import { cloneDisk } from '../src/disk/clone.js';
import { withLoopMount } from '../src/disk/mount.js';
import { applyRsyncBatch, writeRsyncBatch } from '../src/disk/rsync-diff.js';
import { run } from '../src/util/exec.js';
import { sha256File } from '../src/util/fs.js';
import { median, optionValue, printTable } from './table.js';

/**
 * Block delta vs the seed's rsync batch, on a real ext4 disk: a base image (256 MiB, with a
 * populated tree), and for each change size a copy of it modified through a loop mount (new
 * files plus rewrites of existing ones). Measures capture and apply time and patch size, and
 * whether the patched disk is bit-identical. The block delta is captured two ways: by block
 * comparison (any filesystem) and from extent maps (FIEMAP) of a reflink clone on XFS.
 */
export async function benchDiskDiff(args: string[]): Promise<Record<string, unknown>> {
  const repeats = optionValue(args, 'repeats', 3);
  const sizesMiB = [1, 8, 32, 96];
  const dir = await mkdtemp(join(tmpdir(), 'embers-bench-diff-'));
  const results: Record<string, unknown>[] = [];
  let mounted: string | undefined;
  try {
    const base = join(dir, 'base.ext4');
    const seedTree = join(dir, 'tree');
    await run('mkdir', ['-p', `${seedTree}/usr/lib`, `${seedTree}/data`]);
    for (let i = 0; i < 200; i++) await writeFile(join(seedTree, 'usr/lib', `f${i}`), randomBytes(64 * 1024));
    await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', seedTree, base, '256M']);
    const xfsImg = join(dir, 'xfs.img');
    const xfs = join(dir, 'xfs');
    await run('mkdir', ['-p', xfs]);
    await run('truncate', ['-s', '2G', xfsImg]);
    await run('mkfs.xfs', ['-q', '-m', 'reflink=1', xfsImg]);
    await run('mount', ['-o', 'loop', xfsImg, xfs]);
    mounted = xfs;
    const xfsBase = join(xfs, 'base.ext4');
    await run('cp', ['--sparse=always', base, xfsBase]);
    process.stdout.write(`disk-diff: base ext4 256 MiB with 12.5 MiB of files; ${repeats} repeats per size (median)\n`);
    const rows: (string | number)[][] = [];
    for (const mib of sizesMiB) {
      // the changed disk: a reflink clone of the base on XFS, modified through a loop mount
      const disk = join(xfs, 'disk.ext4');
      await cloneDisk(xfsBase, disk);
      await withLoopMount(disk, join(dir, 'mnt'), 'rw', async (m) => {
        await writeFile(join(m, 'data', 'new.bin'), randomBytes(mib * 1024 * 1024));
        for (let i = 0; i < 10; i++) await writeFile(join(m, 'usr/lib', `f${i}`), randomBytes(64 * 1024)); // same size, rewritten
        await run('sync', []);
      });
      const diskSha = await sha256File(disk);
      const extentCapture: number[] = [];
      let extentIdentical = false;
      const blockCapture: number[] = [];
      const blockApply: number[] = [];
      const rsyncCapture: number[] = [];
      const rsyncApply: number[] = [];
      let blockBytes = 0;
      let rsyncBytes = 0;
      let blockIdentical = false;
      let rsyncIdentical = false;
      for (let r = 0; r < repeats; r++) {
        const delta = join(dir, 'disk.delta');
        let t = performance.now();
        await writeDelta(disk, await diffByExtents(xfsBase, disk), delta);
        extentCapture.push(performance.now() - t);
        const viaExtents = join(dir, 'via-extents.ext4');
        await run('cp', ['--sparse=always', base, viaExtents]);
        await applyDelta(delta, viaExtents);
        extentIdentical = (await sha256File(viaExtents)) === diskSha;
        await rm(viaExtents, { force: true });
        t = performance.now();
        await writeDelta(disk, await diffByComparison(base, disk), delta);
        blockCapture.push(performance.now() - t);
        blockBytes = (await stat(delta)).size;
        const target = join(dir, 'restored.ext4');
        await run('cp', ['--sparse=always', base, target]);
        t = performance.now();
        await applyDelta(delta, target);
        blockApply.push(performance.now() - t);
        blockIdentical = (await sha256File(target)) === diskSha;

        const batch = join(dir, 'disk.batch');
        t = performance.now();
        await writeRsyncBatch(base, disk, batch, join(dir, 'work'));
        rsyncCapture.push(performance.now() - t);
        rsyncBytes = (await stat(batch)).size;
        await run('cp', ['--sparse=always', base, target]);
        t = performance.now();
        await applyRsyncBatch(target, batch, join(dir, 'work'));
        rsyncApply.push(performance.now() - t);
        rsyncIdentical = (await sha256File(target)) === diskSha;
        await rm(batch, { force: true });
        await rm(delta, { force: true });
        await rm(target, { force: true });
      }
      const row = {
        changeMiB: mib,
        extents: { captureMs: median(extentCapture), bitIdentical: extentIdentical },
        block: {
          captureMs: median(blockCapture),
          applyMs: median(blockApply),
          patchBytes: blockBytes,
          bitIdentical: blockIdentical,
        },
        rsync: {
          captureMs: median(rsyncCapture),
          applyMs: median(rsyncApply),
          patchBytes: rsyncBytes,
          bitIdentical: rsyncIdentical,
        },
      };
      results.push(row);
      rows.push([
        mib,
        row.extents.captureMs,
        row.block.captureMs,
        row.rsync.captureMs,
        row.rsync.captureMs / row.extents.captureMs,
        row.rsync.captureMs / row.block.captureMs,
        row.block.applyMs,
        row.rsync.applyMs,
        row.rsync.applyMs / row.block.applyMs,
        (blockBytes / 1048576).toFixed(1),
        (rsyncBytes / 1048576).toFixed(1),
        `${extentIdentical && blockIdentical ? 'yes' : 'NO'}/${rsyncIdentical ? 'yes' : 'NO'}`,
      ]);
      await rm(disk, { force: true });
    }
    printTable(
      [
        'changeMiB',
        'fiemapCapMs',
        'cmpCapMs',
        'rsyncCapMs',
        'rsync/fiemap',
        'rsync/cmp',
        'deltaApplyMs',
        'rsyncApplyMs',
        'rsync/delta',
        'deltaMiB',
        'rsyncMiB',
        'identical delta/rsync',
      ],
      rows,
    );
    return { bench: 'disk-diff', repeats, results };
  } finally {
    if (mounted) await run('umount', [mounted]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

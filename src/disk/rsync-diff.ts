import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { run } from '../util/exec.js';
import { withLoopMount } from './mount.js';

/**
 * The seed's method, kept for comparison: an rsync batch that turns the rootfs's file tree
 * into the instance disk's. File-level, so the patched disk has the same files but not the
 * same bytes (new inodes, new block allocation) — which is why embers does not restore
 * from it without saying so. Direction matters: the batch is written with the instance disk
 * as the source and the rootfs as the destination (vHive had them the other way round).
 */
const RSYNC_OPTS = ['-aHAX', '--numeric-ids', '--delete', '--checksum'];

export async function writeRsyncBatch(
  rootfs: string,
  disk: string,
  batchPath: string,
  workDir: string,
): Promise<{ batchBytes: number }> {
  await withLoopMount(rootfs, join(workDir, 'mnt-rootfs'), 'ro', (base) =>
    withLoopMount(disk, join(workDir, 'mnt-disk'), 'ro', async (changed) => {
      await run('rsync', [...RSYNC_OPTS, `--only-write-batch=${batchPath}`, `${changed}/`, `${base}/`]);
    }),
  );
  // rsync also writes a helper script beside the batch; it is not part of the snapshot
  await run('rm', ['-f', `${batchPath}.sh`]);
  return { batchBytes: (await stat(batchPath)).size };
}

/** Applies a batch to `target`, an ext4 image that starts as a copy of the rootfs. */
export async function applyRsyncBatch(target: string, batchPath: string, workDir: string): Promise<void> {
  await withLoopMount(target, join(workDir, 'mnt-restore'), 'rw', async (dir) => {
    await run('rsync', [...RSYNC_OPTS, `--read-batch=${batchPath}`, `${dir}/`]);
  });
}

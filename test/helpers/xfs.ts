import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';

/**
 * Runs `body` with a fresh reflink-capable filesystem (XFS in a sparse image, loop-mounted at
 * `<dir>/mnt`); unmounts it and removes everything afterwards, whatever happens. `dir` is a
 * scratch dir beside the mount for the test's own files.
 */
export async function withXfsMount<T>(size: string, body: (mnt: string, dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'embers-xfs-'));
  const img = join(dir, 'xfs.img');
  const mnt = join(dir, 'mnt');
  try {
    await mkdir(mnt);
    await run('truncate', ['-s', size, img]);
    await run('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
    await run('mount', ['-o', 'loop', img, mnt]);
    try {
      return await body(mnt, dir);
    } finally {
      await run('umount', [mnt]);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

import { mkdir, rmdir } from 'node:fs/promises';
import { run } from '../util/exec.js';

/**
 * Loop-mounts an ext4 image at a fresh mount point for the duration of `body`, then unmounts
 * it (the loop device is released by autoclear) and removes the mount point, whatever happens.
 * Read-only mounts use `noload`, so a disk whose journal is not clean is never replayed (and
 * so never written).
 */
export async function withLoopMount<T>(
  image: string,
  mountPoint: string,
  mode: 'ro' | 'rw',
  body: (dir: string) => Promise<T>,
): Promise<T> {
  await mkdir(mountPoint, { recursive: true });
  try {
    await run('mount', ['-t', 'ext4', '-o', mode === 'ro' ? 'ro,loop,noload' : 'rw,loop', image, mountPoint]);
    try {
      return await body(mountPoint);
    } finally {
      await run('umount', [mountPoint]);
    }
  } finally {
    await rmdir(mountPoint).catch(() => undefined);
  }
}

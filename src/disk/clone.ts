import { EmbersError } from '../errors.js';
import { run } from '../util/exec.js';

export type CloneMethod = 'reflink' | 'sparse-copy';

/**
 * Gives an instance its own writable disk: a copy-on-write (reflink) clone of `source` where
 * the filesystem supports it (XFS, btrfs), else a sparse copy. The source is never written.
 */
export async function cloneDisk(source: string, target: string): Promise<CloneMethod> {
  try {
    await run('cp', ['--reflink=always', source, target]);
    return 'reflink';
  } catch {
    /* no reflinks here: fall back to a sparse copy */
  }
  try {
    await run('cp', ['--sparse=always', source, target]);
    return 'sparse-copy';
  } catch (err) {
    throw EmbersError.of('EMB_DISK_CLONE_FAILED', { source, target, reason: (err as Error).message }, { cause: err });
  }
}

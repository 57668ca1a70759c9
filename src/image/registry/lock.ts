/**
 * Pid lock files for the image cache, shared by the processes of one node (the daemon and
 * `embers image …` commands): a file created with O_EXCL holding the owner's pid. A lock whose
 * process is gone is taken over; a live one is waited for.
 */
import { EmbersError } from '../../errors.js';
import { acquireLock as acquirePidLock } from '../../util/lock.js';

export { heldHere, lockHeld, lockOwner, pidHolds } from '../../util/lock.js';

export interface LockOptions {
  /** Give up (EMB_IMAGE_CACHE_BUSY) after waiting this long for a live owner, in ms.
   * @default 600000 (10 min: a layer download may take that long) */
  waitMs?: number;
  /** Poll interval while waiting, in ms.
   * @default 100 */
  pollMs?: number;
  signal?: AbortSignal;
}

/**
 * Takes the lock at `path`, waiting while a live process (this one included) holds it, and
 * taking it over from a dead one. Returns the release function.
 */
export async function acquireLock(path: string, what: string, opts: LockOptions = {}): Promise<() => Promise<void>> {
  return acquirePidLock(path, {
    waitMs: opts.waitMs ?? 600_000,
    pollMs: opts.pollMs ?? 100,
    signal: opts.signal,
    busy: (pid, waitedMs) =>
      EmbersError.of('EMB_IMAGE_CACHE_BUSY', { problem: 'locked', resource: what, lock: path, pid, waitedMs }),
  });
}

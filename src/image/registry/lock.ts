/**
 * Pid lock files for the image cache, shared by the processes of one node (the daemon and
 * `embers image …` commands): a file created with O_EXCL holding the owner's pid. A lock whose
 * process is gone is taken over; a live one is waited for.
 */
import { readFile, rm } from 'node:fs/promises';
import { EmbersError } from '../../errors.js';
import { heldHere, lockOwner, pidHolds, tryCreateLock } from '../../util/lock.js';
import { delay } from '../../util/retry.js';

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
  const waitMs = opts.waitMs ?? 600_000;
  const pollMs = opts.pollMs ?? 100;
  const started = Date.now();
  for (;;) {
    opts.signal?.throwIfAborted();
    if (await tryCreateLock(path)) {
      heldHere.add(path);
      return async () => {
        heldHere.delete(path);
        await rm(path, { force: true });
      };
    }
    const owner = await lockOwner(path);
    if (owner === undefined) {
      // Just created and not yet written, or left empty by a crash: give a writer a moment.
      const st = await readFile(path).catch(() => undefined);
      if (st === undefined) continue;
      await delay(pollMs, opts.signal);
      if ((await lockOwner(path)) === undefined) await rm(path, { force: true });
      continue;
    }
    if (!(await pidHolds(path, owner))) {
      await rm(path, { force: true });
      continue;
    }
    if (Date.now() - started > waitMs) {
      throw new EmbersError('EMB_IMAGE_CACHE_BUSY', `${what} is locked by process ${owner} (waited ${Math.round((Date.now() - started) / 1000)} s)`, {
        lock: path,
        pid: owner,
      });
    }
    await delay(pollMs, opts.signal);
  }
}

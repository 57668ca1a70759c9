/**
 * Pid lock files: a file created with O_EXCL holding its owner's pid. A lock whose process is
 * gone is stale and may be taken over; callers decide whether to wait for a live one or give up.
 * `acquireLock` is the one acquirer; the image cache's locks and the snapshot transfer locks
 * are taken through it.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { pidAlive } from './pid.js';
import { sleep } from './sleep.js';

/**
 * Lock and pin files this process holds. A file naming our pid but not in this set was left
 * by an earlier process that had the same pid (pids are reused, in containers especially): stale.
 */
export const heldHere = new Set<string>();

/** The pid in a lock (or pin) file, or undefined when the file is gone or unreadable. */
export async function lockOwner(path: string): Promise<number | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  const pid = Number(text?.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** True when the lock file exists and its process is alive. */
export async function lockHeld(path: string): Promise<boolean> {
  const pid = await lockOwner(path);
  return pid !== undefined && (await pidHolds(path, pid));
}

/** True when process `pid` still holds the lock or pin file `path`; for our own pid, only if this process took it (see heldHere). */
export async function pidHolds(path: string, pid: number): Promise<boolean> {
  return pid === process.pid ? heldHere.has(path) : pidAlive(pid);
}

/** Creates `path` holding our pid; false when it exists. Only acquireLock takes locks. */
async function tryCreateLock(path: string): Promise<boolean> {
  try {
    const fh = await open(path, 'wx', 0o644);
    try {
      await fh.writeFile(`${process.pid}\n`);
    } finally {
      await fh.close();
    }
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

export interface AcquireLockOptions {
  /** The error thrown when a live process (this one included) still holds the lock once
   * `waitMs` have passed; `waitedMs` is how long this call waited. */
  busy(pid: number, waitedMs: number): Error;
  /** How long to wait for a live owner to release the lock, in ms; 0 gives up at once.
   * @default 0 */
  waitMs?: number;
  /** Poll interval while waiting, and the grace given to an owner that created the file but
   * has not written its pid yet, in ms.
   * @default 100 */
  pollMs?: number;
  signal?: AbortSignal;
}

/**
 * Takes the lock file `path` (its directory must exist): creates it holding our pid, takes it
 * over from a process that is gone, and waits while a live process holds it (up to `waitMs`,
 * then throws `busy`). Within this process, the path is reserved in `heldHere` before the file
 * is created, so two callers here never both take it. Returns the release function.
 */
export async function acquireLock(path: string, opts: AcquireLockOptions): Promise<() => Promise<void>> {
  const waitMs = opts.waitMs ?? 0;
  const pollMs = opts.pollMs ?? 100;
  const started = Date.now();
  for (;;) {
    opts.signal?.throwIfAborted();
    let owner: number | undefined = process.pid;
    if (!heldHere.has(path)) {
      heldHere.add(path);
      let created = false;
      try {
        created = await tryCreateLock(path);
      } finally {
        if (!created) heldHere.delete(path);
      }
      if (created) {
        return async () => {
          await rm(path, { force: true });
          heldHere.delete(path);
        };
      }
      owner = await lockOwner(path);
      if (owner === undefined) {
        // Just created and not yet written, or left empty by a crash: give a writer a moment.
        if ((await readFile(path).catch(() => undefined)) === undefined) continue;
        await sleep(pollMs, opts.signal);
        if ((await lockOwner(path)) === undefined) await rm(path, { force: true });
        continue;
      }
      if (!(await pidHolds(path, owner))) {
        await rm(path, { force: true }); // its owner is gone
        continue;
      }
    }
    const waited = Date.now() - started;
    if (waited >= waitMs) throw opts.busy(owner, waited);
    await sleep(pollMs, opts.signal);
  }
}

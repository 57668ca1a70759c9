/**
 * Pid lock files: a file created with O_EXCL holding its owner's pid. A lock whose process is
 * gone is stale and may be taken over; callers decide whether to wait for a live one or give up.
 */
import { open, readFile } from 'node:fs/promises';
import { pidAlive } from './pid.js';

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

/** Creates `path` holding our pid; false when it exists. */
export async function tryCreateLock(path: string): Promise<boolean> {
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

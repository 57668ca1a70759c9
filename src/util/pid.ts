import { readFile } from 'node:fs/promises';

/** True while a process with this pid exists (and is not a zombie). */
export async function pidAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const state = /\)\s+(\S)/.exec(stat)?.[1];
  return state !== 'Z' && state !== undefined;
}

/** The command line of a live process, or undefined. */
export async function pidCmdline(pid: number): Promise<string[] | undefined> {
  const raw = await readFile(`/proc/${pid}/cmdline`).catch(() => undefined);
  if (!raw || raw.length === 0) return undefined;
  return raw.toString('utf8').replace(/\0$/, '').split('\0');
}

/**
 * True if the process is alive and one argument of its command line contains `token` (a
 * path or id only our process has): pids are reused, so a live pid alone proves nothing.
 */
export async function pidCommandMentions(pid: number, token: string): Promise<boolean> {
  if (pid <= 0 || !(await pidAlive(pid))) return false;
  return (await pidCmdline(pid))?.some((a) => a.includes(token)) ?? false;
}

import { spawn } from 'node:child_process';
import { open, readFile } from 'node:fs/promises';
import { pidAlive } from '../util/pid.js';
import { exists } from '../util/fs.js';
import { EmbersError } from '../errors.js';
import { tail } from '../util/exec.js';
import { sleep } from '../util/sleep.js';

export { pidAlive, pidCmdline, pidCommandMentions } from '../util/pid.js';

/**
 * Starts a long-lived process, detached from ours, with stdout/stderr appended to `logPath`
 * (stdout to `opts.stdoutPath` instead, when given). Returns its pid and a promise that
 * settles when it exits (while we are its parent).
 */
export async function spawnDetached(
  cmd: string,
  args: string[],
  logPath: string,
  opts: { stdoutPath?: string } = {},
): Promise<{ pid: number; exited: Promise<number | null> }> {
  const log = await open(logPath, 'a');
  const out =
    opts.stdoutPath === undefined
      ? undefined
      : await open(opts.stdoutPath, 'a').catch(async (err: unknown) => {
          await log.close();
          throw err;
        });
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', (out ?? log).fd, log.fd] });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'ENOENT'
            ? EmbersError.of('EMB_VMM_NOT_FOUND', { problem: 'spawn', cmd })
            : EmbersError.of('EMB_VMM_START_FAILED', { cmd, reason: err.message }),
        ),
      );
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.unref();
    return { pid, exited };
  } finally {
    await log.close();
    await out?.close();
  }
}

/** Waits for a path to exist, failing early if `exited` settles first. */
export async function waitForPath(
  path: string,
  exited: Promise<unknown>,
  timeoutMs: number,
  what: string,
  logPath: string,
): Promise<void> {
  let dead = false;
  void exited.then(() => (dead = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await exists(path)) return;
    if (dead) {
      const log = await readFile(logPath, 'utf8').catch(() => '');
      throw EmbersError.of('EMB_VMM_START_FAILED', { what, log: logPath, tail: tail(log) });
    }
    if (Date.now() > deadline)
      throw EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'path', what, path, timeoutMs, log: logPath });
    await sleep(5);
  }
}

export { sleep };

/** Waits until the pid is gone; true if it went within the time. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!(await pidAlive(pid))) return true;
    await sleep(10);
  }
  return !(await pidAlive(pid));
}

/** SIGTERM, then SIGKILL: escalates, never de-escalates. */
export async function terminate(pid: number, graceMs = 3000): Promise<void> {
  if (!(await pidAlive(pid))) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitForExit(pid, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  if (!(await waitForExit(pid, 5000))) throw EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'kill', pid });
}

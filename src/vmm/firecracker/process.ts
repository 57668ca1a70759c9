/**
 * Supervision of one Firecracker process. Invariants (held by the contract tests):
 *
 * - Firecracker refuses to start when its API socket path exists, so a stale socket (and a
 *   stale vsock socket) is removed before every spawn.
 * - Readiness races process death: the wait for the socket and for the first API answer
 *   ends as soon as the process exits, with the tail of its stderr and of its log.
 * - Shutdown escalates, never de-escalates: SendCtrlAltDel (a running guest reboots, and
 *   Firecracker exits on the guest's reset) → SIGTERM → SIGKILL. Once a signal was sent,
 *   the API is not used again.
 */
import { readFile, rm } from 'node:fs/promises';
import { EmbersError, isEmbersError } from '../../errors.js';
import { tail } from '../../util/exec.js';
import { pidAlive, sleep, spawnDetached, terminate, waitForExit, waitForPath } from '../process.js';
import { FirecrackerClient } from './client.js';

/** sun_path holds 108 bytes, NUL included. */
const MAX_SOCKET_PATH = 107;

export interface FirecrackerLaunch {
  /** Who this is, for messages: "Firecracker for fn-1". */
  what: string;
  /** The program and its arguments: firecracker itself, or wrapped (ip netns exec, unshare, jailer). */
  command: string;
  args: string[];
  /** Host path of the API socket Firecracker creates. */
  apiSocket: string;
  /** Firecracker's stdout: the guest's serial console. */
  stdoutPath: string;
  /** Firecracker's stderr (and the wrappers' output). */
  stderrPath: string;
  /** Host path of the file Firecracker's logger writes (PUT /logger). */
  logPath: string;
  /** Host paths of sockets Firecracker creates and refuses to find existing (vsock). */
  staleSockets: string[];
}

export interface RunningFirecracker {
  pid: number;
  /** Settles when the process exits (only while we are its parent). */
  exited: Promise<number | null>;
  client: FirecrackerClient;
  /** ms from spawn to the first API answer. */
  spawnMs: number;
}

export interface StartOptions {
  /** How long to wait for the socket and the first answer. */
  startTimeoutMs: number;
  /** Per-call timeout of the returned client. */
  apiTimeoutMs: number;
}

/** The last lines of Firecracker's stderr and log, labelled, for error messages. */
export async function failureTail(
  launch: Pick<FirecrackerLaunch, 'stderrPath' | 'logPath'>,
  bytes = 1500,
): Promise<string> {
  const parts: string[] = [];
  for (const [label, path] of [
    ['stderr', launch.stderrPath],
    ['log', launch.logPath],
  ] as const) {
    const text = (await readFile(path, 'utf8').catch(() => '')).trim();
    if (text) parts.push(`[${label} ${path}]\n${tail(text, bytes)}`);
  }
  return parts.length ? parts.join('\n') : '(no output)';
}

/**
 * Spawns Firecracker and waits until its API answers. On any failure the process is
 * stopped, its socket removed, and the error carries the tail of its stderr and log.
 */
export async function startFirecracker(launch: FirecrackerLaunch, opts: StartOptions): Promise<RunningFirecracker> {
  for (const path of [launch.apiSocket, ...launch.staleSockets]) {
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        {
          option: 'socket path',
          value: path,
          problem: `is ${Buffer.byteLength(path)} bytes; Unix sockets allow ${MAX_SOCKET_PATH}`,
        },
        {
          hint: 'use a shorter embers home (--home) or jailer chroot base dir',
        },
      );
    }
    await rm(path, { force: true });
  }
  const t0 = performance.now();
  const proc = await spawnDetached(launch.command, launch.args, launch.stderrPath, { stdoutPath: launch.stdoutPath });
  let dead: number | null | undefined;
  void proc.exited.then((code) => (dead = code));
  const client = new FirecrackerClient(launch.apiSocket, { timeoutMs: opts.apiTimeoutMs });
  try {
    const deadline = Date.now() + opts.startTimeoutMs;
    try {
      await waitForPath(launch.apiSocket, proc.exited, opts.startTimeoutMs, launch.what, launch.stderrPath);
    } catch (err) {
      if (isEmbersError(err, 'EMB_VMM_START_FAILED')) throw await exitedError(launch, dead, err);
      throw err;
    }
    // The socket exists once bound; the first answer proves the API server is listening.
    for (;;) {
      try {
        await client.call('GET /', { timeoutMs: Math.max(100, Math.min(2000, deadline - Date.now())) });
        break;
      } catch (err) {
        if (dead !== undefined || !(await pidAlive(proc.pid))) throw await exitedError(launch, dead, err);
        if (!isEmbersError(err, 'EMB_VMM_API_UNREACHABLE') && !isEmbersError(err, 'EMB_VMM_TIMEOUT')) throw err;
        if (Date.now() > deadline) {
          throw EmbersError.of(
            'EMB_VMM_TIMEOUT',
            { problem: 'api-ready', what: launch.what, socket: launch.apiSocket, timeoutMs: opts.startTimeoutMs },
            { cause: err },
          );
        }
        await sleep(10);
      }
    }
    return { pid: proc.pid, exited: proc.exited, client, spawnMs: performance.now() - t0 };
  } catch (err) {
    await terminate(proc.pid, 1000).catch(() => undefined);
    await rm(launch.apiSocket, { force: true });
    throw err;
  }
}

async function exitedError(
  launch: FirecrackerLaunch,
  code: number | null | undefined,
  cause: unknown,
): Promise<EmbersError> {
  const t = await failureTail(launch);
  return EmbersError.of(
    'EMB_VMM_START_FAILED',
    {
      what: launch.what,
      command: launch.command,
      args: launch.args,
      exitCode: code,
      stderr: launch.stderrPath,
      log: launch.logPath,
      tail: t,
    },
    { cause },
  );
}

export interface StopOptions {
  /** How long a running guest gets to reboot after SendCtrlAltDel before SIGTERM. */
  ctrlAltDelGraceMs: number;
  /** How long after SIGTERM before SIGKILL. */
  sigtermGraceMs: number;
}

/** What `stopFirecracker` did, in order: for logs and for tests of the escalation. */
export type StopStep = 'SendCtrlAltDel' | 'SIGTERM+SIGKILL' | 'already-exited';

/**
 * Stops the Firecracker process `pid` serving `client`: SendCtrlAltDel when the guest is
 * running, then SIGTERM, then SIGKILL. Each step runs only if the process outlived the
 * previous one; the API is never called after a signal was sent.
 */
export async function stopFirecracker(pid: number, client: FirecrackerClient, opts: StopOptions): Promise<StopStep[]> {
  const steps: StopStep[] = [];
  if (!(await pidAlive(pid))) return ['already-exited'];
  let running = false;
  try {
    running = (await client.call('GET /', { timeoutMs: 1000 })).state === 'Running';
  } catch {
    /* no API: go straight to signals */
  }
  if (running) {
    try {
      await client.call('PUT /actions', { body: { action_type: 'SendCtrlAltDel' }, timeoutMs: 1000 });
      steps.push('SendCtrlAltDel');
      if (await waitForExit(pid, opts.ctrlAltDelGraceMs)) return steps;
    } catch {
      /* refused or no answer: escalate */
    }
  }
  if (await pidAlive(pid)) {
    steps.push('SIGTERM+SIGKILL');
    await terminate(pid, opts.sigtermGraceMs);
  }
  return steps.length ? steps : ['already-exited'];
}

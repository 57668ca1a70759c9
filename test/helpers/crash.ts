/**
 * The crash matrix's tools: the built CLI run as a child process (optionally told to SIGKILL
 * itself at a crash point, src/util/crash-point.ts), and the matrix of outcomes the crash
 * tests print (one row per point and source).
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CrashPointName } from '../../src/util/crash-point.js';
import { repoPath } from './repo.js';

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line parsed as JSON (every command is run with --json), or undefined. */
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  /** Sets EMBERS_CRASH_AT. */
  crashAt?: CrashPointName | `${CrashPointName}@${number}`;
}

/** Runs `embers <args> --home <home> --json` and waits for it to exit (or be killed). */
export function embers(home: string, args: string[], opts: CliOptions = {}): Promise<CliRun> {
  const env: Record<string, string | undefined> = {
    ...process.env,
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    ...opts.env,
  };
  delete env.EMBERS_CRASH_AT;
  delete env.EMBERS_PAUSE_AT;
  if (opts.crashAt) env.EMBERS_CRASH_AT = opts.crashAt;
  for (const [k, v] of Object.entries(opts.env ?? {})) if (k.startsWith('EMBERS_') && v !== undefined) env[k] = v;
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [repoPath('bin/embers.js'), ...args, '--home', home, '--json'], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('error', reject);
    c.on('close', (code, signal) => {
      const last = stdout.trim().split('\n').pop() ?? '';
      let json: unknown;
      try {
        json = JSON.parse(last);
      } catch {
        json = undefined;
      }
      resolve({ code, signal, stdout, stderr, json });
    });
  });
}

/** Asserts-free summary of a run, for messages. */
export function describeRun(r: CliRun): string {
  return `exit ${r.code ?? r.signal}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`;
}

/** Names below `dir` (recursively, relative), for checking what a crash left. */
export async function namesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    out.push(e.name);
    if (e.isDirectory()) for (const n of await namesBelow(join(dir, e.name))) out.push(join(e.name, n));
  }
  return out.sort();
}

/** One row of the crash matrix. */
export interface CrashRow {
  point: string;
  /** Which variant of the operation (S3 or peer, ...). */
  via: string;
  /** What a reader saw right after the kill: 'nothing' or 'whole'. */
  visible: string;
  earlierVerify: string;
  reconciled: string;
  rerun: string;
}

/** The matrix as a Markdown table. */
export function formatMatrix(title: string, rows: CrashRow[]): string {
  const lines = [
    `crash matrix: ${title}`,
    '| point | via | after the kill | earlier snapshots/images | next command reconciles | re-run |',
    '| --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows)
    lines.push(`| ${r.point} | ${r.via} | ${r.visible} | ${r.earlierVerify} | ${r.reconciled} | ${r.rerun} |`);
  return lines.join('\n');
}

/**
 * What a killed command can leave on the host that belongs to `home`: processes whose command
 * line names a path in it, mounts below it, loop devices backed by a file in it. Scoped to the
 * home, so tests that make no netns, link or VM can check it while other tests run.
 */
export async function hostLeftoversOf(home: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    if (argv.some((a) => a.includes(home))) out.push(`process ${pid}: ${argv.join(' ').slice(0, 200)}`);
  }
  for (const line of (await readFile('/proc/mounts', 'utf8')).split('\n'))
    if (line.split(' ')[1]?.startsWith(home)) out.push(`mount ${line}`);
  const loops = spawnSync('losetup', ['-a'], { encoding: 'utf8' }).stdout ?? '';
  for (const line of loops.split('\n')) if (line.includes(home)) out.push(`loop ${line}`);
  return out;
}

/**
 * Starts `embers <args>` told to stop at crash point `point` (EMBERS_PAUSE_AT), and resolves
 * once it is there; `resume()` lets it go on and gives its outcome.
 */
export async function embersPausedAt(
  home: string,
  args: string[],
  point: CrashPointName,
  opts: { env?: Record<string, string | undefined>; pauseFile: string },
): Promise<{ resume(): Promise<CliRun>; finished: Promise<CliRun> }> {
  const finished = embers(home, args, {
    env: { ...opts.env, EMBERS_PAUSE_AT: point, EMBERS_PAUSE_FILE: opts.pauseFile },
  });
  let done: CliRun | undefined;
  void finished.then((r) => (done = r));
  for (;;) {
    if (done) throw new Error(`the command ended before it reached ${point}: ${describeRun(done)}`);
    if (await readFile(`${opts.pauseFile}.reached`, 'utf8').catch(() => undefined)) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    finished,
    async resume() {
      await writeFile(opts.pauseFile, '');
      return finished;
    },
  };
}

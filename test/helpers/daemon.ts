/**
 * A real `embers serve` for a test: a child process running the built CLI on its own home
 * (or a given one) on a free loopback port, with helpers to call its API and to stop it
 * (SIGTERM, or kill -9 for crash tests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from './repo.js';

export interface ApiAnswer {
  status: number;
  headers: Headers;
  text: string;
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export interface TestDaemon {
  url: string;
  home: string;
  proc: ChildProcess;
  /** Everything the daemon wrote to stderr (its log). */
  log(): string;
  api(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiAnswer>;
  /** SIGTERM and wait for the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL (a crash) and wait until the process is gone. */
  kill9(): Promise<void>;
}

export interface TestDaemonOptions {
  home?: string;
  /** Extra arguments for `embers serve`. */
  args?: string[];
  env?: Record<string, string | undefined>;
  /** Sent as the bearer token by `api`. */
  token?: string;
}

export async function startTestDaemon(opts: TestDaemonOptions = {}): Promise<TestDaemon> {
  const home = opts.home ?? (await mkdtemp(join(tmpdir(), 'embers-daemon-')));
  const proc = spawn(
    process.execPath,
    [
      repoPath('bin/embers.js'),
      'serve',
      '--home',
      home,
      '--port',
      '0',
      '--net-pool-size',
      '2',
      '--json',
      ...(opts.args ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } },
  );
  let stderr = '';
  proc.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const listening = new Promise<string>((resolve, reject) => {
    let stdout = '';
    proc.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString();
      for (const line of stdout.split('\n')) {
        try {
          const j = JSON.parse(line) as { url?: string; error?: unknown };
          if (j.url) return resolve(j.url);
          if (j.error) return reject(new Error(`embers serve failed: ${line}\n${stderr}`));
        } catch {
          /* not a whole JSON line yet */
        }
      }
    });
    void exited.then((code) =>
      reject(new Error(`embers serve exited with ${code} before listening:\n${stdout}\n${stderr}`)),
    );
  });
  // a daemon that never listened leaves nothing of the home this helper made for it
  const url = await listening.catch(async (err: unknown) => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
    if (!opts.home) await rm(home, { recursive: true, force: true });
    throw err;
  });
  const api = async (
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<ApiAnswer> => {
    const h: Record<string, string> = { ...headers };
    if (opts.token && !h.authorization) h.authorization = `Bearer ${opts.token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      h['content-type'] = 'application/json';
      payload = typeof body === 'string' ? body : JSON.stringify(body);
    }
    const res = await fetch(`${url}${path}`, { method, headers: h, body: payload });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
  return {
    url,
    home,
    proc,
    log: () => stderr,
    api,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM'); // again, if it was sent already: harmless
      return exited;
    },
    async kill9() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}

/** Polls `check` until it returns a value (not undefined), at most `timeoutMs` (a bound on waiting, not a timing assertion). */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits until the function's snapshot is ready and returns its id; a failed snapshot fails the test with the daemon's log. */
export async function snapshotReady(d: TestDaemon, fn: string): Promise<string> {
  return waitFor(`the snapshot of ${fn}`, async () => {
    const s = (await d.api('GET', `/v1/functions/${fn}`)).json.snapshot;
    if (s.state === 'failed') throw new Error(`snapshot of ${fn} failed: ${s.error}\n${d.log()}`);
    return s.state === 'ready' ? (s.id as string) : undefined;
  });
}

import { spawn, type SpawnOptions } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { EmbersError } from '../errors.js';
import { childEnvironment, environment } from '../config.js';

export interface RunOptions {
  /** Bytes to write to the command's standard input. */
  input?: string | Buffer;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Kill the command after this many milliseconds. Default: no limit. */
  timeoutMs?: number;
  /** Accept these exit codes besides 0. */
  okCodes?: number[];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const TAIL_BYTES = 4000;

export function tail(text: string, bytes = TAIL_BYTES): string {
  return text.length > bytes ? `…${text.slice(-bytes)}` : text;
}

/**
 * Runs a host command to completion and captures its output. A non-zero exit (other than
 * `okCodes`) throws EMB_HOST_COMMAND_FAILED with the command line and the tail of stderr;
 * a missing program throws EMB_HOST_TOOL_MISSING.
 */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const spawnOpts: SpawnOptions = {
      cwd: opts.cwd,
      env: opts.env ?? childEnvironment(),
      stdio: ['pipe', 'pipe', 'pipe'],
    };
    const child = spawn(cmd, args, spawnOpts);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    if (opts.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, opts.timeoutMs);
    }
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (e.code === 'ENOENT') {
        reject(EmbersError.of('EMB_HOST_TOOL_MISSING', { cmd }, { cause: e }));
      } else {
        reject(EmbersError.of('EMB_HOST_COMMAND_FAILED', { cmd, args, spawnError: e.message }, { cause: e }));
      }
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      const exit = code ?? 128;
      if (exit === 0 || opts.okCodes?.includes(exit)) {
        resolve({ code: exit, stdout, stderr });
        return;
      }
      const failure = timedOut
        ? `timed out after ${opts.timeoutMs} ms`
        : signal
          ? `killed by ${signal}`
          : `exit code ${exit}`;
      reject(
        EmbersError.of('EMB_HOST_COMMAND_FAILED', {
          cmd,
          args,
          exit,
          stderr: tail(stderr),
          failure,
          output: tail(stderr.trim() || stdout.trim(), 600),
        }),
      );
    });
    child.stdin!.on('error', () => {
      /* the command may exit before reading its input */
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/** Finds a program on PATH (plus the sbin dirs, which a non-login root shell may lack). */
export async function which(program: string): Promise<string | undefined> {
  const dirs = environment()
    .path.split(delimiter)
    .concat(['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin']);
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, program);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** Like `which`, but throws EMB_HOST_TOOL_MISSING naming the Debian package to install. */
export async function requireTool(program: string, debianPackage: string): Promise<string> {
  const found = await which(program);
  if (!found) {
    throw EmbersError.of(
      'EMB_HOST_TOOL_MISSING',
      { program, debianPackage },
      {
        hint: `run \`apt-get install ${debianPackage}\` or \`scripts/setup.sh\``,
      },
    );
  }
  return found;
}

import { request } from 'node:http';
import { readFile } from 'node:fs/promises';
import { EmbersError } from '../errors.js';
import { pidAlive } from '../util/pid.js';
import { sleep } from '../util/sleep.js';

export interface InvokeRequest {
  path?: string;
  method?: string;
  data?: string | Buffer;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

export interface InvokeResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** ms from sending the request to the last byte of the answer. */
  latencyMs: number;
}

/** One HTTP request to a function at ip:port. */
export function httpRequest(ip: string, port: number, req: InvokeRequest = {}): Promise<InvokeResponse> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const r = request(
      {
        host: ip,
        port,
        path: req.path ?? '/',
        method: req.method ?? (req.data === undefined ? 'GET' : 'POST'),
        headers: { connection: 'close', ...(req.headers ?? {}) },
        timeout: req.timeoutMs ?? 30_000,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
            latencyMs: performance.now() - t0,
          }),
        );
        res.on('error', reject);
      },
    );
    r.on('timeout', () => r.destroy(new Error(`no answer within ${req.timeoutMs ?? 30_000} ms`)));
    r.on('error', (err) => reject(err));
    if (req.data !== undefined) r.end(req.data);
    else r.end();
  });
}

/**
 * Polls the function until it answers HTTP on its port (any status counts: the function is
 * serving), racing the exit of its VMM process `vm`. Resolves with the first answer.
 */
export async function waitUntilServing(
  ip: string,
  port: number,
  opts: { timeoutMs: number; vm?: { pid: number; consoleLog: string; kind: string }; path?: string },
): Promise<InvokeResponse> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastError = '';
  for (let attempt = 0; ; attempt++) {
    try {
      return await httpRequest(ip, port, {
        path: opts.path ?? '/',
        timeoutMs: Math.max(200, Math.min(2000, deadline - Date.now())),
      });
    } catch (err) {
      lastError = (err as Error).message;
    }
    if (opts.vm && attempt % 5 === 0 && !(await pidAlive(opts.vm.pid))) {
      throw EmbersError.of('EMB_INSTANCE_NOT_READY', {
        ip,
        port,
        vmm: opts.vm.kind,
        consoleTail: await consoleTail(opts.vm.consoleLog),
      });
    }
    if (Date.now() > deadline) {
      throw EmbersError.of('EMB_INSTANCE_NOT_READY', { ip, port, timeoutMs: opts.timeoutMs, lastError });
    }
    await sleep(10);
  }
}

async function consoleTail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').slice(-25).join('\n');
}

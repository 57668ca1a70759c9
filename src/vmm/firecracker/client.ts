import { request } from 'node:http';
import { EmbersError } from '../../errors.js';
import { FIRECRACKER_OPERATIONS, type FirecrackerOperationKey, type FirecrackerOperations } from './api-types.js';

/** The arguments of one operation: its path parameters and its JSON body, typed from the spec. */
export type CallArgs<K extends FirecrackerOperationKey> = (FirecrackerOperations[K]['params'] extends Record<
  string,
  never
>
  ? { params?: Record<string, never> }
  : { params: FirecrackerOperations[K]['params'] }) &
  (FirecrackerOperations[K]['body'] extends undefined
    ? { body?: undefined }
    : { body: FirecrackerOperations[K]['body'] }) & {
    /** Overrides the client's per-call timeout. */
    timeoutMs?: number;
  };

export interface FirecrackerClientOptions {
  /** How long one call may take, from connect to the end of the answer, in ms. @default 10000 */
  timeoutMs?: number;
}

/** Firecracker's API server (micro_http) rejects bodies larger than this by default. */
const MAX_BODY_BYTES = 51_200;

/**
 * A client for Firecracker's REST API over its Unix socket (HTTP/1.1, one connection per
 * call). Operations are named as in the spec ("PUT /drives/{drive_id}") and their bodies are
 * the generated types, so a request that does not fit the spec does not compile.
 *
 * Errors: an answer other than 2xx is EMB_VMM_API_FAULT with the method, path, status and
 * Firecracker's `fault_message`; a socket that cannot be reached or a connection that breaks
 * is EMB_VMM_API_UNREACHABLE; no answer in time is EMB_VMM_TIMEOUT.
 */
export class FirecrackerClient {
  private readonly timeoutMs: number;

  constructor(
    readonly socketPath: string,
    opts: FirecrackerClientOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  call<K extends FirecrackerOperationKey>(op: K, args: CallArgs<K>): Promise<FirecrackerOperations[K]['response']> {
    const info = FIRECRACKER_OPERATIONS[op];
    const params = (args.params ?? {}) as Record<string, string>;
    const path = info.path.replace(/\{([^}]+)\}/g, (_, name: string) => {
      const value = params[name];
      if (typeof value !== 'string' || value === '')
        throw EmbersError.of('EMB_INTERNAL', { during: op, problem: `path parameter ${name} is missing`, op, params });
      return encodeURIComponent(value);
    });
    const body = args.body === undefined ? undefined : JSON.stringify(args.body);
    if (info.body === 'required' && body === undefined)
      throw EmbersError.of('EMB_INTERNAL', { during: op, problem: 'needs a body', op });
    return this.send(info.method, path, body, args.timeoutMs ?? this.timeoutMs) as Promise<
      FirecrackerOperations[K]['response']
    >;
  }

  private send(method: string, path: string, body: string | undefined, timeoutMs: number): Promise<unknown> {
    const where = { method, path, socket: this.socketPath };
    if (body !== undefined && Buffer.byteLength(body) > MAX_BODY_BYTES) {
      return Promise.reject(
        EmbersError.of('EMB_INTERNAL', {
          during: `${method} ${path}`,
          problem: `body of ${Buffer.byteLength(body)} bytes exceeds Firecracker's ${MAX_BODY_BYTES}-byte limit`,
          ...where,
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | number> = { Accept: 'application/json' };
      if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        headers['Content-Length'] = Buffer.byteLength(body);
      }
      const req = request({ socketPath: this.socketPath, method, path, headers, agent: false });
      let settled = false;
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        fn();
      };
      const timer = setTimeout(() => {
        finish(() => reject(EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'api-call', ...where, timeoutMs })));
        req.destroy();
      }, timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) =>
        finish(() =>
          reject(
            EmbersError.of(
              'EMB_VMM_API_UNREACHABLE',
              { stage: 'request', ...where, errno: err.code, reason: err.message },
              { cause: err },
            ),
          ),
        ),
      );
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) =>
          finish(() =>
            reject(
              EmbersError.of(
                'EMB_VMM_API_UNREACHABLE',
                { stage: 'response', ...where, reason: err.message },
                { cause: err },
              ),
            ),
          ),
        );
        res.on('end', () =>
          finish(() => {
            const status = res.statusCode ?? 0;
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            if (text.trim() !== '') {
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = undefined;
              }
            }
            if (status >= 200 && status < 300) {
              resolve(status === 204 ? undefined : parsed);
              return;
            }
            const fault =
              typeof (parsed as { fault_message?: unknown })?.fault_message === 'string'
                ? (parsed as { fault_message: string }).fault_message
                : text.trim() || `HTTP ${status}`;
            reject(EmbersError.of('EMB_VMM_API_FAULT', { ...where, statusCode: status, faultMessage: fault }));
          }),
        );
      });
      req.end(body);
    });
  }
}

/**
 * The HTTP transport of the registry client (undici's request API, the HTTP client inside
 * Node's fetch, which the peer client uses): one request, its errors mapped to stable codes,
 * bodies read with a size cap, registry error bodies decoded. No redirect is followed here
 * (the client follows them itself, checking each hop) and no content encoding is undone
 * (blobs are hashed as sent). `timeoutMs` bounds the connect, the wait for the headers and
 * each wait for more of the body.
 */
import { Agent, request as undiciRequest, type Dispatcher } from 'undici';
import { EmbersError, isEmbersError, type RegistryRequestDetails } from '../../errors.js';
import { isNetworkErrorCode } from '../../util/errno.js';
import { everyChunk } from '../../util/stream-read.js';

export interface SendOptions {
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Named in errors: "registry localhost:5000", "token service …". */
  what: string;
}

/** A response whose body is not read yet: iterate it (Buffers), or destroy it. */
export interface RegistryResponse extends AsyncIterable<Buffer> {
  readonly statusCode: number;
  /** Lower-case names; a header sent more than once is joined with ", " (as node:http does). */
  readonly headers: Readonly<Record<string, string | undefined>>;
  /** True once the whole body has been read. */
  readonly complete: boolean;
  destroy(): void;
}

/** undici's timeouts: named ETIMEDOUT in errors, like a socket timeout. */
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

function isTlsError(err: NodeJS.ErrnoException): boolean {
  const code = err.code ?? '';
  return (
    code.startsWith('ERR_SSL') ||
    code.startsWith('ERR_TLS') ||
    code === 'EPROTO' ||
    /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code) ||
    /wrong version number|ssl|tls|certificate/i.test(err.message)
  );
}

/** Maps a socket-level failure to EMB_REGISTRY_UNREACHABLE (retried) or EMB_REGISTRY_TLS (not). */
export function transportError(err: unknown, url: URL, what: string): unknown {
  if (isEmbersError(err) || (err as Error)?.name === 'AbortError') return err;
  const e = err as NodeJS.ErrnoException;
  const endpoint = url.host;
  if (isTlsError(e)) {
    return EmbersError.of(
      'EMB_REGISTRY_TLS',
      { problem: 'handshake', server: what, reason: e.message, endpoint, url: url.href, errno: e.code },
      { cause: err },
    );
  }
  const code = e.code && TIMEOUT_CODES.has(e.code) ? 'ETIMEDOUT' : e.code;
  const why = isNetworkErrorCode(code) ? code : e.message;
  return EmbersError.of(
    'EMB_REGISTRY_UNREACHABLE',
    { server: what, endpoint, reason: why, url: url.href, errno: code, transient: code !== 'ENOTFOUND' },
    { cause: err },
  );
}

/** One connection pool per timeout (registry clients of a process share one, 30 s by default). */
const pools = new Map<number, Agent>();

function poolFor(timeoutMs: number): Dispatcher {
  let pool = pools.get(timeoutMs);
  if (!pool) {
    pool = new Agent({ connect: { timeout: timeoutMs }, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
    pools.set(timeoutMs, pool);
  }
  return pool;
}

/** Sends one request; resolves with the response (body unread), whatever its status. */
export async function send(url: URL, opts: SendOptions): Promise<RegistryResponse> {
  let res: Dispatcher.ResponseData;
  try {
    res = await undiciRequest(url, {
      method: opts.method,
      headers: opts.headers,
      signal: opts.signal,
      dispatcher: poolFor(opts.timeoutMs),
    });
  } catch (err) {
    throw transportError(err, url, opts.what);
  }
  const body = res.body;
  // A body left unread must not crash the process when it fails (its timeout stays armed); readers see the error.
  body.on('error', () => {});
  const headers: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(res.headers))
    headers[name] = Array.isArray(value) ? value.join(', ') : value;
  return {
    statusCode: res.statusCode,
    headers,
    get complete() {
      return body.readableEnded;
    },
    destroy: () => void body.destroy(),
    // every byte that arrived, also after a break: a resumed download then asks only for the rest
    [Symbol.asyncIterator]: () => everyChunk(body),
  };
}

/** Reads a whole body of at most `maxBytes`. Breaks in the body are EMB_REGISTRY_UNREACHABLE. */
export async function readBody(res: RegistryResponse, url: URL, what: string, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) {
        res.destroy();
        throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
          problem: 'too-large',
          server: what,
          url: url.href,
          maxBytes,
        });
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    throw transportError(err, url, what);
  }
  if (!res.complete)
    throw EmbersError.of('EMB_REGISTRY_UNREACHABLE', {
      problem: 'body',
      server: what,
      endpoint: url.host,
      url: url.href,
      transient: true,
    });
  return Buffer.concat(chunks);
}

/** Reads and discards a body (so the socket can be reused); never throws. */
export async function drain(res: RegistryResponse): Promise<void> {
  try {
    let n = 0;
    for await (const chunk of res) {
      n += (chunk as Buffer).length;
      if (n > 1 << 20) {
        res.destroy();
        return;
      }
    }
  } catch {
    /* ignored */
  }
}

/** The first entry of a registry error body ({"errors":[{"code","message","detail"}]}), if any. */
export function registryErrorOf(body: Buffer): { code?: string; message?: string } {
  try {
    const doc = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const first = doc.errors?.[0];
    if (!first) return {};
    return {
      ...(typeof first.code === 'string' ? { code: first.code } : {}),
      ...(typeof first.message === 'string' ? { message: first.message } : {}),
    };
  } catch {
    return {};
  }
}

/** Reads a small error body and returns its decoded registry error, for messages. */
export async function errorBody(
  res: RegistryResponse,
  url: URL,
  what: string,
): Promise<{ code?: string; message?: string }> {
  const body = await readBody(res, url, what, 64 * 1024).catch(() => Buffer.alloc(0));
  return registryErrorOf(body);
}

/** True for failures a retry may fix: unreachable (not a DNS miss), 5xx and 429. */
export function isTransientRegistryError(err: unknown): boolean {
  if (isEmbersError(err, 'EMB_REGISTRY_UNAVAILABLE')) return true;
  return isEmbersError(err, 'EMB_REGISTRY_UNREACHABLE') && err.details.transient !== false;
}

/** The error for a status that is not a success, 401 and 404 (handled by the caller) aside. */
export function statusError(
  status: number,
  url: URL,
  what: string,
  registryError: { code?: string; message?: string },
  details: RegistryRequestDetails = {},
): EmbersError<'EMB_REGISTRY_AUTH' | 'EMB_REGISTRY_UNAVAILABLE' | 'EMB_REGISTRY_REQUEST_FAILED'> {
  const d = {
    ...details,
    server: what,
    url: url.href,
    status,
    ...(registryError.code
      ? {
          registryCode: registryError.code,
          ...(registryError.message ? { registryMessage: registryError.message } : {}),
        }
      : {}),
  };
  if (status === 401 || status === 403) return EmbersError.of('EMB_REGISTRY_AUTH', d);
  if (status === 429 || status >= 500) return EmbersError.of('EMB_REGISTRY_UNAVAILABLE', d);
  return EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', d);
}

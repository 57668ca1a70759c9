/**
 * The HTTP transport of the registry client (node:http / node:https): one request, its errors
 * mapped to stable codes, bodies read with a size cap, registry error bodies decoded.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { EmbersError, isEmbersError, type RegistryRequestDetails } from '../../errors.js';
import { isNetworkErrorCode } from '../../util/errno.js';

export interface SendOptions {
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
  /** Named in errors: "registry localhost:5000", "token service …". */
  what: string;
}

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
    return new EmbersError(
      'EMB_REGISTRY_TLS',
      `the TLS connection to ${what} (${endpoint}) failed: ${e.message}`,
      { endpoint, url: url.href, errno: e.code },
      { cause: err },
    );
  }
  const why = isNetworkErrorCode(e.code) ? e.code : e.message;
  return new EmbersError(
    'EMB_REGISTRY_UNREACHABLE',
    `${what} (${endpoint}) could not be reached: ${why}`,
    { endpoint, url: url.href, errno: e.code, transient: e.code !== 'ENOTFOUND' },
    { cause: err },
  );
}

/** Sends one request; resolves with the response (body unread), whatever its status. */
export function send(url: URL, opts: SendOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    let req: ReturnType<typeof httpRequest>;
    try {
      req = request(url, { method: opts.method, headers: opts.headers, signal: opts.signal });
    } catch (err) {
      reject(transportError(err, url, opts.what));
      return;
    }
    req.setTimeout(opts.timeoutMs, () => {
      const err = Object.assign(new Error(`no data for ${opts.timeoutMs} ms`), { code: 'ETIMEDOUT' });
      req.destroy(err);
    });
    req.on('error', (err) => reject(transportError(err, url, opts.what)));
    req.on('response', (res) => {
      // A stalled body must fail too: the socket timeout stays armed while it is read.
      res.on('error', () => {});
      resolve(res);
    });
    req.end();
  });
}

/** Reads a whole body of at most `maxBytes`. Breaks in the body are EMB_REGISTRY_UNREACHABLE. */
export async function readBody(res: IncomingMessage, url: URL, what: string, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) {
        res.destroy();
        throw new EmbersError('EMB_REGISTRY_REQUEST_FAILED', `${what} sent more than ${maxBytes} bytes for ${url.pathname}`, { url: url.href, maxBytes });
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    throw transportError(err, url, what);
  }
  if (!res.complete)
    throw new EmbersError('EMB_REGISTRY_UNREACHABLE', `the connection to ${what} broke while reading ${url.pathname}`, {
      endpoint: url.host,
      url: url.href,
      transient: true,
    });
  return Buffer.concat(chunks);
}

/** Reads and discards a body (so the socket can be reused); never throws. */
export async function drain(res: IncomingMessage): Promise<void> {
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
export async function errorBody(res: IncomingMessage, url: URL, what: string): Promise<{ code?: string; message?: string }> {
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
  const said = registryError.code ? ` (${registryError.code}${registryError.message ? `: ${registryError.message}` : ''})` : '';
  const d = { ...details, url: url.href, status, ...(registryError.code ? { registryCode: registryError.code } : {}) };
  if (status === 401 || status === 403) return new EmbersError('EMB_REGISTRY_AUTH', `${what} refused access to ${url.pathname}: HTTP ${status}${said}`, d);
  if (status === 429 || status >= 500) return new EmbersError('EMB_REGISTRY_UNAVAILABLE', `${what} answered HTTP ${status} for ${url.pathname}${said}`, d);
  return new EmbersError('EMB_REGISTRY_REQUEST_FAILED', `${what} answered HTTP ${status} for ${url.pathname}${said}`, d);
}

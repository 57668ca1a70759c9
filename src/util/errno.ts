/**
 * The one errno classifier: the errno-style code of a failure (found on the error or on one of
 * its causes), and which codes mean "the network failed" (a peer, a service or a registry
 * could not be reached, or the connection broke), as opposed to a refusal or a bug.
 */

/** Codes of a connection that could not be made or that broke: worth another attempt. */
export const NETWORK_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EADDRNOTAVAIL',
  'ERR_STREAM_PREMATURE_CLOSE',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
]);

/** The errno-style code (ECONNREFUSED, UND_ERR_SOCKET, ...) of an error or of one of its causes. */
export function errnoCode(err: unknown): string | undefined {
  for (
    let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0;
    e && depth < 4;
    e = e.cause as typeof e, depth++
  ) {
    if (typeof e.code === 'string') return e.code;
  }
  return undefined;
}

/** True when `code` (see errnoCode) says the network failed. */
export function isNetworkErrorCode(code: string | undefined): code is string {
  return code !== undefined && NETWORK_ERROR_CODES.has(code);
}

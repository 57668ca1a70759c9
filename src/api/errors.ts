/**
 * How the API reports errors: always `{ error: { code, message, hint } }` with the EMB code
 * and an HTTP status that fits it.
 */
import type { ServerResponse } from 'node:http';
import { asEmbersError, type EmbersError, type ErrorCode } from '../errors.js';

const STATUS: Partial<Record<ErrorCode, number>> = {
  EMB_USAGE: 400,
  EMB_CONFIG_INVALID: 400,
  EMB_FUNCTION_SPEC_INVALID: 400,
  EMB_IMAGE_REFERENCE_INVALID: 400,
  EMB_IMAGE_NOT_FOUND: 422,
  EMB_IMAGE_MANIFEST_INVALID: 422,
  EMB_IMAGE_PLATFORM_MISSING: 422,
  EMB_IMAGE_LAYER_UNSAFE: 422,
  EMB_IMAGE_LAYER_INVALID: 422,
  EMB_IMAGE_LAYER_UNSUPPORTED: 422,
  EMB_REGISTRY_AUTH: 502,
  EMB_REGISTRY_UNREACHABLE: 502,
  EMB_REGISTRY_UNAVAILABLE: 502,
  EMB_API_AUTH: 401,
  EMB_PEER_AUTH: 401,
  EMB_FUNCTION_NOT_FOUND: 404,
  EMB_API_ROUTE_NOT_FOUND: 404,
  EMB_SNAPSHOT_NOT_FOUND: 404,
  EMB_INSTANCE_NOT_FOUND: 404,
  EMB_NODE_BUSY: 409,
  EMB_INSTANCE_BUSY: 409,
  EMB_SNAPSHOT_BUSY: 409,
  EMB_API_BODY_TOO_LARGE: 413,
  EMB_FUNCTION_QUEUE_FULL: 429,
  EMB_FUNCTION_DRAINING: 503,
  EMB_INSTANCE_INVOKE_FAILED: 502,
  EMB_FUNCTION_TIMEOUT: 504,
  EMB_GUEST_AGENT_UNREACHABLE: 502,
  EMB_GUEST_AGENT_FAILED: 502,
};

/** The HTTP status of an error: a function that failed to start is 502 whatever the cause. */
export function httpStatusOf(err: EmbersError): number {
  if (err.details.startFailed === true) return 502;
  return STATUS[err.code] ?? 500;
}

export interface ErrorBody {
  error: { code: string; message: string; hint: string };
}

export function errorBody(err: unknown): ErrorBody {
  const e = asEmbersError(err);
  return { error: { code: e.code, message: e.message, hint: e.hint } };
}

/** Writes an error on a raw response (after a route took the response over); destroys it if the headers went out. */
export function sendRawError(res: ServerResponse, err: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const e = asEmbersError(err);
  const body = Buffer.from(`${JSON.stringify(errorBody(e))}\n`);
  res.writeHead(httpStatusOf(e), {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': body.length,
  });
  res.end(body);
}

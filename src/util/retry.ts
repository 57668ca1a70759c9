/** Retries of transient failures, with exponential backoff and full jitter. */

import { EmbersError, isEmbersError } from '../errors.js';
import { sleep } from './sleep.js';

export interface RetryOptions {
  /** Attempts in all, the first included (1 = no retry).
   * @default 5 */
  attempts?: number;
  /** Delay before the first retry, in ms; doubles on each further retry (before jitter).
   * @default 200 */
  baseDelayMs?: number;
  /** Upper bound of one delay, in ms.
   * @default 5000 */
  maxDelayMs?: number;
}

/** RetryOptions after defaults: nothing is undefined. */
export type RetryPolicy = Required<RetryOptions>;

const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 };

export function retryPolicy(opts: RetryOptions = {}): RetryPolicy {
  const p = { ...DEFAULT_RETRY, ...stripUndefined(opts) };
  if (!Number.isInteger(p.attempts) || p.attempts < 1) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'retry attempts',
      value: p.attempts,
      expected: 'an integer >= 1',
    });
  }
  if (!(p.baseDelayMs >= 0) || !(p.maxDelayMs >= 0)) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'retry delays',
      expected: `>= 0 ms (base ${p.baseDelayMs}, max ${p.maxDelayMs})`,
    });
  }
  return p;
}

/**
 * Runs `fn` until it succeeds, it throws an error `isTransient` rejects, or the attempts are
 * spent; then throws the last error. The delay before retry n (n >= 1) is a random duration in
 * [0, min(maxDelayMs, baseDelayMs * 2^(n-1))] ("full jitter"), so clients that failed together
 * do not retry together; at least the Retry-After the server sent (see retryAfterOf). An aborted `signal` stops the waiting and throws its reason.
 */
export async function retry<T>(
  fn: (attempt: number) => Promise<T>,
  isTransient: (err: unknown) => boolean,
  policy: RetryPolicy,
  signal?: AbortSignal,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (attempt >= policy.attempts || !isTransient(err)) throw err;
      const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      // a server that says when to come back (Retry-After on a 503 SlowDown or a 429) is believed
      await sleep(Math.max(Math.random() * ceiling, retryAfterOf(err) ?? 0), signal);
    }
  }
}

/** The longest Retry-After embers waits for, in ms: a server asking for more gets retried after this. */
export const MAX_RETRY_AFTER_MS = 30_000;

/** The wait a failed request's server asked for (`details.retryAfterMs` of an EmbersError), capped at MAX_RETRY_AFTER_MS. */
export function retryAfterOf(err: unknown): number | undefined {
  const ms =
    isEmbersError(err, 'EMB_REMOTE_UNAVAILABLE') || isEmbersError(err, 'EMB_REGISTRY_UNAVAILABLE')
      ? err.details.retryAfterMs
      : undefined;
  return typeof ms === 'number' && ms >= 0 ? Math.min(ms, MAX_RETRY_AFTER_MS) : undefined;
}

/** A Retry-After header value (seconds, or an HTTP date) in ms from now; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

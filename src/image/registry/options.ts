/** Options of the registry client, with their defaults, and which registries speak plain HTTP. */
import { EmbersError } from '../../errors.js';
import { environment } from '../../config.js';
import { retryPolicy, type RetryOptions, type RetryPolicy } from '../../util/retry.js';
import { splitHostPort } from './reference.js';

export const DEFAULT_INSECURE_REGISTRIES: readonly string[] = ['localhost', '127.0.0.1', '[::1]'];

export interface RegistryOptions {
  /** Registries reached over plain HTTP instead of HTTPS, as `host` (any port) or `host:port`.
   * Replaces the default list when given.
   * @default EMBERS_INSECURE_REGISTRIES (comma-separated) ?? ['localhost', '127.0.0.1', '[::1]'] */
  insecureRegistries?: readonly string[];
  /** Credentials file, in the format of docker's `config.json` (an `auths` object keyed by
   * registry, each entry with `auth` = base64 of `user:password`, or `username` and `password`).
   * A missing file means no credentials.
   * @default EMBERS_REGISTRY_AUTH_FILE ?? `${DOCKER_CONFIG ?? '~/.docker'}/config.json` (config.ts: Environment.registry) */
  authFile?: string;
  /** Blobs (layers) downloaded at once by one pull.
   * @default 3 */
  concurrency?: number;
  /** A request whose socket stays silent this long fails (and is retried), in ms.
   * @default 30000 */
  timeoutMs?: number;
  /** How transient failures (connection errors, a body cut short, 5xx, 429) are retried; blob
   * downloads resume from the bytes already received. 401/403/404 are never retried.
   * @default { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 } */
  retry?: RetryOptions;
  /** Cancels pulls; downloaded bytes are kept for the next pull to resume. */
  signal?: AbortSignal;
  /** Sent as User-Agent.
   * @default 'embers/0.1' */
  userAgent?: string;
}

/** RegistryOptions after defaults: nothing is undefined. */
export interface CompiledRegistryOptions {
  insecureRegistries: readonly string[];
  authFile: string;
  concurrency: number;
  timeoutMs: number;
  retry: RetryPolicy;
  signal: AbortSignal | undefined;
  userAgent: string;
}

/** The credentials file from the environment (`env`, or this process's: config.ts reads it). */
export function defaultAuthFile(env?: NodeJS.ProcessEnv): string {
  return environment(env).registry.authFile;
}

/** The plain-HTTP registries from the environment, or the default list. */
export function insecureFromEnv(env?: NodeJS.ProcessEnv): readonly string[] {
  return environment(env).registry.insecure ?? DEFAULT_INSECURE_REGISTRIES;
}

export function compileRegistryOptions(opts: RegistryOptions = {}): CompiledRegistryOptions {
  const concurrency = opts.concurrency ?? 3;
  const timeoutMs = opts.timeoutMs ?? 30_000;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 32) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'registry concurrency',
      value: concurrency,
      expected: 'an integer from 1 to 32',
    });
  }
  if (!(timeoutMs > 0))
    throw EmbersError.of('EMB_CONFIG_INVALID', { option: 'registry timeout', value: timeoutMs, expected: '> 0 ms' });
  const insecureRegistries = opts.insecureRegistries ?? insecureFromEnv();
  for (const entry of insecureRegistries) {
    if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d+)?$/.test(entry)) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        { option: 'insecure registry', value: entry, problem: 'is not host or host:port' },
        {
          hint: 'set EMBERS_INSECURE_REGISTRIES to a comma-separated list such as localhost,127.0.0.1,myregistry:5000',
        },
      );
    }
  }
  return {
    insecureRegistries,
    authFile: opts.authFile ?? defaultAuthFile(),
    concurrency,
    timeoutMs,
    retry: retryPolicy(opts.retry),
    signal: opts.signal,
    userAgent: opts.userAgent ?? 'embers/0.1',
  };
}

/** True when `endpoint` (host[:port]) is listed as insecure: an entry without port matches every port. */
export function isInsecure(endpoint: string, insecure: readonly string[]): boolean {
  const { hostname, port } = splitHostPort(endpoint.toLowerCase());
  return insecure.some((entry) => {
    const e = splitHostPort(entry.toLowerCase());
    return e.hostname === hostname && (e.port === undefined || e.port === port);
  });
}

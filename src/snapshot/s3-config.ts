/** The options of the S3 snapshot store, and their defaults. */
import { EmbersError } from '../errors.js';
import { retryPolicy, type RetryOptions, type RetryPolicy } from '../util/retry.js';
import { isHttpUrl } from '../util/url.js';

export interface S3StoreOptions {
  /** The service URL, e.g. `http://10.0.0.5:9000` for MinIO. Omit for AWS S3 (the region's endpoint). */
  endpoint?: string;
  /** @default 'us-east-1' */
  region?: string;
  bucket: string;
  /** Key prefix under which snapshots live, as `<prefix>/<id>/<file>`; '' for the bucket root.
   * @default 'snapshots' */
  prefix?: string;
  /** Static credentials. Omitted: the AWS SDK's default chain (AWS_* env, ~/.aws, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Path-style URLs (`<endpoint>/<bucket>/<key>`), which MinIO, Ceph RGW and s3rver need.
   * @default true when `endpoint` is set, false otherwise */
  forcePathStyle?: boolean;
  /** Retry policy for transient failures (network errors, 5xx, throttling); 401/403/404 are never retried.
   * @default { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 } */
  retry?: RetryOptions;
  /** How long to wait for a connection, in ms.
   * @default 5000 */
  connectTimeoutMs?: number;
  /** How long a connection may stay idle (no bytes either way) during a request, in ms.
   * @default 60000 */
  idleTimeoutMs?: number;
}

/** S3StoreOptions after defaults. */
export interface S3StoreConfig {
  endpoint: string | undefined;
  region: string;
  bucket: string;
  prefix: string;
  credentials: S3StoreOptions['credentials'];
  forcePathStyle: boolean;
  retry: RetryPolicy;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

export function resolveS3StoreOptions(opts: S3StoreOptions): S3StoreConfig {
  if (!opts.bucket || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(opts.bucket)) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'S3 bucket',
      value: opts.bucket ?? '',
      problem: "is not a bucket name (3-63 characters: a-z, 0-9, '.', '-')",
    });
  }
  if (opts.endpoint !== undefined && !isHttpUrl(opts.endpoint)) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'S3 endpoint',
      value: opts.endpoint,
      problem: 'is not an http(s) URL',
    });
  }
  const prefix = (opts.prefix ?? 'snapshots').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '.' || p === '..') || /\/\//.test(prefix)) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'S3 prefix',
      value: opts.prefix,
      problem: 'has an empty, "." or ".." segment',
    });
  }
  const c = opts.credentials;
  if (c && (!c.accessKeyId || !c.secretAccessKey)) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'S3 credentials',
      problem: 'need both an access key id and a secret access key',
    });
  }
  return {
    endpoint: opts.endpoint?.replace(/\/+$/, ''),
    region: opts.region ?? 'us-east-1',
    bucket: opts.bucket,
    prefix,
    credentials: c,
    forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
    retry: retryPolicy(opts.retry),
    connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
  };
}

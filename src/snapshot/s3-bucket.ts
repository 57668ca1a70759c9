/**
 * One bucket and key prefix of an S3-compatible service, as requests: the SDK client, the key
 * of each snapshot file, one request retried while it fails transiently with its SDK and
 * network errors mapped to the catalogue, and the few request shapes the store uses.
 */
import { createHash } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import {
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { EmbersError, isEmbersError } from '../errors.js';
import { errnoCode, isNetworkErrorCode } from '../util/errno.js';
import { parseRetryAfter, retry } from '../util/retry.js';
import type { S3StoreConfig } from './s3-config.js';
import { isTransientTransferError } from './transfer.js';

/** The object metadata key holding a file's sha256 (sent as `x-amz-meta-sha256`). */
export const SHA256_METADATA = 'sha256';

export interface RemoteObject {
  sizeBytes: number;
  sha256: string | undefined;
}

export class S3Bucket {
  /** The SDK client (path-style, checksums only where S3 requires them, no SDK retries: this store retries). */
  readonly client: S3Client;
  /** The endpoint requests go to, for messages. */
  readonly endpoint: string;
  /** `s3://bucket/prefix`, for messages. */
  readonly location: string;

  constructor(readonly config: S3StoreConfig) {
    const c = config;
    this.endpoint = c.endpoint ?? `https://s3.${c.region}.amazonaws.com`;
    this.location = `s3://${c.bucket}${c.prefix ? `/${c.prefix}` : ''}`;
    this.client = new S3Client({
      endpoint: c.endpoint,
      region: c.region,
      forcePathStyle: c.forcePathStyle,
      credentials: c.credentials,
      maxAttempts: 1,
      // Checksums beyond what S3 requires (CRC32 trailers on every request, the SDK's default
      // since 3.729) are not understood by many S3-compatible services; embers sends
      // Content-MD5 on every upload and checks sha256 end to end instead.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        connectionTimeout: c.connectTimeoutMs,
        socketTimeout: c.idleTimeoutMs,
        httpAgent: { keepAlive: true, maxSockets: 64 },
        httpsAgent: { keepAlive: true, maxSockets: 64 },
      },
    });
  }

  /** The object key of file `name` of snapshot `id`. */
  keyOf(id: string, name: string): string {
    return `${this.config.prefix ? `${this.config.prefix}/` : ''}${id}/${name}`;
  }

  /** PUTs an object in one request, with Content-MD5 and `sha256` as its metadata. */
  async putObject(
    key: string,
    body: Buffer,
    contentType: string,
    sha256: string,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    await this.call(`PUT ${key}`, signal, (s) =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.config.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentMD5: md5(body).base64,
          ContentType: contentType,
          Metadata: { [SHA256_METADATA]: sha256 },
        }),
        { abortSignal: s },
      ),
    );
  }

  /** GETs a small object as text; a missing one goes to `onNotFound`. */
  getText<U>(key: string, signal: AbortSignal | undefined, onNotFound: () => U | Promise<U>): Promise<string | U> {
    return this.call(
      `GET ${key}`,
      signal,
      async (s) => {
        const res = await this.client.send(new GetObjectCommand({ Bucket: this.config.bucket, Key: key }), {
          abortSignal: s,
        });
        try {
          return await res.Body!.transformToString('utf8');
        } catch (err) {
          throw brokenConnection(this.endpoint, key, err);
        }
      },
      onNotFound,
    );
  }

  /** Every key under `prefix`, over all pages of ListObjectsV2; `what` names the request in errors. */
  async listKeys(prefix: string, what: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(what, undefined, (signal) =>
        this.client.send(
          new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: prefix, ContinuationToken: token }),
          { abortSignal: signal },
        ),
      );
      for (const obj of page.Contents ?? []) if (obj.Key) keys.push(obj.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  async head(key: string, signal: AbortSignal | undefined): Promise<RemoteObject | undefined> {
    return this.call(
      `HEAD ${key}`,
      signal,
      (s) => this.headRaw(key, s),
      () => undefined,
    );
  }

  async headRaw(key: string, signal: AbortSignal): Promise<RemoteObject> {
    const res = await this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: key }), {
      abortSignal: signal,
    });
    return { sizeBytes: res.ContentLength ?? -1, sha256: res.Metadata?.[SHA256_METADATA] };
  }

  /**
   * One request, retried while it fails transiently. SDK errors become EmbersErrors with
   * stable codes; a 404 (other than NoSuchBucket) goes to `onNotFound` when given.
   */
  call<T, U = never>(
    what: string,
    signal: AbortSignal | undefined,
    fn: (signal: AbortSignal) => Promise<T>,
    onNotFound?: () => U | Promise<U>,
  ): Promise<T | U> {
    return retry(
      async () => {
        const ac = new AbortController();
        const onAbort = () => ac.abort(signal!.reason);
        signal?.addEventListener('abort', onAbort, { once: true });
        try {
          return await fn(ac.signal);
        } catch (err) {
          if (signal?.aborted) throw signal.reason;
          if (isEmbersError(err)) throw err;
          if (onNotFound && httpStatus(err) === 404 && errorName(err) !== 'NoSuchBucket') return onNotFound();
          throw this.failure(err, what);
        } finally {
          signal?.removeEventListener('abort', onAbort);
        }
      },
      isTransientTransferError,
      this.config.retry,
      signal,
    );
  }

  /** Maps an SDK or network error to the catalogue. */
  private failure(err: unknown, what: string): EmbersError {
    const status = httpStatus(err);
    const name = errorName(err);
    const details = {
      remote: 's3' as const,
      endpoint: this.endpoint,
      bucket: this.config.bucket,
      request: what,
      status: status ?? null,
      serviceCode: name,
    };
    const text = err instanceof Error ? err.message : String(err);
    if (
      status === undefined &&
      (isNetworkErrorCode(errnoCode(err)) || name === 'TimeoutError' || /socket hang up|ECONNRESET|EPIPE/.test(text))
    ) {
      return EmbersError.of(
        'EMB_REMOTE_UNREACHABLE',
        { ...details, problem: 'connect', cause: errnoCode(err) ?? name },
        { cause: err },
      );
    }
    if (name === 'CredentialsProviderError') {
      return EmbersError.of('EMB_REMOTE_AUTH', { ...details, problem: 'no-credentials', reason: text }, { cause: err });
    }
    if (status === 401 || status === 403 || AUTH_CODES.has(name)) {
      return EmbersError.of('EMB_REMOTE_AUTH', details, { cause: err });
    }
    if (name === 'NoSuchBucket') {
      return EmbersError.of('EMB_REMOTE_NOT_FOUND', details, {
        cause: err,
        hint: 'create the bucket, or set the right one (EMBERS_S3_BUCKET)',
      });
    }
    if ((status !== undefined && (status >= 500 || status === 429)) || THROTTLE_CODES.has(name)) {
      const retryAfterMs = parseRetryAfter(
        (err as { $response?: { headers?: Record<string, string> } }).$response?.headers?.['retry-after'],
      );
      return EmbersError.of(
        'EMB_REMOTE_UNAVAILABLE',
        retryAfterMs === undefined ? details : { ...details, retryAfterMs },
        {
          cause: err,
        },
      );
    }
    return EmbersError.of(
      'EMB_REMOTE_REQUEST_FAILED',
      { ...details, problem: 'refused', reason: text },
      { cause: err },
    );
  }

  /** EMB_REMOTE_REQUEST_FAILED for an answer to `what` that embers cannot use, saying in `why` what is off. */
  unexpected(what: string, why: string): EmbersError {
    return EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
      problem: 'unexpected',
      reason: why,
      remote: 's3',
      endpoint: this.endpoint,
      bucket: this.config.bucket,
      request: what,
    });
  }
}

const AUTH_CODES = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'AccessDenied',
  'InvalidToken',
  'ExpiredToken',
  'InvalidClientTokenId',
]);
const THROTTLE_CODES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'RequestTimeout',
  'InternalError',
  'ServiceUnavailable',
]);

export function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function errorName(err: unknown): string {
  const e = err as { name?: string; Code?: string } | undefined;
  const name = e?.Code ?? e?.name ?? 'Error';
  const status = httpStatus(err);
  // An error answer without a body (to a HEAD) has no service code: name it by its status.
  return name === 'Unknown' && status !== undefined ? (STATUS_CODES[status] ?? name) : name;
}

function brokenConnection(endpoint: string, key: string, cause: unknown): EmbersError {
  return EmbersError.of('EMB_REMOTE_UNREACHABLE', { problem: 'broken', remote: 's3', endpoint, key }, { cause });
}

export function md5(data: Buffer): { hex: string; base64: string } {
  const digest = createHash('md5').update(data).digest();
  return { hex: digest.toString('hex'), base64: digest.toString('base64') };
}

/**
 * What every snapshot transfer (a push to or a pull from an S3-compatible service or a peer
 * node) shares: options and results, the transient failures that are retried, where resumable
 * state lives and the per-snapshot transfer lock, and `RangeSource`, what the downloader
 * (fetch-snapshot.ts) reads from. Progress is in transfer-progress.ts.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { acquireLock } from '../util/lock.js';
import { retryPolicy, type RetryOptions, type RetryPolicy } from '../util/retry.js';
import type { LocalSnapshotStore } from './local-store.js';
import type { SnapshotFile } from './manifest.js';
import type { TransferProgress } from './transfer-progress.js';

const MiB = 1024 * 1024;

export interface TransferOptions {
  /** Called as bytes move (at most about once per MiB per file, and when a part ends). */
  onProgress?(e: TransferProgress): void;
  /** Bytes per uploaded part or per ranged GET. S3 needs parts of at least 5 MiB (the last
   * part excepted) and at most 10,000 parts: a push raises the part size when a file needs it.
   * @default 8 MiB */
  partSizeBytes?: number;
  /** Parts or ranges in flight at once.
   * @default 4 */
  concurrency?: number;
  /** How transient failures (network errors, 5xx, throttling) are retried; 401/403/404 never are.
   * @default { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 } */
  retry?: RetryOptions;
  /** Cancels the transfer; what completed is kept for the next attempt to resume. */
  signal?: AbortSignal;
}

/** TransferOptions after defaults. */
export interface CompiledTransferOptions {
  onProgress: (e: TransferProgress) => void;
  partSizeBytes: number;
  concurrency: number;
  retry: RetryPolicy;
  signal: AbortSignal | undefined;
}

const DEFAULT_PART_SIZE_BYTES = 8 * MiB;
const DEFAULT_CONCURRENCY = 4;

export function compileTransferOptions(opts: TransferOptions = {}): CompiledTransferOptions {
  const partSizeBytes = opts.partSizeBytes ?? DEFAULT_PART_SIZE_BYTES;
  const concurrency = opts.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isSafeInteger(partSizeBytes) || partSizeBytes < 1) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'partSizeBytes',
      value: partSizeBytes,
      expected: 'a positive integer',
    });
  }
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'concurrency',
      value: concurrency,
      expected: 'an integer from 1 to 64',
    });
  }
  return {
    onProgress: opts.onProgress ?? (() => {}),
    partSizeBytes,
    concurrency,
    retry: retryPolicy(opts.retry),
    signal: opts.signal,
  };
}

export interface TransferResult {
  id: string;
  /** Bytes moved over the network by this call. */
  bytes: number;
  /** Bytes already in place (from an earlier, interrupted transfer, or already stored), not moved again. */
  resumedBytes: number;
  /** Bytes of the whole snapshot: its files and its manifest. */
  totalBytes: number;
  ms: number;
}

/** The transient failures a transfer retries: the remote could not be reached, or answered 5xx/429. */
export function isTransientTransferError(err: unknown): boolean {
  return isEmbersError(err, 'EMB_REMOTE_UNREACHABLE') || isEmbersError(err, 'EMB_REMOTE_UNAVAILABLE');
}

/** Where a store keeps resumable transfer state (journals, partial files, upload ids, locks). */
export function transfersDir(store: LocalSnapshotStore): string {
  return join(store.dir, '.transfers');
}

/**
 * One process at a time pushes or pulls a given snapshot with a given local store: a lock file
 * (`.transfers/<name>.lock`, holding the pid) beside the transfer state. A lock whose process
 * died is taken over. Returns the release function.
 */
export async function acquireTransferLock(store: LocalSnapshotStore, name: string): Promise<() => Promise<void>> {
  const dir = transfersDir(store);
  const path = join(dir, `${name}.lock`);
  await mkdir(dir, { recursive: true });
  return acquireLock(path, {
    busy: (pid) => EmbersError.of('EMB_SNAPSHOT_TRANSFER_BUSY', { transfer: name, store: store.dir, lock: path, pid }),
  });
}

/**
 * Where a snapshot's bytes come from. Implemented by the S3 store and by the peer client; the
 * downloader does the rest (ranges, resume, verification, publish). Implementations throw
 * EmbersErrors: EMB_REMOTE_UNREACHABLE / EMB_REMOTE_UNAVAILABLE for what may pass (those are
 * retried), anything else for what will not.
 */
export interface RangeSource {
  /** Names the source in messages and error details, e.g. `s3://bucket/prefix (http://host:9000)`. */
  readonly location: string;
  /** The manifest of `id` as stored at the source; EMB_REMOTE_NOT_FOUND when it has no such snapshot. */
  readManifest(id: string, signal: AbortSignal | undefined): Promise<string>;
  /**
   * The bytes [start, end) of `file` of snapshot `id` (start === end: only check that the file
   * exists). Throws EMB_SNAPSHOT_CORRUPT when the source lacks the file or holds it at another
   * size or digest than `file` says. Errors while the stream is read are taken as a broken
   * connection (retried).
   */
  readRange(
    id: string,
    file: SnapshotFile,
    start: number,
    end: number,
    signal: AbortSignal | undefined,
  ): Promise<AsyncIterable<Uint8Array>>;
}

/** The byte range [start, end) of range `index` (0-based) of a file. */
export function rangeOf(f: SnapshotFile, index: number, partSize: number): [number, number] {
  const start = index * partSize;
  return [start, Math.min(start + partSize, f.sizeBytes)];
}

/** A body of no bytes, for RangeSource.readRange(start === end). */
export async function* emptyBody(): AsyncIterable<Uint8Array> {
  /* nothing */
}

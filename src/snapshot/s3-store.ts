/**
 * The remote snapshot store on any S3-compatible service (AWS S3, MinIO, Ceph RGW, s3rver).
 *
 * Layout: every file of snapshot `id` is the object `<prefix>/<id>/<name>`, with its sha256 in
 * the object metadata (`x-amz-meta-sha256`); `<prefix>/<id>/manifest.json` is written last
 * and removed first, so a snapshot exists remotely exactly while its manifest does: a reader
 * never sees half an upload, nor half a removal.
 *
 * Pushes resume: files already uploaded (same size and sha256) are skipped, and a multipart
 * upload's id is kept in `.transfers/push-<id>-<target>.json` so a retry lists the parts the
 * service already holds (ListParts), checks each part's size and ETag (its MD5) against the
 * local bytes, and sends only the rest. Pulls go through the shared downloader (transfer.ts).
 */
import { createHash } from 'node:crypto';
import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { STATUS_CODES } from 'node:http';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { EmbersError, isEmbersError } from '../errors.js';
import { sha256, writeJsonAtomic } from '../util/fs.js';
import { parseRetryAfter, retry, retryPolicy, type RetryOptions, type RetryPolicy } from '../util/retry.js';
import { isHttpUrl } from '../util/url.js';
import type { LocalSnapshotStore } from './local-store.js';
import { WorkingSetStore, workingSetPath } from './working-set-store.js';
import { WORKING_SET_MANIFEST_PATH, fetchWorkingSet, type WorkingSetSource } from './working-set-transfer.js';
import { MANIFEST_NAME, isSnapshotId, parseManifest, requireSnapshotId, type SnapshotFile, type SnapshotManifest } from './manifest.js';
import {
  ProgressTracker,
  TransferLock,
  compileTransferOptions,
  emptyBody,
  fetchSnapshot,
  isTransientTransferError,
  networkErrorCode,
  rangeOf,
  runPool,
  snapshotSizes,
  transfersDir,
  type CompiledTransferOptions,
  type TransferOptions,
  type TransferResult,
} from './transfer.js';
import { crashPoint } from '../util/crash-point.js';

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last) and most parts per upload. */
const S3_MIN_PART_BYTES = 5 * MiB;
const S3_MAX_PARTS = 10_000;
/** The object metadata key holding a file's sha256 (sent as `x-amz-meta-sha256`). */
const SHA256_METADATA = 'sha256';

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
    throw new EmbersError('EMB_CONFIG_INVALID', `"${opts.bucket ?? ''}" is not an S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')`, {
      bucket: opts.bucket,
    });
  }
  if (opts.endpoint !== undefined && !isHttpUrl(opts.endpoint)) {
    throw new EmbersError('EMB_CONFIG_INVALID', `S3 endpoint "${opts.endpoint}" is not an http(s) URL`, { endpoint: opts.endpoint });
  }
  const prefix = (opts.prefix ?? 'snapshots').replace(/^\/+|\/+$/g, '');
  if (prefix.split('/').some((p) => p === '.' || p === '..') || /\/\//.test(prefix)) {
    throw new EmbersError('EMB_CONFIG_INVALID', `S3 prefix "${opts.prefix}" has an empty, "." or ".." segment`, { prefix: opts.prefix });
  }
  const c = opts.credentials;
  if (c && (!c.accessKeyId || !c.secretAccessKey)) {
    throw new EmbersError('EMB_CONFIG_INVALID', 'S3 credentials need both an access key id and a secret access key', {});
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

/**
 * S3 options from the environment: EMBERS_S3_ENDPOINT, EMBERS_S3_REGION, EMBERS_S3_BUCKET,
 * EMBERS_S3_PREFIX, EMBERS_S3_ACCESS_KEY_ID, EMBERS_S3_SECRET_ACCESS_KEY. Returns undefined
 * when none is set (no remote store configured); EMB_CONFIG_INVALID when the set is incomplete.
 */
export function s3StoreOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): S3StoreOptions | undefined {
  const v = (name: string) => (env[`EMBERS_S3_${name}`] ?? '').trim() || undefined;
  const names = ['ENDPOINT', 'REGION', 'BUCKET', 'PREFIX', 'ACCESS_KEY_ID', 'SECRET_ACCESS_KEY'];
  if (names.every((n) => v(n) === undefined)) return undefined;
  const bucket = v('BUCKET');
  if (!bucket)
    throw new EmbersError(
      'EMB_CONFIG_INVALID',
      'EMBERS_S3_BUCKET is not set, but other EMBERS_S3_* variables are',
      {},
      { hint: 'set EMBERS_S3_BUCKET, or unset every EMBERS_S3_* variable' },
    );
  const accessKeyId = v('ACCESS_KEY_ID');
  const secretAccessKey = v('SECRET_ACCESS_KEY');
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new EmbersError('EMB_CONFIG_INVALID', 'set both EMBERS_S3_ACCESS_KEY_ID and EMBERS_S3_SECRET_ACCESS_KEY, or neither', {});
  }
  return {
    endpoint: v('ENDPOINT'),
    region: v('REGION'),
    bucket,
    prefix: env.EMBERS_S3_PREFIX !== undefined ? env.EMBERS_S3_PREFIX.trim() : undefined,
    credentials: accessKeyId && secretAccessKey ? { accessKeyId, secretAccessKey } : undefined,
  };
}

/** What a push remembers of an unfinished multipart upload, so a retry resumes it. */
interface PushUpload {
  key: string;
  uploadId: string;
  partSizeBytes: number;
  sizeBytes: number;
  sha256: string;
}

interface PushStateData {
  format: 1;
  target: { endpoint: string; bucket: string; prefix: string };
  uploads: Record<string, PushUpload>;
}

interface RemoteObject {
  sizeBytes: number;
  sha256: string | undefined;
}

export class S3SnapshotStore {
  readonly config: S3StoreConfig;
  /** The SDK client (path-style, checksums only where S3 requires them, no SDK retries: this store retries). */
  readonly client: S3Client;
  /** The endpoint requests go to, for messages. */
  readonly endpoint: string;
  /** `s3://bucket/prefix`, for messages. */
  readonly location: string;
  /** Where this store's snapshot bytes come from (ranged reads): an early restore reads the memory file chunk by chunk through it. */
  readonly source: WorkingSetSource;

  constructor(options: S3StoreOptions) {
    this.config = resolveS3StoreOptions(options);
    const c = this.config;
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
    this.source = {
      location: `${this.location} (${this.endpoint})`,
      readManifest: (id, signal) => this.readManifest(id, signal),
      readRange: (id, file, start, end, signal) => this.readRange(id, file, start, end, signal),
      readWorkingSetManifest: (id, signal) => this.readWorkingSetManifest(id, signal),
    };
  }

  /** The object key of file `name` of snapshot `id`. */
  keyOf(id: string, name: string): string {
    return `${this.config.prefix ? `${this.config.prefix}/` : ''}${id}/${name}`;
  }

  /**
   * Uploads snapshot `id` of `store`: every file (multipart above `partSizeBytes`, parts in
   * parallel, Content-MD5 on each), its sha256 as object metadata, the manifest last. Resumes
   * an interrupted push; skips files the bucket already holds with the same size and sha256.
   * The local files are sent as they are: `pull` is what proves them against the manifest.
   */
  async push(store: LocalSnapshotStore, id: string, options: TransferOptions = {}): Promise<TransferResult> {
    const o = compileTransferOptions(options);
    if (o.partSizeBytes < S3_MIN_PART_BYTES) {
      throw new EmbersError('EMB_CONFIG_INVALID', `S3 parts must be at least ${S3_MIN_PART_BYTES} bytes (5 MiB), not ${o.partSizeBytes}`, {
        partSizeBytes: o.partSizeBytes,
      });
    }
    const started = performance.now();
    const { manifest, bytes: manifestBytes } = await store.getWithBytes(id);
    const dir = store.pathOf(id);
    const lock = await TransferLock.acquire(store, `push-${id}`);
    try {
      const state = await PushState.load(store, id, { endpoint: this.endpoint, bucket: this.config.bucket, prefix: this.config.prefix });
      const sets = new WorkingSetStore(store);
      const ws = await sets.getWithBytes(id);
      const sizes = snapshotSizes(manifest, manifestBytes.length);
      for (const f of ws?.manifest.files ?? []) sizes.set(workingSetPath(f.name), f.sizeBytes);
      if (ws) sizes.set(WORKING_SET_MANIFEST_PATH, ws.bytes.length);
      const tracker = new ProgressTracker('push', id, sizes, o.onProgress);
      const counts = { bytes: 0, resumedBytes: 0 };
      for (const f of manifest.files) {
        await this.pushFile(join(dir, f.name), id, f, state, tracker, counts, o);
      }
      await crashPoint('snapshot.push.before-manifest');
      // Last: from this moment the snapshot exists remotely.
      await this.call(`PUT ${this.keyOf(id, MANIFEST_NAME)}`, o.signal, (signal) =>
        this.client.send(
          new PutObjectCommand({
            Bucket: this.config.bucket,
            Key: this.keyOf(id, MANIFEST_NAME),
            Body: manifestBytes,
            ContentLength: manifestBytes.length,
            ContentMD5: md5(manifestBytes).base64,
            ContentType: 'application/json',
            Metadata: { [SHA256_METADATA]: sha256(manifestBytes) },
          }),
          { abortSignal: signal },
        ),
      );
      counts.bytes += manifestBytes.length;
      tracker.add(MANIFEST_NAME, manifestBytes.length);
      await crashPoint('snapshot.push.after-manifest');
      // The working set, if recorded, after the snapshot (it may be recorded later: a push then
      // finds the snapshot's objects in place and moves only the working set), its manifest last.
      if (ws) {
        for (const f of ws.manifest.files) {
          const remote = { ...f, name: workingSetPath(f.name) };
          await this.pushFile(join(sets.dirOf(id), f.name), id, remote, state, tracker, counts, o);
        }
        await this.putSmall(this.keyOf(id, WORKING_SET_MANIFEST_PATH), ws.bytes, 'application/json', o.signal);
        counts.bytes += ws.bytes.length;
        tracker.add(WORKING_SET_MANIFEST_PATH, ws.bytes.length);
      }
      await state.clear();
      return { id, bytes: counts.bytes, resumedBytes: counts.resumedBytes, totalBytes: tracker.bytesTotal, ms: performance.now() - started };
    } finally {
      await lock.release();
    }
  }

  /**
   * Downloads snapshot `id` into `store` under the same id: manifest first, then parallel
   * ranged GETs, resumable, every file checked against the manifest, published atomically.
   */
  async pull(store: LocalSnapshotStore, id: string, options: TransferOptions = {}): Promise<TransferResult> {
    const result = await fetchSnapshot(store, this.source, id, options);
    const ws = await this.pullWorkingSet(store, id, options);
    return ws ? { ...result, bytes: result.bytes + ws.bytes } : result;
  }

  /** Fetches the working set of local snapshot `id`, if the bucket has one and the store does not (see fetchWorkingSet). */
  pullWorkingSet(store: LocalSnapshotStore, id: string, options: TransferOptions = {}): Promise<{ bytes: number } | undefined> {
    return fetchWorkingSet(store, this.source, id, options);
  }

  /** The ids of the snapshots in the bucket (those whose manifest exists), sorted. */
  async list(): Promise<string[]> {
    const base = this.config.prefix ? `${this.config.prefix}/` : '';
    const ids: string[] = [];
    for (const key of await this.listKeys(base, `LIST ${this.location}`)) {
      const rest = key.slice(base.length).split('/');
      if (rest.length === 2 && rest[1] === MANIFEST_NAME && isSnapshotId(rest[0])) ids.push(rest[0]);
    }
    return ids.sort();
  }

  /** The manifest of snapshot `id` in the bucket, parsed and checked (to find a snapshot by what it runs without fetching it). */
  async manifest(id: string): Promise<SnapshotManifest> {
    return parseManifest(await this.readManifest(id, undefined), `${this.location}/${id}/${MANIFEST_NAME}`);
  }

  /** True when the bucket holds snapshot `id` (its manifest exists). */
  async has(id: string): Promise<boolean> {
    requireSnapshotId(id);
    return (await this.head(this.keyOf(id, MANIFEST_NAME), undefined)) !== undefined;
  }

  /** Removes snapshot `id`: its manifest first (so it stops existing at once), then its files. */
  async remove(id: string): Promise<void> {
    requireSnapshotId(id);
    const keys = await this.listKeys(this.keyOf(id, ''), `LIST ${this.keyOf(id, '')}`);
    if (keys.length === 0)
      throw new EmbersError('EMB_REMOTE_NOT_FOUND', `no snapshot ${id} in ${this.location} (${this.endpoint})`, {
        id,
        endpoint: this.endpoint,
        bucket: this.config.bucket,
      });
    const del = (key: string) =>
      this.call(`DELETE ${key}`, undefined, (signal) =>
        this.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: key }), { abortSignal: signal }),
      );
    const manifestKey = this.keyOf(id, MANIFEST_NAME);
    if (keys.includes(manifestKey)) await del(manifestKey);
    await runPool(
      keys.filter((k) => k !== manifestKey),
      8,
      async (key) => {
        await del(key);
      },
    );
  }

  /** Releases the client's sockets. */
  close(): void {
    this.client.destroy();
  }

  // ---- push ----

  private async pushFile(
    path: string,
    id: string,
    f: SnapshotFile,
    state: PushState,
    tracker: ProgressTracker,
    counts: { bytes: number; resumedBytes: number },
    o: CompiledTransferOptions,
  ): Promise<void> {
    const key = this.keyOf(id, f.name);
    const there = await this.head(key, o.signal);
    if (there && there.sizeBytes === f.sizeBytes && there.sha256 === f.sha256) {
      counts.resumedBytes += f.sizeBytes;
      tracker.add(f.name, f.sizeBytes);
      await state.drop(f.name);
      return;
    }
    const fh = await open(path, 'r');
    try {
      if (f.sizeBytes <= o.partSizeBytes) {
        const body = await readAt(fh, 0, f.sizeBytes, path);
        await this.call(`PUT ${key}`, o.signal, (signal) =>
          this.client.send(
            new PutObjectCommand({
              Bucket: this.config.bucket,
              Key: key,
              Body: body,
              ContentLength: body.length,
              ContentMD5: md5(body).base64,
              ContentType: 'application/octet-stream',
              Metadata: { [SHA256_METADATA]: f.sha256 },
            }),
            { abortSignal: signal },
          ),
        );
        counts.bytes += body.length;
        tracker.add(f.name, body.length);
        await state.drop(f.name);
        await crashPoint('snapshot.push.after-part');
        return;
      }
      await this.pushMultipart(fh, path, key, f, state, tracker, counts, o);
    } finally {
      await fh.close();
    }
  }

  private async pushMultipart(
    fh: FileHandle,
    path: string,
    key: string,
    f: SnapshotFile,
    state: PushState,
    tracker: ProgressTracker,
    counts: { bytes: number; resumedBytes: number },
    o: CompiledTransferOptions,
  ): Promise<void> {
    const { bucket } = this.config;
    const etags = new Map<number, string>();
    let upload = state.get(f.name);
    if (upload && (upload.key !== key || upload.sha256 !== f.sha256 || upload.sizeBytes !== f.sizeBytes)) upload = undefined;
    if (upload) {
      const parts = await this.listParts(key, upload.uploadId, o.signal);
      if (!parts)
        upload = undefined; // expired or aborted: start again
      else {
        const partSize = upload.partSizeBytes;
        for (const p of parts) {
          const [start, end] = rangeOf(f, p.number - 1, partSize);
          if (end <= start || p.sizeBytes !== end - start) continue;
          const local = md5(await readAt(fh, start, end - start, path)).hex;
          if (p.etag === local) {
            etags.set(p.number, `"${local}"`);
            counts.resumedBytes += end - start;
            tracker.add(f.name, end - start);
          }
        }
      }
    }
    if (!upload) {
      const created = await this.call(`CREATE-MULTIPART ${key}`, o.signal, (signal) =>
        this.client.send(
          new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ContentType: 'application/octet-stream', Metadata: { [SHA256_METADATA]: f.sha256 } }),
          { abortSignal: signal },
        ),
      );
      if (!created.UploadId) throw this.unexpected(`CREATE-MULTIPART ${key}`, 'the answer has no UploadId');
      // S3 allows 10,000 parts: a bigger file gets bigger parts (whole MiBs).
      const partSizeBytes = Math.max(o.partSizeBytes, Math.ceil(f.sizeBytes / S3_MAX_PARTS / MiB) * MiB);
      upload = { key, uploadId: created.UploadId, partSizeBytes, sizeBytes: f.sizeBytes, sha256: f.sha256 };
      await state.set(f.name, upload);
    }
    const { uploadId, partSizeBytes } = upload;
    const partCount = Math.ceil(f.sizeBytes / partSizeBytes);
    const missing: number[] = [];
    for (let n = 1; n <= partCount; n++) if (!etags.has(n)) missing.push(n);
    await runPool(
      missing,
      o.concurrency,
      async (n, poolSignal) => {
        const [start, end] = rangeOf(f, n - 1, partSizeBytes);
        const body = await readAt(fh, start, end - start, path);
        const sum = md5(body);
        const res = await this.call(`PUT ${key} part ${n}`, poolSignal, async (signal) => {
          const r = await this.client.send(
            new UploadPartCommand({
              Bucket: bucket,
              Key: key,
              UploadId: uploadId,
              PartNumber: n,
              Body: body,
              ContentLength: body.length,
              ContentMD5: sum.base64,
            }),
            { abortSignal: signal },
          );
          const etag = r.ETag?.replace(/"/g, '');
          if (etag && /^[0-9a-f]{32}$/.test(etag) && etag !== sum.hex) {
            throw new EmbersError('EMB_REMOTE_UNAVAILABLE', `part ${n} of ${key} arrived altered at ${this.endpoint} (ETag ${etag}, sent MD5 ${sum.hex})`, {
              key,
              part: n,
              endpoint: this.endpoint,
            });
          }
          return r;
        });
        etags.set(n, res.ETag ?? `"${sum.hex}"`);
        counts.bytes += body.length;
        tracker.add(f.name, body.length);
        await crashPoint('snapshot.push.after-part');
      },
      o.signal,
    );
    const parts = [...etags].sort((a, b) => a[0] - b[0]).map(([PartNumber, ETag]) => ({ PartNumber, ETag }));
    await this.call(
      `COMPLETE-MULTIPART ${key}`,
      o.signal,
      (signal) =>
        this.client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }), {
          abortSignal: signal,
        }),
      async () => {
        // NoSuchUpload: an earlier attempt may have completed it before its answer was lost.
        const there = await this.head(key, o.signal);
        if (there && there.sizeBytes === f.sizeBytes && there.sha256 === f.sha256) return undefined;
        throw this.unexpected(`COMPLETE-MULTIPART ${key}`, `the service no longer knows upload ${uploadId}`);
      },
    );
    await state.drop(f.name);
  }

  /** The parts of an unfinished multipart upload; undefined when the service no longer has it. */
  private async listParts(
    key: string,
    uploadId: string,
    signal: AbortSignal | undefined,
  ): Promise<{ number: number; sizeBytes: number; etag: string }[] | undefined> {
    const out: { number: number; sizeBytes: number; etag: string }[] = [];
    let marker: string | undefined;
    for (;;) {
      const page = await this.call(
        `LIST-PARTS ${key}`,
        signal,
        (s) =>
          this.client.send(new ListPartsCommand({ Bucket: this.config.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }), { abortSignal: s }),
        () => undefined,
      );
      if (!page) return undefined;
      for (const p of page.Parts ?? []) {
        if (p.PartNumber && p.Size !== undefined && p.ETag) out.push({ number: p.PartNumber, sizeBytes: p.Size, etag: p.ETag.replace(/"/g, '') });
      }
      if (!page.IsTruncated || !page.NextPartNumberMarker) return out;
      marker = String(page.NextPartNumberMarker);
    }
  }

  // ---- pull (the RangeSource) ----

  private async readManifest(id: string, signal: AbortSignal | undefined): Promise<string> {
    requireSnapshotId(id);
    const key = this.keyOf(id, MANIFEST_NAME);
    return this.call(
      `GET ${key}`,
      signal,
      async (s) => {
        const res = await this.client.send(new GetObjectCommand({ Bucket: this.config.bucket, Key: key }), { abortSignal: s });
        try {
          return await res.Body!.transformToString('utf8');
        } catch (err) {
          throw brokenConnection(this.endpoint, key, err);
        }
      },
      () => {
        throw new EmbersError('EMB_REMOTE_NOT_FOUND', `no snapshot ${id} in ${this.location} (${this.endpoint}): ${key} does not exist`, {
          id,
          key,
          endpoint: this.endpoint,
          bucket: this.config.bucket,
        });
      },
    );
  }

  private async readWorkingSetManifest(id: string, signal: AbortSignal | undefined): Promise<string | undefined> {
    requireSnapshotId(id);
    const key = this.keyOf(id, WORKING_SET_MANIFEST_PATH);
    return this.call(
      `GET ${key}`,
      signal,
      async (s) => {
        const res = await this.client.send(new GetObjectCommand({ Bucket: this.config.bucket, Key: key }), { abortSignal: s });
        try {
          return await res.Body!.transformToString('utf8');
        } catch (err) {
          throw brokenConnection(this.endpoint, key, err);
        }
      },
      () => undefined,
    );
  }

  /** PUTs a small object in one request, with Content-MD5 and its sha256 as metadata. */
  private async putSmall(key: string, body: Buffer, contentType: string, signal: AbortSignal | undefined): Promise<void> {
    await this.call(`PUT ${key}`, signal, (s) =>
      this.client.send(
        new PutObjectCommand({
          Bucket: this.config.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentMD5: md5(body).base64,
          ContentType: contentType,
          Metadata: { [SHA256_METADATA]: sha256(body) },
        }),
        { abortSignal: s },
      ),
    );
  }

  private async readRange(id: string, f: SnapshotFile, start: number, end: number, signal: AbortSignal | undefined): Promise<AsyncIterable<Uint8Array>> {
    const key = this.keyOf(id, f.name);
    const missing = () => {
      throw new EmbersError(
        'EMB_SNAPSHOT_CORRUPT',
        `remote snapshot ${id} in ${this.location} is incomplete: its manifest lists ${f.name}, but the object ${key} does not exist`,
        { id, file: f.name, key, endpoint: this.endpoint, reason: 'missing' },
      );
    };
    const mismatch = (what: string) =>
      new EmbersError('EMB_SNAPSHOT_CORRUPT', `remote snapshot ${id} in ${this.location}: the object ${key} ${what} (corrupt or tampered)`, {
        id,
        file: f.name,
        key,
        endpoint: this.endpoint,
      });
    if (start === end) {
      const there = await this.call(`HEAD ${key}`, signal, (s) => this.headRaw(key, s), missing);
      if (there.sizeBytes !== f.sizeBytes) throw mismatch(`is ${there.sizeBytes} bytes, the manifest says ${f.sizeBytes}`);
      return emptyBody();
    }
    const res = await this.call(
      `GET ${key} bytes ${start}-${end - 1}`,
      signal,
      async (s) => {
        try {
          return await this.client.send(new GetObjectCommand({ Bucket: this.config.bucket, Key: key, Range: `bytes=${start}-${end - 1}` }), { abortSignal: s });
        } catch (err) {
          if (httpStatus(err) === 416) throw mismatch(`is shorter than the ${f.sizeBytes} bytes the manifest says`);
          throw err;
        }
      },
      missing,
    );
    const body = res.Body as unknown as AsyncIterable<Uint8Array> & { destroy?(): void };
    const fail = (err: EmbersError) => {
      body.destroy?.();
      throw err;
    };
    const total = /^bytes \d+-\d+\/(\d+)$/.exec(res.ContentRange ?? '')?.[1];
    if (total !== undefined && Number(total) !== f.sizeBytes) fail(mismatch(`is ${total} bytes, the manifest says ${f.sizeBytes}`));
    if (total === undefined && !(start === 0 && end === f.sizeBytes && res.ContentLength === f.sizeBytes)) {
      fail(this.unexpected(`GET ${key}`, `the answer to a ranged GET (bytes=${start}-${end - 1}) has no Content-Range; the service ignored the Range header`));
    }
    const stored = res.Metadata?.[SHA256_METADATA];
    if (stored !== undefined && stored !== f.sha256) fail(mismatch(`carries sha256 ${stored}, the manifest says ${f.sha256}`));
    return body;
  }

  // ---- requests ----

  /** Every key under `prefix`, over all pages of ListObjectsV2; `what` names the request in errors. */
  private async listKeys(prefix: string, what: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.call(what, undefined, (signal) =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.config.bucket, Prefix: prefix, ContinuationToken: token }), { abortSignal: signal }),
      );
      for (const obj of page.Contents ?? []) if (obj.Key) keys.push(obj.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  private async head(key: string, signal: AbortSignal | undefined): Promise<RemoteObject | undefined> {
    return this.call(
      `HEAD ${key}`,
      signal,
      (s) => this.headRaw(key, s),
      () => undefined,
    );
  }

  private async headRaw(key: string, signal: AbortSignal): Promise<RemoteObject> {
    const res = await this.client.send(new HeadObjectCommand({ Bucket: this.config.bucket, Key: key }), { abortSignal: signal });
    return { sizeBytes: res.ContentLength ?? -1, sha256: res.Metadata?.[SHA256_METADATA] };
  }

  /**
   * One request, retried while it fails transiently. SDK errors become EmbersErrors with
   * stable codes; a 404 (other than NoSuchBucket) goes to `onNotFound` when given.
   */
  private call<T, U = never>(
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
    const details = { endpoint: this.endpoint, bucket: this.config.bucket, request: what, status: status ?? null, serviceCode: name };
    const text = err instanceof Error ? err.message : String(err);
    if (status === undefined && (NETWORK_CODES.has(networkErrorCode(err) ?? '') || name === 'TimeoutError' || /socket hang up|ECONNRESET|EPIPE/.test(text))) {
      return new EmbersError(
        'EMB_REMOTE_UNREACHABLE',
        `cannot reach the S3 endpoint ${this.endpoint} (${networkErrorCode(err) ?? name}) for ${what}`,
        { ...details, cause: networkErrorCode(err) ?? name },
        { cause: err },
      );
    }
    if (name === 'CredentialsProviderError') {
      return new EmbersError('EMB_REMOTE_AUTH', `no S3 credentials for ${this.endpoint}: ${text}`, details, { cause: err });
    }
    if (status === 401 || status === 403 || AUTH_CODES.has(name)) {
      return new EmbersError('EMB_REMOTE_AUTH', `the S3 endpoint ${this.endpoint} refused the credentials for ${what} (${status ?? '?'} ${name})`, details, {
        cause: err,
      });
    }
    if (name === 'NoSuchBucket') {
      return new EmbersError('EMB_REMOTE_NOT_FOUND', `the bucket ${this.config.bucket} does not exist at ${this.endpoint}`, details, {
        cause: err,
        hint: 'create the bucket, or set the right one (EMBERS_S3_BUCKET)',
      });
    }
    if ((status !== undefined && (status >= 500 || status === 429)) || THROTTLE_CODES.has(name)) {
      const retryAfterMs = parseRetryAfter((err as { $response?: { headers?: Record<string, string> } }).$response?.headers?.['retry-after']);
      return new EmbersError(
        'EMB_REMOTE_UNAVAILABLE',
        `the S3 endpoint ${this.endpoint} failed ${what} (${status ?? '?'} ${name})`,
        retryAfterMs === undefined ? details : { ...details, retryAfterMs },
        { cause: err },
      );
    }
    return new EmbersError(
      'EMB_REMOTE_REQUEST_FAILED',
      `the S3 endpoint ${this.endpoint} refused ${what} (${status ?? 'no status'} ${name}: ${text})`,
      details,
      { cause: err },
    );
  }

  private unexpected(what: string, why: string): EmbersError {
    return new EmbersError('EMB_REMOTE_REQUEST_FAILED', `the S3 endpoint ${this.endpoint}, ${what}: ${why}`, {
      endpoint: this.endpoint,
      bucket: this.config.bucket,
      request: what,
    });
  }
}

/** Remembers unfinished multipart uploads of one snapshot to one target, across processes. */
class PushState {
  private constructor(
    private readonly path: string,
    private readonly data: PushStateData,
  ) {}

  static async load(store: LocalSnapshotStore, id: string, target: PushStateData['target']): Promise<PushState> {
    const tag = sha256(`${target.endpoint}\n${target.bucket}\n${target.prefix}`).slice(0, 12);
    const path = join(transfersDir(store), `push-${id}-${tag}.json`);
    const saved = await readFile(path, 'utf8')
      .then((t) => JSON.parse(t) as PushStateData)
      .catch(() => undefined);
    const same =
      saved?.format === 1 && saved.target?.endpoint === target.endpoint && saved.target.bucket === target.bucket && saved.target.prefix === target.prefix;
    return new PushState(path, same && saved.uploads ? saved : { format: 1, target, uploads: {} });
  }

  get(name: string): PushUpload | undefined {
    return this.data.uploads[name];
  }

  async set(name: string, upload: PushUpload): Promise<void> {
    this.data.uploads[name] = upload;
    await writeJsonAtomic(this.path, this.data);
  }

  async drop(name: string): Promise<void> {
    if (!(name in this.data.uploads)) return;
    delete this.data.uploads[name];
    await writeJsonAtomic(this.path, this.data);
  }

  async clear(): Promise<void> {
    await rm(this.path, { force: true });
  }
}

const NETWORK_CODES = new Set([
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
]);
const AUTH_CODES = new Set(['InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'InvalidToken', 'ExpiredToken', 'InvalidClientTokenId']);
const THROTTLE_CODES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout', 'InternalError', 'ServiceUnavailable']);

function httpStatus(err: unknown): number | undefined {
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
  return new EmbersError('EMB_REMOTE_UNREACHABLE', `the connection to ${endpoint} broke while reading ${key}`, { endpoint, key }, { cause });
}

function md5(data: Buffer): { hex: string; base64: string } {
  const digest = createHash('md5').update(data).digest();
  return { hex: digest.toString('hex'), base64: digest.toString('base64') };
}

/** Reads exactly `length` bytes at `position` of the local file `path`. */
async function readAt(fh: FileHandle, position: number, length: number, path: string): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) {
      throw new EmbersError(
        'EMB_SNAPSHOT_CORRUPT',
        `${path} is shorter than its snapshot manifest says (it ends at ${position + done}, before ${position + length})`,
        { path, position, length },
      );
    }
    done += bytesRead;
  }
  return buf;
}

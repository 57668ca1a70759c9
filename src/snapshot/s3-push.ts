/**
 * Uploading a snapshot to S3. Every file goes up with its sha256 as object metadata (multipart
 * above the part size, parts in parallel, Content-MD5 on each), the manifest last: from that
 * moment the snapshot exists remotely. Then the working set, if recorded, its manifest last.
 *
 * Pushes resume: files already uploaded (same size and sha256) are skipped, and a multipart
 * upload's id is kept in `.transfers/push-<id>-<target>.json` so a retry lists the parts the
 * service already holds (ListParts), checks each part's size and ETag (its MD5) against the
 * local bytes, and sends only the rest.
 */
import { open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  ListPartsCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { EmbersError } from '../errors.js';
import { crashPoint } from '../util/crash-point.js';
import { sha256, writeJsonAtomic } from '../util/fs.js';
import { runPool } from '../util/worker-pool.js';
import type { LocalSnapshotStore } from './local-store.js';
import { MANIFEST_NAME, type SnapshotFile } from './manifest.js';
import { SHA256_METADATA, md5, type S3Bucket } from './s3-bucket.js';
import { ProgressTracker, snapshotSizes } from './transfer-progress.js';
import {
  acquireTransferLock,
  compileTransferOptions,
  rangeOf,
  transfersDir,
  type CompiledTransferOptions,
  type TransferOptions,
  type TransferResult,
} from './transfer.js';
import { WorkingSetStore, workingSetPath } from './working-set-store.js';
import { WORKING_SET_MANIFEST_PATH } from './working-set-transfer.js';

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last) and most parts per upload. */
const S3_MIN_PART_BYTES = 5 * MiB;
const S3_MAX_PARTS = 10_000;

/** What one push carries from file to file. */
interface PushContext {
  bucket: S3Bucket;
  /** The snapshot pushed. */
  id: string;
  state: PushState;
  tracker: ProgressTracker;
  /** Bytes sent by this push, and bytes found already in place. */
  counts: { bytes: number; resumedBytes: number };
  o: CompiledTransferOptions;
}

/**
 * Uploads snapshot `id` of `store` to `bucket`: every file, its sha256 as object metadata, the
 * manifest last. Resumes an interrupted push; skips files the bucket already holds with the
 * same size and sha256. The local files are sent as they are: a pull is what proves them
 * against the manifest.
 */
export async function pushSnapshot(
  bucket: S3Bucket,
  store: LocalSnapshotStore,
  id: string,
  options: TransferOptions = {},
): Promise<TransferResult> {
  const o = compileTransferOptions(options);
  if (o.partSizeBytes < S3_MIN_PART_BYTES) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'S3 part size (partSizeBytes)',
      value: o.partSizeBytes,
      expected: `at least ${S3_MIN_PART_BYTES} bytes (5 MiB)`,
    });
  }
  const started = performance.now();
  const { manifest, bytes: manifestBytes } = await store.getWithBytes(id);
  const dir = store.pathOf(id);
  const release = await acquireTransferLock(store, `push-${id}`);
  try {
    const state = await PushState.load(store, id, {
      endpoint: bucket.endpoint,
      bucket: bucket.config.bucket,
      prefix: bucket.config.prefix,
    });
    const sets = new WorkingSetStore(store);
    const ws = await sets.getWithBytes(id);
    const sizes = snapshotSizes(manifest, manifestBytes.length);
    for (const f of ws?.manifest.files ?? []) sizes.set(workingSetPath(f.name), f.sizeBytes);
    if (ws) sizes.set(WORKING_SET_MANIFEST_PATH, ws.bytes.length);
    const ctx: PushContext = {
      bucket,
      id,
      state,
      tracker: new ProgressTracker('push', id, sizes, o.onProgress),
      counts: { bytes: 0, resumedBytes: 0 },
      o,
    };
    for (const f of manifest.files) {
      await pushFile(ctx, join(dir, f.name), f);
    }
    await crashPoint('snapshot.push.before-manifest');
    // Last: from this moment the snapshot exists remotely.
    await putWhole(ctx, bucket.keyOf(id, MANIFEST_NAME), MANIFEST_NAME, manifestBytes);
    await crashPoint('snapshot.push.after-manifest');
    // The working set, if recorded, after the snapshot (it may be recorded later: a push then
    // finds the snapshot's objects in place and moves only the working set), its manifest last.
    if (ws) {
      for (const f of ws.manifest.files) {
        await pushFile(ctx, join(sets.dirOf(id), f.name), { ...f, name: workingSetPath(f.name) });
      }
      await putWhole(ctx, bucket.keyOf(id, WORKING_SET_MANIFEST_PATH), WORKING_SET_MANIFEST_PATH, ws.bytes);
    }
    await state.clear();
    const { counts, tracker } = ctx;
    return {
      id,
      bytes: counts.bytes,
      resumedBytes: counts.resumedBytes,
      totalBytes: tracker.bytesTotal,
      ms: performance.now() - started,
    };
  } finally {
    await release();
  }
}

/** PUTs a manifest (JSON, in one request) and counts it as file `name` of the push. */
async function putWhole(ctx: PushContext, key: string, name: string, body: Buffer): Promise<void> {
  await ctx.bucket.putObject(key, body, 'application/json', sha256(body), ctx.o.signal);
  ctx.counts.bytes += body.length;
  ctx.tracker.add(name, body.length);
}

/** Uploads the local file `path` as file `f` of the snapshot, unless the bucket holds it already. */
async function pushFile(ctx: PushContext, path: string, f: SnapshotFile): Promise<void> {
  const { bucket, state, tracker, counts, o } = ctx;
  const key = bucket.keyOf(ctx.id, f.name);
  const there = await bucket.head(key, o.signal);
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
      await bucket.putObject(key, body, 'application/octet-stream', f.sha256, o.signal);
      counts.bytes += body.length;
      tracker.add(f.name, body.length);
      await state.drop(f.name);
      await crashPoint('snapshot.push.after-part');
      return;
    }
    await pushMultipart(ctx, fh, path, key, f);
  } finally {
    await fh.close();
  }
}

/** Uploads a file in parts, resuming the multipart upload an earlier push left (its parts checked against the local bytes). */
async function pushMultipart(
  ctx: PushContext,
  fh: FileHandle,
  path: string,
  key: string,
  f: SnapshotFile,
): Promise<void> {
  const { bucket: b, state, tracker, counts, o } = ctx;
  const bucket = b.config.bucket;
  const etags = new Map<number, string>();
  let upload = state.get(f.name);
  if (upload && (upload.key !== key || upload.sha256 !== f.sha256 || upload.sizeBytes !== f.sizeBytes))
    upload = undefined;
  if (upload) {
    const parts = await listParts(b, key, upload.uploadId, o.signal);
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
    const created = await b.call(`CREATE-MULTIPART ${key}`, o.signal, (signal) =>
      b.client.send(
        new CreateMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          ContentType: 'application/octet-stream',
          Metadata: { [SHA256_METADATA]: f.sha256 },
        }),
        { abortSignal: signal },
      ),
    );
    if (!created.UploadId) throw b.unexpected(`CREATE-MULTIPART ${key}`, 'the answer has no UploadId');
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
      const res = await b.call(`PUT ${key} part ${n}`, poolSignal, async (signal) => {
        const r = await b.client.send(
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
          throw EmbersError.of('EMB_REMOTE_UNAVAILABLE', {
            key,
            part: n,
            endpoint: b.endpoint,
            etag,
            md5: sum.hex,
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
  const parts = [...etags].sort((x, y) => x[0] - y[0]).map(([PartNumber, ETag]) => ({ PartNumber, ETag }));
  await b.call(
    `COMPLETE-MULTIPART ${key}`,
    o.signal,
    (signal) =>
      b.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
        }),
        {
          abortSignal: signal,
        },
      ),
    async () => {
      // NoSuchUpload: an earlier attempt may have completed it before its answer was lost.
      const there = await b.head(key, o.signal);
      if (there && there.sizeBytes === f.sizeBytes && there.sha256 === f.sha256) return undefined;
      throw b.unexpected(`COMPLETE-MULTIPART ${key}`, `the service no longer knows upload ${uploadId}`);
    },
  );
  await state.drop(f.name);
}

/** The parts of an unfinished multipart upload; undefined when the service no longer has it. */
async function listParts(
  b: S3Bucket,
  key: string,
  uploadId: string,
  signal: AbortSignal | undefined,
): Promise<{ number: number; sizeBytes: number; etag: string }[] | undefined> {
  const out: { number: number; sizeBytes: number; etag: string }[] = [];
  let marker: string | undefined;
  for (;;) {
    const page = await b.call(
      `LIST-PARTS ${key}`,
      signal,
      (s) =>
        b.client.send(
          new ListPartsCommand({ Bucket: b.config.bucket, Key: key, UploadId: uploadId, PartNumberMarker: marker }),
          { abortSignal: s },
        ),
      () => undefined,
    );
    if (!page) return undefined;
    for (const p of page.Parts ?? []) {
      if (p.PartNumber && p.Size !== undefined && p.ETag)
        out.push({ number: p.PartNumber, sizeBytes: p.Size, etag: p.ETag.replace(/"/g, '') });
    }
    if (!page.IsTruncated || !page.NextPartNumberMarker) return out;
    marker = String(page.NextPartNumberMarker);
  }
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
      saved?.format === 1 &&
      saved.target?.endpoint === target.endpoint &&
      saved.target.bucket === target.bucket &&
      saved.target.prefix === target.prefix;
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

/** Reads exactly `length` bytes at `position` of the local file `path`. */
async function readAt(fh: FileHandle, position: number, length: number, path: string): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) {
      throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
        problem: 'short-file',
        path,
        position,
        length,
        actualBytes: position + done,
      });
    }
    done += bytesRead;
  }
  return buf;
}

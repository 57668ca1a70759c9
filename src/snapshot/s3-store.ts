/**
 * The remote snapshot store on any S3-compatible service (AWS S3, MinIO, Ceph RGW, s3rver).
 *
 * Layout: every file of snapshot `id` is the object `<prefix>/<id>/<name>`, with its sha256 in
 * the object metadata (`x-amz-meta-sha256`); `<prefix>/<id>/manifest.json` is written last
 * and removed first, so a snapshot exists remotely exactly while its manifest does: a reader
 * never sees half an upload, nor half a removal.
 *
 * This file is the store's face; the options are in s3-config.ts, the requests and their errors
 * in s3-bucket.ts, the resumable upload in s3-push.ts, and what a pull reads in s3-pull.ts
 * (through the shared downloader, fetch-snapshot.ts).
 */
import { DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { EmbersError } from '../errors.js';
import { runPool } from '../util/worker-pool.js';
import type { LocalSnapshotStore } from './local-store.js';
import { MANIFEST_NAME, isSnapshotId, parseManifest, requireSnapshotId, type SnapshotManifest } from './manifest.js';
import { S3Bucket } from './s3-bucket.js';
import { resolveS3StoreOptions, type S3StoreConfig, type S3StoreOptions } from './s3-config.js';
import { readS3Manifest, s3Source } from './s3-pull.js';
import { pushSnapshot } from './s3-push.js';
import type { TransferOptions, TransferResult } from './transfer.js';
import { SnapshotRemote, type WorkingSetSource } from './working-set-transfer.js';

export { resolveS3StoreOptions, type S3StoreConfig, type S3StoreOptions } from './s3-config.js';

export class S3SnapshotStore extends SnapshotRemote {
  readonly config: S3StoreConfig;
  /** The SDK client (path-style, checksums only where S3 requires them, no SDK retries: this store retries). */
  readonly client: S3Client;
  /** The endpoint requests go to, for messages. */
  readonly endpoint: string;
  /** `s3://bucket/prefix`, for messages. */
  readonly location: string;
  private readonly bucket: S3Bucket;
  readonly source: WorkingSetSource;

  constructor(options: S3StoreOptions) {
    super();
    this.config = resolveS3StoreOptions(options);
    this.bucket = new S3Bucket(this.config);
    this.client = this.bucket.client;
    this.endpoint = this.bucket.endpoint;
    this.location = this.bucket.location;
    this.source = s3Source(this.bucket);
  }

  /** The object key of file `name` of snapshot `id`. */
  keyOf(id: string, name: string): string {
    return this.bucket.keyOf(id, name);
  }

  /**
   * Uploads snapshot `id` of `store`: every file (multipart above `partSizeBytes`, parts in
   * parallel, Content-MD5 on each), its sha256 as object metadata, the manifest last. Resumes
   * an interrupted push; skips files the bucket already holds with the same size and sha256.
   * The local files are sent as they are: `pull` is what proves them against the manifest.
   */
  push(store: LocalSnapshotStore, id: string, options: TransferOptions = {}): Promise<TransferResult> {
    return pushSnapshot(this.bucket, store, id, options);
  }

  /** The ids of the snapshots in the bucket (those whose manifest exists), sorted. */
  async list(): Promise<string[]> {
    const base = this.config.prefix ? `${this.config.prefix}/` : '';
    const ids: string[] = [];
    for (const key of await this.bucket.listKeys(base, `LIST ${this.location}`)) {
      const rest = key.slice(base.length).split('/');
      if (rest.length === 2 && rest[1] === MANIFEST_NAME && isSnapshotId(rest[0])) ids.push(rest[0]);
    }
    return ids.sort();
  }

  /** The manifest of snapshot `id` in the bucket, parsed and checked (to find a snapshot by what it runs without fetching it). */
  async manifest(id: string): Promise<SnapshotManifest> {
    return parseManifest(await readS3Manifest(this.bucket, id, undefined), `${this.location}/${id}/${MANIFEST_NAME}`);
  }

  /** True when the bucket holds snapshot `id` (its manifest exists). */
  async has(id: string): Promise<boolean> {
    requireSnapshotId(id);
    return (await this.bucket.head(this.keyOf(id, MANIFEST_NAME), undefined)) !== undefined;
  }

  /** Removes snapshot `id`: its manifest first (so it stops existing at once), then its files. */
  async remove(id: string): Promise<void> {
    requireSnapshotId(id);
    const keys = await this.bucket.listKeys(this.keyOf(id, ''), `LIST ${this.keyOf(id, '')}`);
    if (keys.length === 0)
      throw EmbersError.of('EMB_REMOTE_NOT_FOUND', {
        id,
        location: this.location,
        endpoint: this.endpoint,
        bucket: this.config.bucket,
      });
    const del = (key: string) =>
      this.bucket.call(`DELETE ${key}`, undefined, (signal) =>
        this.bucket.client.send(new DeleteObjectCommand({ Bucket: this.config.bucket, Key: key }), {
          abortSignal: signal,
        }),
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
    this.bucket.client.destroy();
  }
}

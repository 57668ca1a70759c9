/**
 * Reading snapshots from S3: the bucket as a `RangeSource` for the shared downloader
 * (fetch-snapshot.ts) and the working-set fetch. A file's object is checked against the
 * manifest (size, Content-Range, the sha256 in its metadata) before its bytes are used.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { EmbersError } from '../errors.js';
import { MANIFEST_NAME, requireSnapshotId, type SnapshotFile } from './manifest.js';
import { SHA256_METADATA, httpStatus, type S3Bucket } from './s3-bucket.js';
import { emptyBody } from './transfer.js';
import { WORKING_SET_MANIFEST_PATH, type WorkingSetSource } from './working-set-transfer.js';

/** The bucket as a source of snapshots and working sets. */
export function s3Source(bucket: S3Bucket): WorkingSetSource {
  return {
    location: `${bucket.location} (${bucket.endpoint})`,
    readManifest: (id, signal) => readS3Manifest(bucket, id, signal),
    readRange: (id, file, start, end, signal) => readS3Range(bucket, id, file, start, end, signal),
    readWorkingSetManifest: (id, signal) => {
      requireSnapshotId(id);
      return bucket.getText(bucket.keyOf(id, WORKING_SET_MANIFEST_PATH), signal, () => undefined);
    },
  };
}

/** The manifest of snapshot `id` as stored; EMB_REMOTE_NOT_FOUND when the bucket has no such snapshot. */
export function readS3Manifest(bucket: S3Bucket, id: string, signal: AbortSignal | undefined): Promise<string> {
  requireSnapshotId(id);
  const key = bucket.keyOf(id, MANIFEST_NAME);
  return bucket.getText(key, signal, () => {
    throw EmbersError.of('EMB_REMOTE_NOT_FOUND', {
      id,
      key,
      location: bucket.location,
      endpoint: bucket.endpoint,
      bucket: bucket.config.bucket,
    });
  });
}

export async function readS3Range(
  bucket: S3Bucket,
  id: string,
  f: SnapshotFile,
  start: number,
  end: number,
  signal: AbortSignal | undefined,
): Promise<AsyncIterable<Uint8Array>> {
  const key = bucket.keyOf(id, f.name);
  const where = { remote: 's3', id, file: f.name, key, source: bucket.location, endpoint: bucket.endpoint } as const;
  const missing = () => {
    throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'remote-missing', ...where });
  };
  const mismatch = (found: {
    problem: 'remote-size' | 'remote-short' | 'remote-digest';
    actualBytes?: number;
    actual?: string;
  }) => EmbersError.of('EMB_SNAPSHOT_CORRUPT', { ...found, ...where, sizeBytes: f.sizeBytes, expected: f.sha256 });
  if (start === end) {
    const there = await bucket.call(`HEAD ${key}`, signal, (s) => bucket.headRaw(key, s), missing);
    if (there.sizeBytes !== f.sizeBytes) throw mismatch({ problem: 'remote-size', actualBytes: there.sizeBytes });
    return emptyBody();
  }
  const res = await bucket.call(
    `GET ${key} bytes ${start}-${end - 1}`,
    signal,
    async (s) => {
      try {
        return await bucket.client.send(
          new GetObjectCommand({ Bucket: bucket.config.bucket, Key: key, Range: `bytes=${start}-${end - 1}` }),
          {
            abortSignal: s,
          },
        );
      } catch (err) {
        if (httpStatus(err) === 416) throw mismatch({ problem: 'remote-short' });
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
  if (total !== undefined && Number(total) !== f.sizeBytes)
    fail(mismatch({ problem: 'remote-size', actualBytes: Number(total) }));
  if (total === undefined && !(start === 0 && end === f.sizeBytes && res.ContentLength === f.sizeBytes)) {
    fail(
      bucket.unexpected(
        `GET ${key}`,
        `the answer to a ranged GET (bytes=${start}-${end - 1}) has no Content-Range; the service ignored the Range header`,
      ),
    );
  }
  const stored = res.Metadata?.[SHA256_METADATA];
  if (stored !== undefined && stored !== f.sha256) fail(mismatch({ problem: 'remote-digest', actual: stored }));
  return body;
}

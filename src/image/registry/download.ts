/**
 * Downloads one blob into the blob store: into `.partial/<hex>.part`, resumed with a Range
 * request after an interruption (in this call's retries or in a later pull), hashed as it
 * arrives, and published by rename only when its size and sha256 match the descriptor.
 *
 * Outcomes: a broken connection keeps the `.part` for the next attempt (EMB_REGISTRY_UNREACHABLE,
 * retried); bytes that cannot be the blob (more than its size, a complete answer that is short,
 * a wrong sha256) delete it (EMB_IMAGE_DIGEST_MISMATCH, not retried, except that a mismatch
 * after a resume is tried once more from byte 0, since the old prefix may be the culprit).
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm, stat, truncate } from 'node:fs/promises';
import { EmbersError, isEmbersError, type ErrorDetails } from '../../errors.js';
import { retry, type RetryPolicy } from '../../util/retry.js';
import type { Descriptor } from '../manifest.js';
import type { BlobStore } from './blob-store.js';
import type { RegistryClient } from './client.js';
import { isTransientRegistryError, transportError } from './http.js';
import { acquireLock } from './lock.js';

export interface BlobProgress {
  /** Bytes of the blob on disk (resumed bytes included). */
  bytesDone: number;
  bytesTotal: number;
  /** Bytes that were already in the `.part` file when this call started. */
  resumedFrom: number;
}

export interface DownloadOptions {
  retry: RetryPolicy;
  signal?: AbortSignal;
  onProgress?: (p: BlobProgress) => void;
}

export interface DownloadResult {
  /** True when the blob was already stored: nothing was requested. */
  cached: boolean;
  /** Bytes received over the network by this call. */
  bytesReceived: number;
  /** Bytes reused from an interrupted earlier download. */
  resumedFrom: number;
  /** Range requests sent (resumes). */
  rangeRequests: number;
}

interface PartState {
  hash: Hash;
  offset: number;
}

async function hashPrefix(path: string): Promise<PartState> {
  const hash = createHash('sha256');
  let offset = 0;
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
      hash.update(chunk as Buffer);
      offset += (chunk as Buffer).length;
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { hash, offset };
}

function mismatch(details: ErrorDetails<'EMB_IMAGE_DIGEST_MISMATCH'>): EmbersError {
  return EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', details, {
    hint: 'the blob on the registry is corrupt or was tampered with: push the image again',
  });
}

/** The result of a download the store already had. */
const cachedBlob = (): DownloadResult => ({ cached: true, bytesReceived: 0, resumedFrom: 0, rangeRequests: 0 });

/** Downloads `desc` of `repository` into `store` (see the file comment). */
export async function downloadBlob(
  client: RegistryClient,
  repository: string,
  desc: Descriptor,
  store: BlobStore,
  opts: DownloadOptions,
): Promise<DownloadResult> {
  if (await store.has(desc.digest, desc.size)) return cachedBlob();
  await store.ensureDirs();
  const release = await acquireLock(store.lockPath(desc.digest), `the download of ${desc.digest}`, {
    signal: opts.signal,
  });
  try {
    // Another process may have finished it while we waited for the lock.
    if (await store.has(desc.digest, desc.size)) return cachedBlob();
    return await fetchWithResume(client, repository, desc, store, opts);
  } finally {
    await release();
  }
}

async function fetchWithResume(
  client: RegistryClient,
  repository: string,
  desc: Descriptor,
  store: BlobStore,
  opts: DownloadOptions,
): Promise<DownloadResult> {
  const part = store.partPath(desc.digest);
  const where = `${client.registry}/${repository}`;
  let state: PartState | undefined;
  let received = 0;
  let rangeRequests = 0;
  let restartedAfterResume = false;
  const initial = (await stat(part).catch(() => undefined))?.size ?? 0;
  const resumedFrom = initial <= desc.size ? initial : 0;
  const broken = (e: EmbersError<'EMB_REGISTRY_UNREACHABLE'>, got: number) =>
    EmbersError.of(
      'EMB_REGISTRY_UNREACHABLE',
      { ...e.details, digest: desc.digest, from: where, got, want: desc.size },
      { cause: e },
    );
  const report = (offset: number) => opts.onProgress?.({ bytesDone: offset, bytesTotal: desc.size, resumedFrom });

  const attempt = async (): Promise<void> => {
    // Where the .part stands now: reuse the running hash when the file is as we left it.
    const onDisk = (await stat(part).catch(() => undefined))?.size ?? 0;
    if (onDisk > desc.size) {
      await rm(part, { force: true });
      state = undefined;
    }
    if (!state || state.offset !== onDisk) state = await hashPrefix(part);
    let cur: PartState = state;
    if (cur.offset < desc.size) {
      let response: Awaited<ReturnType<RegistryClient['getBlob']>>;
      try {
        response = await client.getBlob(repository, desc.digest, cur.offset);
      } catch (err) {
        throw isEmbersError(err, 'EMB_REGISTRY_UNREACHABLE') ? broken(err, cur.offset) : err;
      }
      const { res, start } = response;
      if (cur.offset > 0) rangeRequests++;
      if (start !== cur.offset) {
        // The registry ignored the Range (200) or answered another one: start over.
        await truncate(part, 0).catch(async () => rm(part, { force: true }));
        cur = { hash: createHash('sha256'), offset: 0 };
        state = cur;
        if (start !== 0) {
          res.destroy();
          throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
            problem: 'range-start',
            registry: client.registry,
            repository,
            digest: desc.digest,
            start,
          });
        }
      }
      const fh = await open(part, 'a', 0o644);
      let broke: unknown;
      try {
        for await (const chunk of res) {
          const buf = chunk as Buffer;
          if (cur.offset + buf.length > desc.size) {
            res.destroy();
            await fh.close().catch(() => {});
            await rm(part, { force: true });
            state = undefined;
            throw mismatch({
              problem: 'too-long',
              from: where,
              digest: desc.digest,
              expectedSize: desc.size,
            });
          }
          await fh.write(buf);
          cur.hash.update(buf);
          cur.offset += buf.length;
          received += buf.length;
          report(cur.offset);
        }
      } catch (err) {
        if (isEmbersError(err)) throw err;
        broke = err;
      } finally {
        await fh.close().catch(() => {});
      }
      if (cur.offset < desc.size) {
        if (broke !== undefined || !res.complete) {
          const cause = broke ?? Object.assign(new Error('connection closed early'), { code: 'ECONNRESET' });
          const e = transportError(
            cause,
            new URL(`${client.baseUrl}/v2/${repository}/blobs/${desc.digest}`),
            `registry ${client.registry}`,
          );
          throw isEmbersError(e, 'EMB_REGISTRY_UNREACHABLE') ? broken(e, cur.offset) : e;
        }
        await rm(part, { force: true });
        const got = cur.offset;
        state = undefined;
        throw mismatch({
          problem: 'too-short',
          from: where,
          digest: desc.digest,
          size: got,
          expectedSize: desc.size,
        });
      }
    }
    const actual = `sha256:${cur.hash.copy().digest('hex')}`;
    if (actual !== desc.digest) {
      await rm(part, { force: true });
      state = undefined;
      if (resumedFrom > 0 && !restartedAfterResume) {
        restartedAfterResume = true;
        return attempt();
      }
      throw mismatch({
        problem: 'blob-digest',
        from: where,
        digest: desc.digest,
        actual,
        size: desc.size,
      });
    }
  };

  await retry(attempt, isTransientRegistryError, opts.retry, opts.signal);
  await store.commitPart(desc.digest);
  return { cached: false, bytesReceived: received, resumedFrom, rangeRequests };
}

/**
 * A remote restore that starts before the memory file has arrived (REAP + E2B-style streaming,
 * issue 13 item 4). For a snapshot whose manifest gives its memory file's chunk digests and that
 * has a working set at the source (S3 or a peer):
 * 1. the manifest, the working set (ranges and pages, each proved against its sha256) and every
 *    file but the memory file are downloaded whole and verified, into a staging dir of the store;
 * 2. the memory file is created there at its final size, empty, with its chunk list beside it;
 * 3. the clone starts with the page server in prefetch mode on that arriving file: the working
 *    set goes in from its verified pages file, a fault elsewhere waits for its chunk, which the
 *    feed (memory/chunks.ts feedChunks) fetches with priority; the page server serves a page only
 *    from a chunk it read and verified itself, and stops serving at a chunk that fails;
 * 4. once the clone is up, the rest streams in (chunks of the working set first);
 * 5. when every chunk is in, the whole file's sha256 is checked and the snapshot, then its
 *    working set, are published atomically. A failure publishes nothing and drops the staging.
 */
import { sleep } from '../util/sleep.js';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { retry, type RetryPolicy } from '../util/retry.js';
import { exists } from '../util/fs.js';
import type { LocalSnapshotStore } from '../snapshot/local-store.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotFile, type SnapshotManifest } from '../snapshot/manifest.js';
import { compileTransferOptions, isTransientTransferError, type TransferOptions } from '../snapshot/transfer.js';
import { readRemoteManifest, spansToFetch } from '../snapshot/fetch-snapshot.js';
import {
  readRemoteFile,
  readRemoteWorkingSetManifest,
  type WorkingSetSource,
} from '../snapshot/working-set-transfer.js';
import { WorkingSetStore, workingSetPath, type WorkingSetManifest } from '../snapshot/working-set-store.js';
import { chunkFetchOrder, feedChunks, writeChunkList, type ChunkFeed } from '../memory/chunks.js';
import { WORKING_SET_FILES, readWorkingSetRanges } from '../memory/working-set.js';
import type { PageServerOptions } from '../vmm/driver.js';

/** A snapshot being downloaded while a clone of it runs: see the module comment. */
export interface ArrivingSnapshot {
  manifest: SnapshotManifest;
  workingSet: WorkingSetManifest;
  /** Where the clone loads the snapshot from (state file, disk delta, the arriving memory file): a staging dir of the store. */
  bundleDir: string;
  /** The restore's page server: prefetch mode, the verified working set, the arriving memory file. */
  pageServer: PageServerOptions;
  /** Bytes downloaded before the clone could start (manifests, working set, the small files). */
  bytesBeforeStart: number;
  /**
   * Connects the chunk feed to the page server once its control socket exists (start it as the
   * restore starts: the load itself may fault). Chunks nobody asked for wait for `backgroundAfter`.
   */
  feed(backgroundAfter: Promise<unknown>): Promise<ChunkFeed>;
  /**
   * Waits for the whole memory file (every chunk verified by the page server, then the whole-file
   * sha256), then publishes the snapshot and its working set into the store. Rejects, having
   * published nothing and dropped the staging, when a chunk or the file fails its digest.
   */
  finish(feed: ChunkFeed): Promise<{ manifest: SnapshotManifest; bytes: number; requested: number[] }>;
  /** Drops everything (a restore that failed before finish). */
  abandon(): Promise<void>;
}

export interface ArrivingSnapshotOptions {
  store: LocalSnapshotStore;
  source: WorkingSetSource;
  id: string;
  /** The built page server (ensureUffdHandler). */
  pageServerBinary: string;
  /** Scratch space of this process (chunk list, working set, control socket); a dir is made in it. */
  tmpDir: string;
  transfer?: TransferOptions;
}

/**
 * Starts an early restore's download of `id` from `source`, or returns undefined when the
 * snapshot cannot start early (its manifest has no chunk digests for the memory file, or the
 * source has no working set for it): the caller then downloads it whole first, as before.
 */
export async function startArrivingSnapshot(o: ArrivingSnapshotOptions): Promise<ArrivingSnapshot | undefined> {
  const t = compileTransferOptions(o.transfer);
  const { source, id, store } = o;
  const { text, manifest } = await readRemoteManifest(source, id, t);
  const memory = fileEntry(manifest, SNAPSHOT_FILES.memory);
  if (!memory?.chunkSha256 || !memory.chunkSize) return undefined;
  const ws = await readRemoteWorkingSetManifest(source, id, t);
  if (ws === undefined) return undefined;
  const { text: wsText, manifest: workingSet } = ws;

  const scratch = join(o.tmpDir, `arriving-${process.pid}-${randomBytes(3).toString('hex')}`);
  const bundleDir = await store.staging();
  let bytes = Buffer.byteLength(text) + Buffer.byteLength(wsText);
  let abandoned = false;
  const abandon = async (): Promise<void> => {
    abandoned = true;
    await rm(bundleDir, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  };
  try {
    await mkdir(join(scratch, 'workingset'), { recursive: true });
    // the working set first (it is what the clone starts from), then the other files of the snapshot
    for (const f of workingSet.files) {
      const remote: SnapshotFile = { name: workingSetPath(f.name), sizeBytes: f.sizeBytes, sha256: f.sha256 };
      bytes += await retry(
        () => readRemoteFile(source, id, remote, join(scratch, 'workingset', f.name), t.signal, 'EMB_SNAPSHOT_CORRUPT'),
        isTransientTransferError,
        t.retry,
        t.signal,
      );
    }
    for (const f of manifest.files) {
      if (f.name === memory.name) continue;
      bytes += await retry(
        () => readRemoteFile(source, id, f, join(bundleDir, f.name), t.signal, 'EMB_SNAPSHOT_CORRUPT'),
        isTransientTransferError,
        t.retry,
        t.signal,
      );
    }
    const target = join(bundleDir, memory.name);
    const fh = await open(target, 'w', 0o644);
    try {
      await fh.truncate(memory.sizeBytes);
    } finally {
      await fh.close();
    }
    const chunkListPath = join(scratch, 'memory.chunks');
    await writeChunkList(chunkListPath, memory.chunkSha256);
    const wsDir = join(scratch, 'workingset');
    const ws = await readWorkingSetRanges(wsDir, { memoryBytes: memory.sizeBytes });
    const pagesFile = workingSet.files.find((f) => f.name === WORKING_SET_FILES.pages);
    const controlPath = join(scratch, 'control.sock');
    const chunkSize = memory.chunkSize;
    const pageServer: PageServerOptions = {
      binary: o.pageServerBinary,
      workingSet: {
        rangesPath: join(wsDir, WORKING_SET_FILES.ranges),
        ...(pagesFile ? { pagesPath: join(wsDir, WORKING_SET_FILES.pages), pagesSha256: pagesFile.sha256 } : {}),
      },
      arriving: { chunkListPath, chunkSize, controlPath },
    };
    return {
      manifest,
      workingSet,
      bundleDir,
      pageServer,
      bytesBeforeStart: bytes,
      async feed(backgroundAfter) {
        // the page server makes its control socket as it starts, inside the driver's restore
        for (let waited = 0; !(await exists(controlPath)); waited += 10) {
          if (abandoned) throw EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'early-restore-abandoned', id });
          if (waited > 60_000)
            throw EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'page-server-socket', id, path: controlPath });
          await sleep(10);
        }
        return feedChunks({
          controlPath,
          target,
          sizeBytes: memory.sizeBytes,
          chunkSize,
          order: chunkFetchOrder(memory.chunkSha256!.length, chunkSize, ws.ranges, ws.pageSize),
          backgroundAfter,
          sha256: memory.sha256,
          fetchChunk: (i, signal) => fetchChunk(source, id, memory, i, t.retry, signal),
        });
      },
      async finish(feed) {
        try {
          const done = await feed.done;
          const published = await store.publishFetched(bundleDir, manifest);
          const sets = new WorkingSetStore(store);
          const wsStaging = await sets.staging(id);
          for (const f of workingSet.files) await copyFile(join(wsDir, f.name), join(wsStaging, f.name));
          await sets.publishFetched(id, wsStaging, workingSet).catch(async (err: unknown) => {
            await rm(wsStaging, { recursive: true, force: true });
            throw err;
          });
          return { manifest: published, bytes: bytes + done.bytes, requested: done.requested };
        } finally {
          await abandon();
        }
      },
      abandon,
    };
  } catch (err) {
    await abandon();
    throw err;
  }
}

/** Chunk `i` of the memory file `f`, from the source; a chunk the manifest's data ranges say is all zeros is not fetched. */
async function fetchChunk(
  source: WorkingSetSource,
  id: string,
  f: SnapshotFile,
  i: number,
  policy: RetryPolicy,
  signal: AbortSignal,
): Promise<Buffer> {
  const start = i * f.chunkSize!;
  const end = Math.min(start + f.chunkSize!, f.sizeBytes);
  const out = Buffer.alloc(end - start);
  for (const [s, e] of spansToFetch(f, start, end)) {
    await retry(
      async () => {
        let at = s - start;
        for await (const part of await source.readRange(id, f, s, e, signal)) {
          if (at + part.length > e - start)
            throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
              problem: 'overrun',
              source: source.location,
              id,
              file: f.name,
              start: s,
              end: e,
            });
          out.set(part, at);
          at += part.length;
        }
        if (at !== e - start)
          throw EmbersError.of('EMB_REMOTE_UNREACHABLE', {
            problem: 'ended-early',
            endpoint: source.location,
            id,
            file: f.name,
            start: s,
            end: e,
          });
      },
      isTransientTransferError,
      policy,
      signal,
    );
  }
  return out;
}

/** The end of an arriving snapshot's download (runWhileArriving): the snapshot as published, and what was fetched. */
export interface Arrival {
  manifest: SnapshotManifest;
  /** Bytes downloaded in all. */
  bytes: number;
  /** The memory chunks the clone's faults asked for first. */
  requested: number[];
}

/**
 * Runs a clone on an arriving snapshot, the way a restore does: the chunk feed is started with
 * the restore (the load itself may fault), `launch` starts the clone (with `a.pageServer`), and
 * this resolves as soon as the clone is up, with `arrived`, which settles when the rest of the
 * memory file has streamed in: resolved once the download is complete, checked and published;
 * rejected (EMB_SNAPSHOT_CORRUPT for a chunk or a file that failed its digest) after the clone was
 * stopped with `stop` and the staging dropped, nothing published. A clone that stops meanwhile
 * (its page server goes with it) ends the download the same way. When `launch` fails, the staging
 * is dropped and its error thrown.
 */
export async function runWhileArriving<T>(
  a: ArrivingSnapshot,
  launch: () => Promise<T>,
  stop: (clone: T) => Promise<void>,
): Promise<{
  clone: T;
  /** performance.now() when the clone was up */ startedAt: number;
  arrived: Promise<Arrival>;
}> {
  let feed: ChunkFeed | undefined;
  let launched!: () => void;
  const started = new Promise<void>((resolve) => (launched = resolve));
  let clone: { value: T } | undefined;
  const fail = async (err: unknown): Promise<never> => {
    launched();
    feed?.cancel();
    if (clone) await stop(clone.value).catch(() => undefined);
    await a.abandon();
    throw err;
  };
  const feeding = a.feed(started).then((f) => (feed = f));
  feeding.catch(() => undefined);
  try {
    clone = { value: await launch() };
  } catch (err) {
    return fail(err);
  }
  const startedAt = performance.now();
  launched();
  const arrived = (async () => {
    try {
      return await a.finish(await feeding);
    } catch (err) {
      return fail(err);
    }
  })();
  arrived.catch(() => undefined); // the caller awaits it when it likes; no unhandled rejection meanwhile
  return { clone: clone.value, startedAt, arrived };
}

/**
 * The one downloader of snapshots (`fetchSnapshot`): it reads bytes from any `RangeSource` (the
 * S3 store, a peer), resumes interrupted downloads, proves every file against the manifest and
 * publishes atomically. Nothing partial is ever visible in the local store.
 */
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { asNoSpaceError, isNoSpace, sha256 } from '../util/fs.js';
import { retry } from '../util/retry.js';
import { runPool } from '../util/worker-pool.js';
import { crashPoint } from '../util/crash-point.js';
import type { LocalSnapshotStore } from './local-store.js';
import {
  MANIFEST_NAME,
  parseManifest,
  requireSnapshotId,
  type SnapshotFile,
  type SnapshotManifest,
} from './manifest.js';
import { OrderedHasher } from './ordered-hasher.js';
import { PullJournal } from './pull-journal.js';
import { ProgressTracker, snapshotSizes } from './transfer-progress.js';
import {
  acquireTransferLock,
  compileTransferOptions,
  isTransientTransferError,
  rangeOf,
  transfersDir,
  type CompiledTransferOptions,
  type RangeSource,
  type TransferOptions,
  type TransferResult,
} from './transfer.js';

const MiB = 1024 * 1024;

/**
 * Pulls snapshot `id` from `source` into `store`, under the same id:
 * 1. the manifest first (parsed and checked; its id must be `id`);
 * 2. every file in ranges of `partSizeBytes`, `concurrency` at once, into `<name>.part` files
 *    under `.transfers/pull-<id>/`, each range synced and recorded in a journal, so a retry
 *    (after a crash, a network failure, or from another source) keeps what is done;
 * 3. every file's size and sha256 checked against the manifest: a mismatch throws
 *    EMB_SNAPSHOT_CORRUPT naming the file, and its partial data is dropped;
 * 4. the files moved into a staging dir and published atomically (`publishFetched`).
 * If the store already holds the snapshot, nothing is moved.
 */
export async function fetchSnapshot(
  store: LocalSnapshotStore,
  source: RangeSource,
  id: string,
  options: TransferOptions = {},
): Promise<TransferResult> {
  const o = compileTransferOptions(options);
  const started = performance.now();
  requireSnapshotId(id);
  if (await store.has(id)) {
    const { manifest, bytes } = await store.getWithBytes(id);
    const total = [...snapshotSizes(manifest, bytes.length).values()].reduce((n, size) => n + size, 0);
    return { id, bytes: 0, resumedBytes: total, totalBytes: total, ms: performance.now() - started };
  }
  const release = await acquireTransferLock(store, `pull-${id}`);
  try {
    return await new SnapshotFetch(store, source, id, o, started).run();
  } catch (err) {
    // A full disk: resuming needs the space first, so the partial download goes (the space is
    // given back) and the pull starts afresh once space is freed.
    if (!isNoSpace(err)) throw err;
    await rm(join(transfersDir(store), `pull-${id}`), { recursive: true, force: true });
    throw await asNoSpaceError(err, `pulling snapshot ${id} from ${source.location}`, store.dir);
  } finally {
    await release();
  }
}

class SnapshotFetch {
  private readonly workDir: string;
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private moved = 0;

  constructor(
    private readonly store: LocalSnapshotStore,
    private readonly source: RangeSource,
    private readonly id: string,
    private readonly o: CompiledTransferOptions,
    private readonly started: number,
  ) {
    this.workDir = join(transfersDir(store), `pull-${id}`);
  }

  async run(): Promise<TransferResult> {
    const { id, source, o } = this;
    const { text, manifest } = await readRemoteManifest(source, id, o);
    this.moved += Buffer.byteLength(text);
    const journal = await PullJournal.open(this.workDir, sha256(text), o.partSizeBytes);
    await crashPoint('snapshot.pull.after-manifest');
    const partSize = journal.partSizeBytes; // a resumed pull keeps the ranges it started with
    const sizes = new Map<string, number>([
      [MANIFEST_NAME, Buffer.byteLength(text)],
      ...manifest.files.map((f) => [f.name, f.sizeBytes] as const),
    ]);
    const tracker = new ProgressTracker('pull', id, sizes, o.onProgress);
    tracker.add(MANIFEST_NAME, Buffer.byteLength(text));

    type Task = { file: SnapshotFile; index: number } | { file: SnapshotFile; verify: true };
    const tasks: Task[] = [];
    const pending = new Map<string, number>();
    const hashers = new Map<string, OrderedHasher>();
    let resumedBytes = 0;
    for (const f of manifest.files) {
      await this.preparePart(f, journal);
      const ranges = Math.max(1, Math.ceil(f.sizeBytes / partSize));
      const hasher = new OrderedHasher(() => this.handle(f), f, partSize, ranges);
      hashers.set(f.name, hasher);
      let left = 0;
      for (let index = 0; index < ranges; index++) {
        const [start, end] = rangeOf(f, index, partSize);
        if (journal.isDone(f.name, index)) {
          resumedBytes += end - start;
          tracker.add(f.name, end - start, false);
          hasher.completed(index);
        } else if (spansToFetch(f, start, end).length === 0) {
          // all zeros (the manifest's data ranges say so): the part file's hole already reads
          // as zeros, and the file's sha256 proves it once every range is in place
          tracker.add(f.name, end - start, false);
          hasher.completed(index);
        } else {
          left++;
          tasks.push({ file: f, index });
        }
      }
      pending.set(f.name, left);
      if (left === 0) tasks.unshift({ file: f, verify: true }); // all there from an earlier attempt: check it first
    }

    try {
      await runPool(
        tasks,
        o.concurrency,
        async (task, signal) => {
          const hasher = hashers.get(task.file.name)!;
          if ('verify' in task) {
            await this.verifyPart(task.file, journal, await hasher.digest());
            return;
          }
          await retry(
            () => this.fetchRange(task.file, task.index, partSize, tracker, signal),
            isTransientTransferError,
            o.retry,
            signal,
          );
          await journal.markDone(task.file.name, task.index);
          await crashPoint('snapshot.pull.after-range');
          hasher.completed(task.index); // hashed in file order, overlapping the downloads still running
          const left = pending.get(task.file.name)! - 1;
          pending.set(task.file.name, left);
          if (left === 0) await this.verifyPart(task.file, journal, await hasher.digest());
        },
        o.signal,
      );
    } finally {
      await Promise.all([...hashers.values()].map((h) => h.settled()));
      await this.closeHandles();
    }

    const staging = await this.store.staging();
    try {
      for (const f of manifest.files) await rename(this.partPath(f), join(staging, f.name));
      await crashPoint('snapshot.pull.before-publish');
      await this.store.publishFetched(staging, manifest);
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      await rm(this.workDir, { recursive: true, force: true }); // its parts were moved away: start afresh next time
      throw err;
    }
    await crashPoint('snapshot.pull.after-publish');
    await rm(this.workDir, { recursive: true, force: true });
    const totalBytes = tracker.bytesTotal;
    return { id, bytes: this.moved, resumedBytes, totalBytes, ms: performance.now() - this.started };
  }

  private partPath(f: SnapshotFile): string {
    return join(this.workDir, `${f.name}.part`);
  }

  /** Makes `<name>.part` exist at the file's size; one of another size (or none) restarts that file. */
  private async preparePart(f: SnapshotFile, journal: PullJournal): Promise<void> {
    const path = this.partPath(f);
    const st = await stat(path).catch(() => undefined);
    if (st?.isFile() && st.size === f.sizeBytes) return;
    await journal.forget(f.name);
    const fh = await open(path, 'w', 0o644);
    try {
      await fh.truncate(f.sizeBytes);
    } finally {
      await fh.close();
    }
  }

  private handle(f: SnapshotFile): Promise<FileHandle> {
    let h = this.handles.get(f.name);
    if (!h) {
      h = open(this.partPath(f), 'r+');
      this.handles.set(f.name, h);
      h.catch(() => this.handles.delete(f.name));
    }
    return h;
  }

  private async closeHandles(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map((h) => h.then((fh) => fh.close()).catch(() => {})));
  }

  /**
   * Downloads one range into its place in the part file and syncs it: the whole range, or of a
   * sparse file only the spans with data (the zeros between them stay holes).
   */
  private async fetchRange(
    f: SnapshotFile,
    index: number,
    partSize: number,
    tracker: ProgressTracker,
    signal: AbortSignal,
  ): Promise<void> {
    const [start, end] = rangeOf(f, index, partSize);
    const spans = spansToFetch(f, start, end);
    let fetched = 0;
    try {
      for (const [s, e] of spans) {
        await this.fetchSpan(f, s, e, tracker, signal);
        fetched += e - s;
      }
    } catch (err) {
      tracker.add(f.name, -fetched, false); // this range starts over
      this.moved -= fetched;
      throw err;
    }
    tracker.add(f.name, end - start - fetched, false); // the zeros between the spans
  }

  /** Downloads [start, end) of a file into its place in the part file and syncs it. */
  private async fetchSpan(
    f: SnapshotFile,
    start: number,
    end: number,
    tracker: ProgressTracker,
    signal: AbortSignal,
  ): Promise<void> {
    const body = await this.source.readRange(this.id, f, start, end, signal);
    const fh = await this.handle(f);
    const it = body[Symbol.asyncIterator]();
    let pos = start;
    let unreported = 0;
    let finished = false;
    try {
      for (;;) {
        let r: IteratorResult<Uint8Array>;
        try {
          r = await it.next();
        } catch (err) {
          finished = true; // the iterator is already torn down
          if (signal.aborted) throw signal.reason;
          throw isEmbersError(err) ? err : brokenStream(this.source.location, f, pos - start, end - start, err);
        }
        if (r.done) {
          finished = true;
          break;
        }
        const chunk = r.value;
        if (pos + chunk.length > end) {
          throw EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
            problem: 'too-many-bytes',
            source: this.source.location,
            file: f.name,
            start,
            end,
          });
        }
        await fh.write(chunk, 0, chunk.length, pos);
        pos += chunk.length;
        unreported += chunk.length;
        if (unreported >= MiB) {
          tracker.add(f.name, unreported);
          unreported = 0;
        }
      }
      if (pos !== end) throw brokenStream(this.source.location, f, pos - start, end - start);
      await fh.datasync();
      this.moved += end - start;
      if (unreported > 0) tracker.add(f.name, unreported);
    } catch (err) {
      tracker.add(f.name, -(pos - start - unreported), false); // this range starts over
      if (!finished) await it.return?.().catch(() => {});
      throw err;
    }
  }

  /** Proves a complete part file against the manifest; a mismatch drops it, so a retry fetches it again. */
  private async verifyPart(f: SnapshotFile, journal: PullJournal, digest: string): Promise<void> {
    const path = this.partPath(f);
    const st = await stat(path);
    if (st.size === f.sizeBytes && digest === f.sha256) return;
    await journal.forget(f.name);
    await rm(path, { force: true });
    throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
      problem: 'fetched-mismatch',
      id: this.id,
      file: f.name,
      source: this.source.location,
      expected: f.sha256,
      actual: digest,
      actualBytes: st.size,
      sizeBytes: f.sizeBytes,
    });
  }
}

/**
 * The spans of [start, end) a download must fetch: all of it, or, when the manifest records
 * where the file has data (`dataRanges`, for sparse memory files), only those spans.
 */
export function spansToFetch(f: SnapshotFile, start: number, end: number): [number, number][] {
  if (!f.dataRanges) return [[start, end]];
  const out: [number, number][] = [];
  for (const [offset, length] of f.dataRanges) {
    const s = Math.max(start, offset);
    const e = Math.min(end, offset + length);
    if (s < e) out.push([s, e]);
  }
  return out;
}

function brokenStream(location: string, f: SnapshotFile, got: number, want: number, cause?: unknown): EmbersError {
  const reason = cause instanceof Error ? cause.message : undefined;
  return EmbersError.of(
    'EMB_REMOTE_UNREACHABLE',
    { problem: 'broken', endpoint: location, file: f.name, got, want, reason },
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Reads the manifest of snapshot `id` from `source` (retrying transient failures) and checks that
 * it is that snapshot's: EMB_SNAPSHOT_CORRUPT when the store holds another snapshot's manifest.
 */
export async function readRemoteManifest(
  source: RangeSource,
  id: string,
  o: CompiledTransferOptions,
): Promise<{ text: string; manifest: SnapshotManifest }> {
  const text = await retry(() => source.readManifest(id, o.signal), isTransientTransferError, o.retry, o.signal);
  const manifest = parseManifest(text, `${source.location} ${id}/${MANIFEST_NAME}`);
  if (manifest.id !== id) {
    throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
      problem: 'manifest-of-another',
      id,
      manifestId: manifest.id,
      source: source.location,
    });
  }
  return { text, manifest };
}

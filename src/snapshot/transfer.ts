/**
 * Moving snapshots between the local store and a remote one (an S3-compatible service or a
 * peer node). This file holds what every remote shares: transfer options and progress, the
 * per-snapshot transfer lock, and the one downloader (`fetchSnapshot`), which reads bytes from
 * any `RangeSource`, resumes interrupted downloads, proves every file against the manifest and
 * publishes atomically. Nothing partial is ever visible in the local store.
 */
import { createHash } from 'node:crypto';
import { open, readFile, rename, rm, stat, mkdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { asNoSpaceError, isNoSpace, sha256, writeJsonAtomic } from '../util/fs.js';
import { retry, retryPolicy, type RetryOptions, type RetryPolicy } from '../util/retry.js';
import { pidAlive } from '../util/pid.js';
import { heldHere, lockOwner, tryCreateLock } from '../util/lock.js';
import type { LocalSnapshotStore } from './local-store.js';
import { MANIFEST_NAME, parseManifest, requireSnapshotId, type SnapshotFile, type SnapshotManifest } from './manifest.js';
import { crashPoint } from '../util/crash-point.js';

const MiB = 1024 * 1024;

/** One progress report: bytes of one file and of the whole snapshot. */
export interface TransferProgress {
  /** `push` uploads from the local store; `pull` downloads into it. */
  direction: 'push' | 'pull';
  id: string;
  /** The file the bytes belong to; `manifest.json` is one too (moved last on a push, first on a pull). */
  file: string;
  fileBytesDone: number;
  fileBytesTotal: number;
  /** Over the whole snapshot, bytes in place from an earlier interrupted transfer included. */
  bytesDone: number;
  bytesTotal: number;
}

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
    throw new EmbersError('EMB_CONFIG_INVALID', `partSizeBytes must be a positive integer, not ${partSizeBytes}`, { partSizeBytes });
  }
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) {
    throw new EmbersError('EMB_CONFIG_INVALID', `concurrency must be an integer from 1 to 64, not ${concurrency}`, { concurrency });
  }
  return { onProgress: opts.onProgress ?? (() => {}), partSizeBytes, concurrency, retry: retryPolicy(opts.retry), signal: opts.signal };
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

/** Reports progress per file and in total. */
export class ProgressTracker {
  private readonly perFile = new Map<string, number>();
  private done = 0;

  constructor(
    private readonly direction: TransferProgress['direction'],
    private readonly id: string,
    private readonly sizes: ReadonlyMap<string, number>,
    private readonly onProgress: (e: TransferProgress) => void,
  ) {}

  get bytesTotal(): number {
    let total = 0;
    for (const size of this.sizes.values()) total += size;
    return total;
  }

  get bytesDone(): number {
    return this.done;
  }

  /** Counts `bytes` of `file` as done (negative to take back the bytes of a failed attempt); reports when `report`. */
  add(file: string, bytes: number, report = true): void {
    this.perFile.set(file, (this.perFile.get(file) ?? 0) + bytes);
    this.done += bytes;
    if (report) {
      this.onProgress({
        direction: this.direction,
        id: this.id,
        file,
        fileBytesDone: this.perFile.get(file)!,
        fileBytesTotal: this.sizes.get(file) ?? 0,
        bytesDone: this.done,
        bytesTotal: this.bytesTotal,
      });
    }
  }
}

/**
 * One process at a time pushes or pulls a given snapshot with a given local store: a lock file
 * (`.transfers/<name>.lock`, holding the pid) beside the transfer state. A lock whose process
 * died is taken over.
 */
export class TransferLock {
  private constructor(readonly path: string) {}

  static async acquire(store: LocalSnapshotStore, name: string): Promise<TransferLock> {
    const dir = transfersDir(store);
    const path = join(dir, `${name}.lock`);
    const busy = (pid: number) =>
      new EmbersError('EMB_SNAPSHOT_TRANSFER_BUSY', `another transfer (${name}) is running with the store ${store.dir} (pid ${pid})`, { lock: path, pid });
    if (heldHere.has(path)) throw busy(process.pid);
    heldHere.add(path);
    try {
      await mkdir(dir, { recursive: true });
      for (let attempt = 0; attempt < 3; attempt++) {
        if (await tryCreateLock(path)) return new TransferLock(path);
        const pid = await lockOwner(path);
        if (pid && pid !== process.pid && (await pidAlive(pid))) throw busy(pid);
        await rm(path, { force: true }); // its owner is gone
      }
      throw busy(0);
    } catch (err) {
      heldHere.delete(path);
      throw err;
    }
  }

  async release(): Promise<void> {
    await rm(this.path, { force: true });
    heldHere.delete(this.path);
  }
}

/**
 * Runs `worker` over `items`, at most `concurrency` at once. The first failure aborts the
 * others (through the signal they get) and is thrown once every worker has stopped, so nothing
 * is still writing when this returns.
 */
export async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  worker: (item: T, signal: AbortSignal) => Promise<void>,
  outer?: AbortSignal,
): Promise<void> {
  const ac = new AbortController();
  const onOuterAbort = () => ac.abort(outer!.reason);
  if (outer?.aborted) ac.abort(outer.reason);
  else outer?.addEventListener('abort', onOuterAbort, { once: true });
  let next = 0;
  let failed = false;
  let firstError: unknown;
  const lane = async () => {
    while (!ac.signal.aborted && next < items.length) {
      const item = items[next++];
      try {
        await worker(item, ac.signal);
      } catch (err) {
        if (!failed) {
          failed = true;
          firstError = err;
          ac.abort(err);
        }
        return;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
  }
  if (failed) throw firstError;
  outer?.throwIfAborted();
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
  readRange(id: string, file: SnapshotFile, start: number, end: number, signal: AbortSignal | undefined): Promise<AsyncIterable<Uint8Array>>;
}

interface PullJournalData {
  format: 1;
  /** sha256 of the manifest text the partial files belong to: another manifest starts afresh. */
  manifestSha256: string;
  partSizeBytes: number;
  /** Per file, the indexes of the ranges that are written and synced. */
  done: Record<string, number[]>;
}

/** The ranges of a pull that are on disk, saved after each range (atomically, after an fdatasync of the data). */
class PullJournal {
  private saving: Promise<void> = Promise.resolve();
  private readonly done: Map<string, Set<number>>;

  private constructor(
    private readonly path: string,
    private readonly data: PullJournalData,
  ) {
    this.done = new Map(Object.entries(data.done).map(([name, list]) => [name, new Set(list)]));
  }

  static async open(workDir: string, manifestSha256: string, partSizeBytes: number): Promise<PullJournal> {
    const path = join(workDir, 'journal.json');
    const saved = await readFile(path, 'utf8')
      .then((text) => JSON.parse(text) as PullJournalData)
      .catch(() => undefined);
    if (saved && saved.format === 1 && saved.manifestSha256 === manifestSha256 && Number.isSafeInteger(saved.partSizeBytes) && saved.done) {
      return new PullJournal(path, saved);
    }
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { recursive: true });
    const journal = new PullJournal(path, { format: 1, manifestSha256, partSizeBytes, done: {} });
    await journal.save();
    return journal;
  }

  get partSizeBytes(): number {
    return this.data.partSizeBytes;
  }

  isDone(file: string, index: number): boolean {
    return this.done.get(file)?.has(index) ?? false;
  }

  async markDone(file: string, index: number): Promise<void> {
    let set = this.done.get(file);
    if (!set) this.done.set(file, (set = new Set()));
    set.add(index);
    await this.save();
  }

  async forget(file: string): Promise<void> {
    this.done.delete(file);
    await this.save();
  }

  /** Saves the current state; saves are serialised, each writes everything known so far. */
  private save(): Promise<void> {
    const run = () => {
      this.data.done = Object.fromEntries([...this.done].map(([name, set]) => [name, [...set].sort((a, b) => a - b)]));
      return writeJsonAtomic(this.path, this.data);
    };
    this.saving = this.saving.then(run, run);
    return this.saving;
  }
}

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
export async function fetchSnapshot(store: LocalSnapshotStore, source: RangeSource, id: string, options: TransferOptions = {}): Promise<TransferResult> {
  const o = compileTransferOptions(options);
  const started = performance.now();
  requireSnapshotId(id);
  if (await store.has(id)) {
    const { manifest, bytes } = await store.getWithBytes(id);
    const total = [...snapshotSizes(manifest, bytes.length).values()].reduce((n, size) => n + size, 0);
    return { id, bytes: 0, resumedBytes: total, totalBytes: total, ms: performance.now() - started };
  }
  const lock = await TransferLock.acquire(store, `pull-${id}`);
  try {
    return await new SnapshotFetch(store, source, id, o, started).run();
  } catch (err) {
    // A full disk: resuming needs the space first, so the partial download goes (the space is
    // given back) and the pull starts afresh once space is freed.
    if (!isNoSpace(err)) throw err;
    await rm(join(transfersDir(store), `pull-${id}`), { recursive: true, force: true });
    throw await asNoSpaceError(err, `pulling snapshot ${id} from ${source.location}`, store.dir);
  } finally {
    await lock.release();
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
    const text = await retry(() => source.readManifest(id, o.signal), isTransientTransferError, o.retry, o.signal);
    this.moved += Buffer.byteLength(text);
    const manifest = parseManifest(text, `${source.location} ${id}/${MANIFEST_NAME}`);
    if (manifest.id !== id) {
      throw new EmbersError('EMB_SNAPSHOT_CORRUPT', `${source.location}: the manifest stored for ${id} is the manifest of ${manifest.id}`, {
        id,
        manifestId: manifest.id,
        source: source.location,
      });
    }
    const journal = await PullJournal.open(this.workDir, sha256(text), o.partSizeBytes);
    await crashPoint('snapshot.pull.after-manifest');
    const partSize = journal.partSizeBytes; // a resumed pull keeps the ranges it started with
    const sizes = new Map<string, number>([[MANIFEST_NAME, Buffer.byteLength(text)], ...manifest.files.map((f) => [f.name, f.sizeBytes] as const)]);
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
          await retry(() => this.fetchRange(task.file, task.index, partSize, tracker, signal), isTransientTransferError, o.retry, signal);
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
  private async fetchRange(f: SnapshotFile, index: number, partSize: number, tracker: ProgressTracker, signal: AbortSignal): Promise<void> {
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
  private async fetchSpan(f: SnapshotFile, start: number, end: number, tracker: ProgressTracker, signal: AbortSignal): Promise<void> {
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
          throw new EmbersError(
            'EMB_REMOTE_REQUEST_FAILED',
            `${this.source.location} sent more than the ${end - start} bytes asked for ${f.name} [${start}, ${end})`,
            {
              source: this.source.location,
              file: f.name,
              start,
              end,
            },
          );
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
    throw new EmbersError(
      'EMB_SNAPSHOT_CORRUPT',
      `snapshot ${this.id} from ${this.source.location}: ${f.name} does not match the sha256 in its manifest (corrupt or tampered at the source); nothing was published`,
      { id: this.id, file: f.name, source: this.source.location, expected: f.sha256, actual: digest, sizeBytes: st.size },
    );
  }
}

/**
 * The sha256 of a file written in ranges, in any order: each range is hashed (read back from
 * the file, so what is on disk is what gets proved) once every range before it is, so hashing
 * overlaps the downloads instead of following them. One hashing run per file at a time.
 */
class OrderedHasher {
  private readonly hash = createHash('sha256');
  private next = 0;
  private readonly complete = new Set<number>();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: () => Promise<FileHandle>,
    private readonly f: SnapshotFile,
    private readonly partSize: number,
    private readonly ranges: number,
  ) {}

  /** Range `index` is written: hash it, and the ranges after it that wait, once its turn comes. */
  completed(index: number): void {
    this.complete.add(index);
    this.chain = this.chain.then(() => this.advance());
    this.chain.catch(() => {}); // reported by digest()
  }

  /** The digest of the whole file, once every range is written. */
  async digest(): Promise<string> {
    this.chain = this.chain.then(() => this.advance());
    await this.chain;
    if (this.next !== this.ranges)
      throw new EmbersError('EMB_INTERNAL', `${this.f.name}: ranges ${this.next} to ${this.ranges - 1} were never hashed`, { file: this.f.name });
    return this.hash.digest('hex');
  }

  /** Resolves once no hashing runs (whatever its outcome). */
  settled(): Promise<void> {
    return this.chain.catch(() => {});
  }

  private async advance(): Promise<void> {
    if (!this.complete.has(this.next)) return;
    const fh = await this.file();
    const buf = Buffer.allocUnsafe(Math.min(this.partSize, MiB));
    while (this.complete.has(this.next)) {
      const [start, end] = rangeOf(this.f, this.next, this.partSize);
      for (let pos = start; pos < end; ) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
        if (bytesRead === 0) throw new EmbersError('EMB_INTERNAL', `${this.f.name}: the partial file ends at ${pos}, before ${end}`, { file: this.f.name });
        this.hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
      this.complete.delete(this.next);
      this.next++;
    }
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

/** The byte range [start, end) of range `index` (0-based) of a file. */
export function rangeOf(f: SnapshotFile, index: number, partSize: number): [number, number] {
  const start = index * partSize;
  return [start, Math.min(start + partSize, f.sizeBytes)];
}

function brokenStream(location: string, f: SnapshotFile, got: number, want: number, cause?: unknown): EmbersError {
  const why = cause instanceof Error ? `: ${cause.message}` : '';
  return new EmbersError(
    'EMB_REMOTE_UNREACHABLE',
    `the connection to ${location} broke after ${got} of ${want} bytes of ${f.name}${why}`,
    { endpoint: location, file: f.name, got, want },
    cause === undefined ? undefined : { cause },
  );
}

/** The sizes of a local snapshot's files and of its manifest (`manifestBytes` long), for progress and totals. */
export function snapshotSizes(m: SnapshotManifest, manifestBytes: number): Map<string, number> {
  return new Map<string, number>([...m.files.map((f) => [f.name, f.sizeBytes] as const), [MANIFEST_NAME, manifestBytes]]);
}

/** The errno-style code (ECONNREFUSED, UND_ERR_SOCKET, ...) of a network error or of one of its causes. */
export function networkErrorCode(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string') return e.code;
  }
  return undefined;
}

/** A body of no bytes, for RangeSource.readRange(start === end). */
export async function* emptyBody(): AsyncIterable<Uint8Array> {
  /* nothing */
}

/**
 * A memory file in fixed chunks, each with its own sha256, so a restore can start before the
 * file has arrived: the page server (native/uffd-handler.c, `--chunks --control`) serves a
 * page only from a chunk it has read and verified itself, and asks for the chunk a fault
 * waits on. This module computes the digests, orders the chunks (the working set's first, in
 * first-touch order) and drives a download into the file, answering the page server's
 * priority requests.
 *
 * The control protocol (one Unix stream socket, lines): "ready N" from the downloader once
 * chunk N is written in full; from the page server "ok N" once it verified chunk N, "want N"
 * when a fault waits on chunk N, "bad N" when chunk N failed its digest (it then stops
 * serving). The page server reads the socket only once the VM has connected to it.
 */
import { createReadStream } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { createHash } from 'node:crypto';
import { EmbersError } from '../errors.js';

/** The chunk size of memory files: 4 MiB. */
export const MEMORY_CHUNK_SIZE = 4 << 20;

/** sha256 of each `chunkSize` chunk of the file at `path` (the last one may be shorter). */
export async function chunkDigests(path: string, chunkSize = MEMORY_CHUNK_SIZE): Promise<string[]> {
  const digests: string[] = [];
  let hash = createHash('sha256');
  let filled = 0;
  for await (const data of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    let at = 0;
    while (at < data.length) {
      const take = Math.min(chunkSize - filled, data.length - at);
      hash.update(data.subarray(at, at + take));
      filled += take;
      at += take;
      if (filled === chunkSize) {
        digests.push(hash.digest('hex'));
        hash = createHash('sha256');
        filled = 0;
      }
    }
  }
  if (filled > 0) digests.push(hash.digest('hex'));
  return digests;
}

/** Writes the page server's `--chunks` file: one digest per line. */
export async function writeChunkList(path: string, digests: string[]): Promise<void> {
  await writeFile(path, digests.map((d) => `${d}\n`).join(''));
}

/** A working set's page range (WS-FORMAT.md): `pageCount` pages from page `firstPage`. */
export interface PageRange {
  firstPage: number;
  pageCount: number;
}

/** The order to fetch chunks in: those holding the working set first (in its first-touch order), then the rest ascending. */
export function chunkFetchOrder(
  chunkCount: number,
  chunkSize: number,
  workingSet: PageRange[] = [],
  pageSize = 4096,
): number[] {
  const order: number[] = [];
  const seen = new Set<number>();
  const push = (c: number): void => {
    if (c < chunkCount && !seen.has(c)) {
      seen.add(c);
      order.push(c);
    }
  };
  for (const r of workingSet) {
    const first = Math.floor((r.firstPage * pageSize) / chunkSize);
    const last = Math.floor(((r.firstPage + r.pageCount) * pageSize - 1) / chunkSize);
    for (let c = first; c <= last; c++) push(c);
  }
  for (let c = 0; c < chunkCount; c++) push(c);
  return order;
}

export interface ChunkFeedOptions {
  /** The page server's control socket (`--control`). */
  controlPath: string;
  /** The memory file being filled; it already has its final size (the page server checks). */
  target: string;
  sizeBytes: number;
  chunkSize: number;
  /** Every chunk once, in the order to fetch them (chunkFetchOrder); requests from the page server jump the queue. */
  order: number[];
  /** Fetches chunk i's bytes [i*chunkSize, min((i+1)*chunkSize, size)). */
  fetchChunk(index: number, signal: AbortSignal): Promise<Buffer>;
  /** Chunks fetched at once. @default 2 */
  concurrency?: number;
  /** When given, chunks nobody asked for are fetched only once this settles (e.g. once the clone
   * started from its working set); chunks the page server asks for are fetched at once. */
  backgroundAfter?: Promise<unknown>;
  /** The whole file's sha256, checked once every chunk is in. */
  sha256?: string;
  /** Called when the page server asks for a chunk. */
  onRequest?(index: number): void;
  /** Called as each chunk is written and announced. */
  onChunk?(index: number, bytesSoFar: number): void;
}

export interface ChunkFeed {
  /** Resolves once every chunk was written and the page server verified it ("ok"); rejects when a fetch failed,
   * the page server refused a chunk, or it went away before verifying them all. */
  done: Promise<{ chunks: number; bytes: number; requested: number[] }>;
  /** Chunks the page server asked for, in the order it asked. */
  requested: number[];
  /** Stops fetching and closes the control connection. */
  cancel(): void;
}

/**
 * Fetches every chunk into `target`, announcing each to the page server, serving its "want"
 * requests first. The page server reads its control socket only once the VM has connected:
 * cancel() a feed whose restore failed.
 */
export async function feedChunks(o: ChunkFeedOptions): Promise<ChunkFeed> {
  const count = Math.ceil(o.sizeBytes / o.chunkSize);
  if (
    new Set(o.order).size !== count ||
    o.order.length !== count ||
    o.order.some((c) => !Number.isInteger(c) || c < 0 || c >= count)
  ) {
    throw EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'chunk-order', file: o.target, chunks: count });
  }
  const socket = await connect(o.controlPath);
  const abort = new AbortController();
  const pending = [...o.order];
  const started = new Set<number>();
  const requested: number[] = [];
  const urgent: number[] = [];
  let bytes = 0;
  let chunks = 0;
  let refused: EmbersError | undefined;
  let buffered = '';
  const verified = new Set<number>();
  let waiters: (() => void)[] = [];
  const wakeWorkers = (): void => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  let settle: (() => void) | undefined;
  const allVerified = new Promise<void>((resolve, reject) => {
    settle = () => {
      if (refused) reject(refused);
      else if (verified.size === o.order.length) resolve();
    };
    socket.on('close', () => {
      if (verified.size < o.order.length) {
        refused ??= EmbersError.of('EMB_VMM_COMMAND_FAILED', {
          problem: 'page-server-gone',
          file: o.target,
          verified: verified.size,
          chunks: o.order.length,
        });
        abort.abort(refused);
        reject(refused);
        wakeWorkers();
      }
    });
  });
  allVerified.catch(() => undefined);
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => {
    buffered += text;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const [verb, arg] = buffered.slice(0, nl).split(' ');
      buffered = buffered.slice(nl + 1);
      const index = Number(arg);
      if (verb === 'ok' && Number.isInteger(index)) {
        verified.add(index);
        settle?.();
      } else if (verb === 'want' && Number.isInteger(index)) {
        requested.push(index);
        if (!started.has(index)) urgent.push(index);
        o.onRequest?.(index);
        wakeWorkers();
      } else if (verb === 'bad') {
        refused = EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'chunk-refused', file: o.target, chunk: index });
        abort.abort(refused);
        settle?.();
        wakeWorkers();
      }
    }
  });
  socket.on('error', () => undefined);
  const fh = await open(o.target, 'r+');

  let released = o.backgroundAfter === undefined;
  void o.backgroundAfter?.then(
    () => ((released = true), wakeWorkers()),
    () => ((released = true), wakeWorkers()),
  );

  function next(): number | undefined {
    for (const queue of released ? [urgent, pending] : [urgent]) {
      while (queue.length) {
        const c = queue.shift()!;
        if (!started.has(c)) return c;
      }
    }
    return undefined;
  }

  async function worker(): Promise<void> {
    for (;;) {
      if (refused) throw refused;
      const c = next();
      if (c === undefined && !released) {
        await new Promise<void>((resolve) => waiters.push(resolve));
        continue;
      }
      if (c === undefined) return;
      started.add(c);
      const data = await o.fetchChunk(c, abort.signal);
      const expected = Math.min(o.chunkSize, o.sizeBytes - c * o.chunkSize);
      if (data.length !== expected) {
        throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
          problem: 'chunk-length',
          file: o.target,
          chunk: c,
          actualBytes: data.length,
          sizeBytes: expected,
        });
      }
      await fh.write(data, 0, data.length, c * o.chunkSize);
      bytes += data.length;
      chunks++;
      if (!socket.destroyed) socket.write(`ready ${c}\n`);
      o.onChunk?.(c, bytes);
    }
  }

  const done = (async () => {
    try {
      await Promise.all(Array.from({ length: o.concurrency ?? 2 }, () => worker()));
      await allVerified;
      if (o.sha256) {
        const whole = await fileSha256(o.target);
        if (whole !== o.sha256) {
          throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
            problem: 'whole-digest',
            file: o.target,
            actual: whole,
            expected: o.sha256,
          });
        }
      }
      return { chunks, bytes, requested };
    } catch (err) {
      abort.abort(err);
      throw refused ?? err;
    } finally {
      await fh.close();
      socket.end();
    }
  })();
  done.catch(() => undefined); // the caller awaits it when it likes; no unhandled rejection meanwhile
  return {
    done,
    requested,
    cancel() {
      abort.abort(new Error('cancelled'));
      refused ??= EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'download-cancelled', file: o.target });
      wakeWorkers();
      pending.length = 0;
      urgent.length = 0;
      socket.destroy();
    },
  };
}

async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const data of createReadStream(path, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>)
    hash.update(data);
  return hash.digest('hex');
}

function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', (err) =>
      reject(
        EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'page-server-unreachable', path, reason: err.message }),
      ),
    );
  });
}

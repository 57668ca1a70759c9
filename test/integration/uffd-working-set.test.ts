/**
 * The page server's REAP modes and its arriving-memory mode, against the harness
 * (test/fixtures/uffd-harness.c): Firecracker's exact Uffd handshake, then a guest touching
 * pages from two threads, every page checked against the memory file. The memory file and
 * working set are synthetic (test/helpers/uffd-harness.ts): data runs and holes, a working
 * set of scattered stretches in first-touch order.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config.js';
import {
  chunkDigests,
  chunkFetchOrder,
  feedChunks,
  writeChunkList,
  type ChunkFeedOptions,
} from '../../src/memory/chunks.js';
import { sha256 } from '../../src/util/fs.js';
import {
  ensureUffdHandler,
  startUffdHandler,
  type UffdHandlerOptions,
} from '../../src/vmm/firecracker/uffd-handler.js';
import { pidAlive } from '../../src/vmm/process.js';
import {
  PAGE,
  buildHarness,
  pagesOf,
  readRanges,
  runHarness,
  syntheticMemoryFile,
  syntheticWorkingSet,
  writeRanges,
  writeWorkingSetPages,
  type HarnessOptions,
} from '../helpers/uffd-harness.js';

const PAGES = 4096; // 16 MiB
const CHUNK = 1 << 20; // 16 chunks
let root: string;
let handlerBin: string;
let harnessBin: string;
let mem: string;
let wsRanges: string;
let wsPages: string;
let wsPageCount: number;
let n = 0;

const needsRoot = (): string | undefined =>
  process.getuid?.() === 0 ? undefined : `needs root for userfaultfd: this process runs as uid ${process.getuid?.()}`;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'embers-uffd-ws-'));
  handlerBin = await ensureUffdHandler(resolveConfig().cacheDir);
  harnessBin = await buildHarness(root);
  mem = join(root, 'memory.bin');
  const runs = await syntheticMemoryFile(mem, PAGES, 11);
  const ws = syntheticWorkingSet(runs, PAGES, 0.3, 12);
  wsRanges = join(root, 'ws.ranges');
  wsPages = join(root, 'ws.pages');
  await writeRanges(wsRanges, ws);
  wsPageCount = (await writeWorkingSetPages(wsPages, mem, ws)) / PAGE;
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

function handlerOptions(extra: Partial<UffdHandlerOptions> = {}): UffdHandlerOptions {
  const i = n++;
  return {
    binary: handlerBin,
    socketPath: join(root, `uffd-${i}.sock`),
    memoryFile: mem,
    statsPath: join(root, `stats-${i}.json`),
    logPath: join(root, `handler-${i}.log`),
    readyPath: join(root, `ready-${i}`),
    ...extra,
  };
}

/** The harness as the guest of page server `server`, every page it touches checked against the memory file. */
function runGuest(server: { socketPath: string }, o: Omit<HarnessOptions, 'socketPath' | 'memoryFile'>) {
  return runHarness(harnessBin, { socketPath: server.socketPath, memoryFile: mem, ...o });
}

async function holePages(path: string): Promise<Set<number>> {
  const data = await readFile(path);
  const zero = Buffer.alloc(PAGE);
  const holes = new Set<number>();
  for (let p = 0; p < data.length / PAGE; p++) if (data.subarray(p * PAGE, (p + 1) * PAGE).equals(zero)) holes.add(p);
  return holes;
}

test('lazy: two threads touching in random order get every page of the memory file; holes are zero pages, not copies', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const h = await startUffdHandler(handlerOptions());
  const r = await runGuest(h, { order: 'random:5', all: true });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.report?.checked, PAGES);
  const stats = await h.stats();
  const holes = await holePages(mem);
  assert.ok(holes.size > 0 && holes.size < PAGES, 'the memory file has holes and data');
  assert.equal(stats.faults, PAGES);
  assert.equal(stats.zeroed, holes.size, 'every hole page, and only those, is a zero page');
  assert.equal(stats.copied, PAGES - holes.size);
  assert.equal(stats.exit, 'process-exited');
});

test('record: the recorded working set is the first-touch order, per thread exactly as touched, coalesced into ranges', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const recordPath = join(root, 'recorded.ranges');
  const h = await startUffdHandler(handlerOptions({ mode: 'record', recordPath }));
  const r = await runGuest(h, { order: wsRanges });
  assert.equal(r.code, 0, r.stderr);
  const stats = await h.stats();
  assert.equal(stats.recorded, wsPageCount);
  const recorded = pagesOf(await readRanges(recordPath));
  const input = await readRanges(wsRanges);
  assert.equal(recorded.length, wsPageCount);
  // The harness deals range i to thread i % 2: each thread's pages appear in the record in its own order.
  for (const thread of [0, 1]) {
    const mine = pagesOf(input.filter((_, i) => i % 2 === thread));
    const set = new Set(mine);
    assert.deepEqual(
      recorded.filter((p) => set.has(p)),
      mine,
      `thread ${thread}'s first touches, in order`,
    );
  }
  const single = await startUffdHandler(
    handlerOptions({ mode: 'record', recordPath: join(root, 'recorded-1.ranges') }),
  );
  assert.equal((await runGuest(single, { order: wsRanges, threads: 1 })).code, 0);
  await single.stats();
  assert.deepEqual(
    pagesOf(await readRanges(join(root, 'recorded-1.ranges'))),
    pagesOf(input),
    'one thread: the record is the touch order itself',
  );
});

test('prefetch: the working set is copied in before the guest runs (no fault on it), the rest is served lazily', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  for (const pages of [wsPages, undefined]) {
    const o = handlerOptions({
      mode: 'prefetch',
      workingSet: {
        rangesPath: wsRanges,
        pagesPath: pages,
        pagesSha256: pages ? sha256(await readFile(pages)) : undefined,
      },
    });
    const h = await startUffdHandler(o);
    const r = await runGuest(h, { order: wsRanges, waitFile: o.readyPath, all: true });
    assert.equal(r.code, 0, r.stderr);
    const stats = await h.stats();
    assert.equal(stats.prefetched, wsPageCount, `prefetched from ${pages ? 'the pages file' : 'the memory file'}`);
    assert.equal(stats.faults, PAGES - wsPageCount, 'only pages outside the working set fault');
    assert.equal(stats.copied + stats.zeroed, PAGES);
  }
});

test('pages given back while other threads fault (UFFD_EVENT_REMOVE mid-run, lazy and during a prefetch) read back as zeros; every other page is right', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  for (const mode of ['lazy', 'prefetch'] as const) {
    const o = handlerOptions(mode === 'prefetch' ? { mode, workingSet: { rangesPath: wsRanges } } : {});
    const h = await startUffdHandler(o);
    const r = await runGuest(h, { order: mode === 'lazy' ? 'random:9' : wsRanges, all: true, removeEvery: 5 });
    assert.equal(r.code, 0, `${mode}: ${r.stderr}`);
    assert.ok(r.report!.removed > 0);
    const stats = await h.stats();
    assert.equal(stats.removed_ranges, r.report!.removed, `${mode}: the page server saw every REMOVE`);
  }
});

test('prefetch: a pages file that does not match its sha256 is refused before any page is served', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const o = handlerOptions({
    mode: 'prefetch',
    workingSet: { rangesPath: wsRanges, pagesPath: wsPages, pagesSha256: '0'.repeat(64) },
  });
  const h = await startUffdHandler(o);
  const r = await runGuest(h, { order: wsRanges, waitFile: o.readyPath });
  assert.equal(r.code, 2, `the harness sees the page server gone: ${r.stderr}`);
  assert.match(await readFile(o.logPath, 'utf8'), /does not match its sha256: refused/);
});

/** A copy of the memory file to arrive chunk by chunk: its final size, nothing in it yet. */
async function arrivingSetup(name: string) {
  const target = join(root, `${name}.bin`);
  const fh = await open(target, 'w');
  await fh.truncate(PAGES * PAGE);
  await fh.close();
  const digests = await chunkDigests(mem, CHUNK);
  const chunkListPath = join(root, `${name}.chunks`);
  await writeChunkList(chunkListPath, digests);
  const good = await readFile(mem);
  const arriving = { chunkListPath, chunkSize: CHUNK, controlPath: join(root, `${name}.ctl`) };
  return {
    target,
    digests,
    good,
    arriving,
    /** Chunk i of the memory file, as the store holds it. */
    chunk: (i: number) => good.subarray(i * CHUNK, (i + 1) * CHUNK),
    /** Fills the copy chunk by chunk for the page server, as a download would. */
    feedCopy: (o: Omit<ChunkFeedOptions, 'controlPath' | 'target' | 'sizeBytes' | 'chunkSize'>) =>
      feedChunks({ controlPath: arriving.controlPath, target, sizeBytes: PAGES * PAGE, chunkSize: CHUNK, ...o }),
  };
}

test('arriving memory: a guest starts before the file is there; each fault waits for its chunk, which is fetched first; every page is right', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const { target, digests, good, arriving, chunk, feedCopy } = await arrivingSetup('arriving');
  assert.equal(digests.length, (PAGES * PAGE) / CHUNK);
  const h = await startUffdHandler(handlerOptions({ memoryFile: target, arriving }));
  let asked!: () => void;
  const firstRequest = new Promise<void>((resolve) => (asked = resolve));
  const order = chunkFetchOrder(digests.length, CHUNK).reverse(); // the guest wants chunk 0 first: the worst order
  const feed = await feedCopy({
    order,
    sha256: sha256(good),
    onRequest: () => asked(),
    // Nothing arrives until the page server asks: its first fault must wait.
    fetchChunk: async (i) => {
      await firstRequest;
      return chunk(i);
    },
  });
  const r = await runGuest(h, { order: 'seq', all: true });
  assert.equal(r.code, 0, r.stderr);
  const fed = await feed.done;
  assert.equal(fed.chunks, digests.length);
  assert.equal(feed.requested[0], 0, 'the first fault (page 0) asked for chunk 0');
  const stats = await h.stats();
  assert.equal(stats.chunks_verified, digests.length);
  assert.ok(stats.chunk_waits >= 1 && stats.wanted >= 1, JSON.stringify(stats));
  assert.equal(stats.copied + stats.zeroed, PAGES);
});

test('arriving memory with a working set: it is copied in from its chunks as each is verified, before the guest runs; the rest streams in behind', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const { target, digests, good, arriving, chunk, feedCopy } = await arrivingSetup('arriving-ws');
  const o = handlerOptions({ memoryFile: target, arriving, mode: 'prefetch', workingSet: { rangesPath: wsRanges } });
  const h = await startUffdHandler(o);
  const ws = await readRanges(wsRanges);
  const feed = await feedCopy({
    order: chunkFetchOrder(digests.length, CHUNK, ws),
    sha256: sha256(good),
    fetchChunk: async (i) => chunk(i),
  });
  const r = await runGuest(h, { order: wsRanges, waitFile: o.readyPath, all: true });
  assert.equal(r.code, 0, r.stderr);
  await feed.done;
  const stats = await h.stats();
  assert.equal(stats.prefetched, wsPageCount, 'the whole working set came from verified chunks');
  assert.equal(stats.faults, PAGES - wsPageCount, 'no fault on the working set');
  assert.equal(stats.chunks_verified, digests.length);
});

test('arriving memory: a corrupted chunk is refused, never served: the guest sees the page server gone, the download fails', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const { target, digests, arriving, chunk, feedCopy } = await arrivingSetup('corrupt');
  const bad = 5;
  const o = handlerOptions({ memoryFile: target, arriving });
  const h = await startUffdHandler(o);
  const feed = await feedCopy({
    order: chunkFetchOrder(digests.length, CHUNK),
    concurrency: 1,
    fetchChunk: async (i) => {
      const data = Buffer.from(chunk(i));
      if (i === bad) data[12345] ^= 0xff; // one flipped byte
      return data;
    },
  });
  const r = await runGuest(h, { order: 'random:3', all: true });
  assert.equal(r.code, 2, `the harness must see an error, never wrong data (exit 1): ${r.stderr}`);
  await assert.rejects(
    feed.done,
    (err: Error & { code?: string }) => err.code === 'EMB_SNAPSHOT_CORRUPT' && /chunk 5/.test(err.message),
  );
  const stats = await h.stats();
  assert.equal(stats.exit, 'chunk-corrupt');
  assert.equal(stats.bad_chunk, bad);
  assert.equal(await pidAlive(h.pid), false);
});

test('a page server that dies mid-run: the guest sees an error, never wrong data', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const { target, digests, arriving, chunk, feedCopy } = await arrivingSetup('dies');
  const h = await startUffdHandler(handlerOptions({ memoryFile: target, arriving }));
  let delivered = 0;
  let asked!: () => void;
  const firstRequest = new Promise<void>((resolve) => (asked = resolve));
  const feed = await feedCopy({
    order: chunkFetchOrder(digests.length, CHUNK),
    concurrency: 1,
    onRequest: () => asked(),
    // Once the guest runs, half the chunks come; then the page server is killed while the guest waits for the next.
    fetchChunk: async (i, signal) => {
      await firstRequest;
      if (delivered++ < digests.length / 2) return chunk(i);
      process.kill(h.pid, 'SIGKILL');
      return new Promise<Buffer>((_, reject) => signal.addEventListener('abort', () => reject(new Error('cancelled'))));
    },
  });
  const r = await runGuest(h, { order: 'seq', all: true });
  assert.equal(r.code, 2, `the harness must see an error, never wrong data (exit 1): ${r.stderr}`);
  assert.match(r.stderr, /page server closed its connection/);
  feed.cancel();
  await feed.done.catch(() => undefined);
  assert.equal(await pidAlive(h.pid), false);
});

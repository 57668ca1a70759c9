/**
 * The Firecracker page server (native/uffd-handler.c) with REAP working sets, on the harness
 * (test/fixtures/uffd-harness.c: Firecracker's Uffd handshake, then a guest touching its
 * working set from two threads). `npm run bench -- reap-pager [--mem-mib N] [--ws-share F] [--runs N]
 * [--memory FILE --ws-ranges FILE]`;
 * bench/reap.ts prints these rows next to the QEMU figures through `runPagerBench()`.
 *
 * (b) Cold page cache (posix_fadvise DONTNEED on the memory file and the working-set pages,
 *     through `dd iflag=nocache count=0`, before every run): the time from the handshake
 *     until the guest has touched its whole working set, lazy (one fault per page, each read
 *     from the memory file) vs prefetch (the working set copied in by batches from its pages
 *     file before the guest runs, REAP's order; the wait counts). Modes alternate, medians.
 * (c) Remote, from the S3 test server on loopback: the time until a clone can start (its
 *     page server ready, the guest may run) when waiting for the whole memory file vs when
 *     fetching the working set first (its pages file, then 4 MiB chunks, working-set chunks
 *     first, faults asking for theirs), and the bytes fetched by then (goal: no more than the
 *     working set's bytes plus one chunk).
 *
 * Here the memory file and the working set are synthetic (test/helpers/uffd-harness.ts): data
 * runs and holes, a working set of scattered stretches, about --ws-share of the data pages; or a
 * real snapshot's memory file and the working set recorded from that same snapshot (--memory,
 * --ws-ranges; only read; a ranges file recorded from another snapshot does not describe this
 * file's bytes). `npm run bench -- reap` runs these parts on the test function's real snapshot
 * and the working set it records in the same run.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { resolveConfig } from '../src/config.js';
import {
  MEMORY_CHUNK_SIZE,
  chunkDigests,
  chunkFetchOrder,
  feedChunks,
  writeChunkList,
  type PageRange,
} from '../src/memory/chunks.js';
import { run } from '../src/util/exec.js';
import { ensureUffdHandler, startUffdHandler, type UffdHandlerOptions } from '../src/vmm/firecracker/uffd-handler.js';
import { startS3Server } from '../test/helpers/s3-server.js';
import {
  PAGE,
  buildHarness,
  readRanges,
  runHarness,
  syntheticMemoryFile,
  syntheticWorkingSet,
  writeRanges,
  writeWorkingSetPages,
} from '../test/helpers/uffd-harness.js';
import { median, optionValue, printTable } from './table.js';

export interface PagerBenchOptions {
  /** Guest memory size in MiB. @default 256 */
  memMiB?: number;
  /** Share of the data pages in the working set. @default 0.25 */
  wsShare?: number;
  /** Runs of each mode (medians are reported). @default 3 */
  runs?: number;
  /** A real snapshot's memory file and its recorded working set (workingset.ranges, WS-FORMAT.md),
   * e.g. from `embers snapshot record-ws`, instead of synthetic ones (memMiB and wsShare are then unused).
   * `dataRanges` (the manifest's data map of the memory file, [offset, length] runs): when given, the
   * whole-file baseline of (c) fetches only the chunks holding data, as a sparse transfer would. */
  real?: { memoryFile: string; rangesPath: string; dataRanges?: [number, number][] };
}

export interface PagerBenchResult {
  memoryBytes: number;
  workingSetBytes: number;
  workingSetPages: number;
  /** (b): medians, ms from handshake to the whole working set touched, cold cache. */
  lazyMs: number;
  prefetchMs: number;
  prefetchFromMemoryFileMs: number;
  lazyPagesPerSec: number;
  prefetchPagesPerSec: number;
  /** lazy ÷ prefetch (goal >= 3). */
  ratio: number;
  /** (c): ms until a clone can start, and bytes fetched by then (the whole file: its chunks holding data when the data map is known). */
  remoteWholeStartMs: number;
  remoteWholeBytes: number;
  remoteWsFirstStartMs: number;
  remoteWsFirstBytes: number;
  /** The goal for remoteWsFirstBytes: the working set's bytes plus one chunk. */
  remoteGoalBytes: number;
  /** Whole-file wait ÷ working-set-first wait. */
  remoteRatio: number;
  /** Rows to print: [what, figure, unit]. */
  rows: (string | number)[][];
}

const MiB = 1 << 20;

/** Drops a file's pages from the page cache (posix_fadvise DONTNEED on the whole file). */
async function evict(path: string): Promise<void> {
  await run('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none']);
}

async function fileSha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

/** Measures (b) and (c); returns the figures and printable rows. */
export async function runPagerBench(opts: PagerBenchOptions = {}): Promise<PagerBenchResult> {
  if (process.getuid?.() !== 0) throw new Error('the page-server bench needs root (userfaultfd)');
  const memBytes = opts.real ? (await stat(opts.real.memoryFile)).size : (opts.memMiB ?? 256) * MiB;
  if (memBytes % PAGE !== 0) throw new Error(`the memory file is ${memBytes} bytes: not whole pages`);
  const pages = memBytes / PAGE;
  const runs = opts.runs ?? 3;
  const dir = await mkdtemp(join(tmpdir(), 'embers-bench-pager-'));
  try {
    const handlerBin = await ensureUffdHandler(resolveConfig().cacheDir);
    const harnessBin = await buildHarness(dir);
    const mem = opts.real?.memoryFile ?? join(dir, 'memory.bin');
    const wsRanges = opts.real?.rangesPath ?? join(dir, 'ws.ranges');
    let ws: PageRange[];
    if (opts.real) {
      ws = await readRanges(wsRanges);
    } else {
      const dataRuns = await syntheticMemoryFile(mem, pages, 21, 0.5);
      ws = syntheticWorkingSet(dataRuns, pages, opts.wsShare ?? 0.25, 22);
      await writeRanges(wsRanges, ws);
    }
    const wsPages = join(dir, 'ws.pages');
    const wsBytes = await writeWorkingSetPages(wsPages, mem, ws);
    const wsSha = await fileSha256(wsPages);
    const wsPageCount = wsBytes / PAGE;
    let n = 0;
    const options = (extra: Partial<UffdHandlerOptions>): UffdHandlerOptions => {
      const i = n++;
      return {
        binary: handlerBin,
        socketPath: join(dir, `s${i}.sock`),
        memoryFile: mem,
        statsPath: join(dir, `stats-${i}.json`),
        logPath: join(dir, `handler-${i}.log`),
        readyPath: join(dir, `ready-${i}`),
        ...extra,
      };
    };

    // (b) lazy vs prefetch, cold cache, alternating.
    const samples: Record<'lazy' | 'prefetch' | 'prefetchMem', number[]> = { lazy: [], prefetch: [], prefetchMem: [] };
    for (let r = 0; r < runs; r++) {
      for (const kind of ['lazy', 'prefetch', 'prefetchMem'] as const) {
        await evict(mem);
        await evict(wsPages);
        const o = options(
          kind === 'lazy'
            ? {}
            : {
                mode: 'prefetch',
                workingSet: { rangesPath: wsRanges, pagesPath: kind === 'prefetch' ? wsPages : undefined },
              },
        );
        const h = await startUffdHandler(o);
        const res = await runHarness(harnessBin, {
          socketPath: h.socketPath,
          memoryFile: mem,
          order: wsRanges,
          checkAfter: true,
          waitFile: kind === 'lazy' ? undefined : o.readyPath,
        });
        if (res.code !== 0 || !res.report) throw new Error(`harness (${kind}) failed: ${res.stderr}`);
        await h.stats();
        samples[kind].push(res.report.total_ms);
      }
    }
    const lazyMs = median(samples.lazy);
    const prefetchMs = median(samples.prefetch);
    const prefetchFromMemoryFileMs = median(samples.prefetchMem);

    // (c) remote: whole file first vs working set first.
    const s3 = await startS3Server();
    let remote: { wholeMs: number; wholeBytes: number; wsMs: number; wsBytesFetched: number };
    try {
      const so = s3.storeOptions();
      const client = new S3Client({
        endpoint: so.endpoint,
        region: so.region,
        forcePathStyle: true,
        credentials: so.credentials,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      await client.send(new PutObjectCommand({ Bucket: so.bucket, Key: 'memory.bin', Body: await readFile(mem) }));
      await client.send(new PutObjectCommand({ Bucket: so.bucket, Key: 'ws.pages', Body: await readFile(wsPages) }));
      const digests = await chunkDigests(mem);
      const memSha = await fileSha256(mem);
      const chunkList = join(dir, 'memory.chunks');
      await writeChunkList(chunkList, digests);
      let fetched = 0;
      const get = async (key: string, start?: number, end?: number): Promise<Buffer> => {
        const res = await client.send(
          new GetObjectCommand({
            Bucket: so.bucket,
            Key: key,
            Range: start === undefined ? undefined : `bytes=${start}-${end! - 1}`,
          }),
        );
        const data = Buffer.from(await res.Body!.transformToByteArray());
        fetched += data.length;
        return data;
      };
      const fetchChunk = (i: number): Promise<Buffer> =>
        get('memory.bin', i * MEMORY_CHUNK_SIZE, Math.min(memBytes, (i + 1) * MEMORY_CHUNK_SIZE));
      // The whole-file baseline fetches every chunk, or only those holding data when the data map is known
      // (a sparse transfer skips the holes; the rest of the file is already zeros after the truncate).
      const dataChunks = digests
        .map((_, i) => i)
        .filter((i) => !opts.real?.dataRanges || chunkHasData(opts.real.dataRanges, i));
      const wholeBytes = dataChunks.reduce(
        (n, i) => n + Math.min(MEMORY_CHUNK_SIZE, memBytes - i * MEMORY_CHUNK_SIZE),
        0,
      );
      const wholeSamples: number[] = [];
      const wsSamples: number[] = [];
      let wsBytesFetched = 0;
      for (let r = 0; r < runs; r++) {
        // Whole file: every chunk (2 at a time), the whole-file digest, then the clone starts.
        fetched = 0;
        const target = join(dir, `remote-whole-${r}.bin`);
        const t0 = performance.now();
        const fh = await open(target, 'w');
        await fh.truncate(memBytes);
        const queue = dataChunks.slice();
        await Promise.all(
          [0, 1].map(async () => {
            for (let i = queue.shift(); i !== undefined; i = queue.shift())
              await fh.write(await fetchChunk(i), 0, undefined, i * MEMORY_CHUNK_SIZE);
          }),
        );
        await fh.close();
        if ((await fileSha256(target)) !== memSha) throw new Error('the whole memory file arrived wrong');
        const oWhole = options({ memoryFile: target });
        const hWhole = await startUffdHandler(oWhole);
        wholeSamples.push(performance.now() - t0);
        const resWhole = await runHarness(harnessBin, {
          socketPath: hWhole.socketPath,
          memoryFile: mem,
          order: wsRanges,
          checkAfter: true,
        });
        if (resWhole.code !== 0) throw new Error(`harness (remote whole) failed: ${resWhole.stderr}`);
        await hWhole.stats();
        await rm(target, { force: true });

        // Working set first: its pages file, then the page server starts and the chunks stream in behind.
        fetched = 0;
        const target2 = join(dir, `remote-ws-${r}.bin`);
        const t1 = performance.now();
        const wsLocal = join(dir, `remote-ws-${r}.pages`);
        const pagesData = await get('ws.pages');
        const wfh = await open(wsLocal, 'w');
        await wfh.write(pagesData);
        await wfh.close();
        const fh2 = await open(target2, 'w');
        await fh2.truncate(memBytes);
        await fh2.close();
        const controlPath = join(dir, `ctl-${r}.sock`);
        const o = options({
          memoryFile: target2,
          mode: 'prefetch',
          workingSet: { rangesPath: wsRanges, pagesPath: wsLocal, pagesSha256: wsSha },
          arriving: { chunkListPath: chunkList, chunkSize: MEMORY_CHUNK_SIZE, controlPath },
        });
        const h = await startUffdHandler(o);
        const started = h.ready();
        const feed = await feedChunks({
          controlPath,
          target: target2,
          sizeBytes: memBytes,
          chunkSize: MEMORY_CHUNK_SIZE,
          order: chunkFetchOrder(digests.length, MEMORY_CHUNK_SIZE, ws),
          sha256: memSha,
          fetchChunk,
          backgroundAfter: started,
        });
        // The guest touches its working set, then every other page (each waits for its chunk): all checked.
        const harness = runHarness(harnessBin, {
          socketPath: h.socketPath,
          memoryFile: mem,
          order: wsRanges,
          checkAfter: true,
          waitFile: o.readyPath,
          all: true,
        });
        await started;
        wsSamples.push(performance.now() - t1);
        wsBytesFetched = Math.max(wsBytesFetched, fetched);
        const res = await harness;
        if (res.code !== 0) throw new Error(`harness (remote working set first) failed: ${res.stderr}`);
        await feed.done;
        await h.stats();
        await rm(target2, { force: true });
      }
      remote = { wholeMs: median(wholeSamples), wholeBytes, wsMs: median(wsSamples), wsBytesFetched };
      client.destroy();
    } finally {
      await s3.dispose();
    }

    const rows: (string | number)[][] = [
      ['memory file', memBytes / MiB, `MiB (${opts.real ? opts.real.memoryFile : 'synthetic: data runs and holes'})`],
      [
        'working set',
        wsBytes / MiB,
        `MiB (${((100 * wsBytes) / memBytes).toFixed(1)}% of memory, ${wsPageCount} pages, ${ws.length} ranges)`,
      ],
      ['(b) lazy, cold cache: handshake -> working set touched', lazyMs, 'ms (median)'],
      ['(b) prefetch from the pages file, cold cache', prefetchMs, 'ms (median, includes the prefetch)'],
      ['(b) prefetch from the memory file, cold cache', prefetchFromMemoryFileMs, 'ms (median)'],
      ['(b) lazy', wsPageCount / (lazyMs / 1000), 'pages/s'],
      ['(b) prefetch', wsPageCount / (prefetchMs / 1000), 'pages/s'],
      ['(b) lazy / prefetch', lazyMs / prefetchMs, 'x (goal >= 3)'],
      [
        '(c) remote, whole file first: clone can start after',
        remote.wholeMs,
        `ms, ${(remote.wholeBytes / MiB).toFixed(1)} MiB fetched${opts.real?.dataRanges ? ' (the chunks holding data; holes skipped)' : ''}`,
      ],
      [
        '(c) remote, working set first: clone can start after',
        remote.wsMs,
        `ms, ${(remote.wsBytesFetched / MiB).toFixed(1)} MiB fetched`,
      ],
      [
        '(c) goal: working set + one chunk',
        (wsBytes + MEMORY_CHUNK_SIZE) / MiB,
        `MiB (${remote.wsBytesFetched <= wsBytes + MEMORY_CHUNK_SIZE ? 'met' : 'NOT met'})`,
      ],
      ['(c) whole / working set first', remote.wholeMs / remote.wsMs, 'x'],
    ];
    return {
      memoryBytes: memBytes,
      workingSetBytes: wsBytes,
      workingSetPages: wsPageCount,
      lazyMs,
      prefetchMs,
      prefetchFromMemoryFileMs,
      lazyPagesPerSec: wsPageCount / (lazyMs / 1000),
      prefetchPagesPerSec: wsPageCount / (prefetchMs / 1000),
      ratio: lazyMs / prefetchMs,
      remoteWholeStartMs: remote.wholeMs,
      remoteWholeBytes: remote.wholeBytes,
      remoteWsFirstStartMs: remote.wsMs,
      remoteWsFirstBytes: remote.wsBytesFetched,
      remoteGoalBytes: wsBytes + MEMORY_CHUNK_SIZE,
      remoteRatio: remote.wholeMs / remote.wsMs,
      rows,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Whether chunk `i` of the memory file overlaps one of its data runs. */
function chunkHasData(dataRanges: [number, number][], i: number): boolean {
  const start = i * MEMORY_CHUNK_SIZE;
  const end = start + MEMORY_CHUNK_SIZE;
  return dataRanges.some(([off, len]) => off < end && off + len > start);
}

function realFiles(args: string[]): PagerBenchOptions['real'] {
  const at = (name: string): string | undefined => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const memoryFile = at('memory');
  const rangesPath = at('ws-ranges');
  if (!memoryFile !== !rangesPath) throw new Error('--memory FILE and --ws-ranges FILE go together');
  return memoryFile && rangesPath ? { memoryFile, rangesPath } : undefined;
}

/** `npm run bench -- reap-pager`: prints the table, returns the figures (for --json). */
export async function benchReapPager(args: string[]): Promise<Record<string, unknown>> {
  const result = await runPagerBench({
    memMiB: optionValue(args, 'mem-mib', 256),
    wsShare: optionValue(args, 'ws-share', 0.25),
    runs: optionValue(args, 'runs', 3),
    real: realFiles(args),
  });
  printTable(['what', 'figure', 'unit'], result.rows);
  const { rows, ...figures } = result;
  void rows;
  return { ...figures };
}

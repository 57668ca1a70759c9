/**
 * The page-server harness (test/fixtures/uffd-harness.c: Firecracker's side of a Uffd load,
 * then a guest touching pages from several threads and checking each against the memory
 * file), plus what tests and bench/reap-pager.ts feed it: a synthetic guest memory file with
 * holes and a working set in first-touch order, in WS-FORMAT.md's binary layout.
 */
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { PageRange } from '../../src/memory/chunks.js';
import { run, type RunResult } from '../../src/util/exec.js';
import { repoPath } from './repo.js';

export const PAGE = 4096;

/** Builds the harness into `dir` with gcc; returns its path. */
export async function buildHarness(dir: string): Promise<string> {
  const bin = join(dir, 'uffd-harness');
  await run('gcc', [
    '-O2',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-pthread',
    '-o',
    bin,
    repoPath('test/fixtures/uffd-harness.c'),
  ]);
  return bin;
}

export interface HarnessResult {
  code: number;
  stderr: string;
  /** Parsed from its JSON line when it exited 0. */
  report?: {
    touched: number;
    removed: number;
    checked: number;
    handshake_ms: number;
    wait_ms: number;
    touch_ms: number;
    total_ms: number;
  };
}

export interface HarnessOptions {
  socketPath: string;
  /** The memory file every page is checked against (the good one). */
  memoryFile: string;
  /** A ranges file, `random:SEED[:COUNT]` or `seq`. */
  order: string;
  threads?: number;
  waitFile?: string;
  /** Check pages after touching them all (benchmarks), not as each is touched. */
  checkAfter?: boolean;
  /** Also check (and so fault in) every other page. */
  all?: boolean;
  /** Thread 0 gives back every Nth page it touched (madvise DONTNEED): it must then read as zeros. */
  removeEvery?: number;
}

/** Runs the harness to its end; exit 1 (wrong data) and 2 (page server gone) are returned, not thrown. */
export async function runHarness(bin: string, o: HarnessOptions): Promise<HarnessResult> {
  const args = [
    '--socket',
    o.socketPath,
    '--mem-file',
    o.memoryFile,
    '--order',
    o.order,
    '--threads',
    String(o.threads ?? 2),
  ];
  if (o.waitFile) args.push('--wait-file', o.waitFile);
  if (o.checkAfter) args.push('--check-after');
  if (o.all) args.push('--all');
  if (o.removeEvery) args.push('--remove-every', String(o.removeEvery));
  const r: RunResult = await run(bin, args, { okCodes: [1, 2] });
  return { code: r.code, stderr: r.stderr, report: r.code === 0 ? JSON.parse(r.stdout.trim()) : undefined };
}

/** A small deterministic PRNG (xorshift32), so generated files are the same on every run. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

/**
 * A guest memory file shaped like a small VM's: `pages` pages where runs of data (kernel,
 * page cache, heap: 1 to 64 pages, every page distinct) alternate with holes (never-touched
 * memory), about `dataShare` of it data. Written sparse. Returns the data runs as page ranges.
 */
export async function syntheticMemoryFile(
  path: string,
  pages: number,
  seed = 1,
  dataShare = 0.4,
): Promise<PageRange[]> {
  const rand = prng(seed);
  const runs: PageRange[] = [];
  const fh = await open(path, 'w');
  try {
    await fh.truncate(pages * PAGE);
    let p = 0;
    while (p < pages) {
      const len = Math.min(pages - p, 1 + Math.floor(rand() * 64));
      if (rand() < dataShare) {
        const buf = Buffer.alloc(len * PAGE);
        for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE((rand() * 0x100000000) >>> 0, i);
        for (let i = 0; i < len; i++) buf.writeUInt32LE(p + i, i * PAGE); // every page unique
        await fh.write(buf, 0, buf.length, p * PAGE);
        runs.push({ firstPage: p, pageCount: len });
      }
      p += len;
    }
  } finally {
    await fh.close();
  }
  return runs;
}

/**
 * A working set in first-touch order over a memory file's data runs: about `share` of the
 * data pages, as REAP sees them: contiguous stretches (1 to 16 pages) scattered in random
 * order, now and then a page of a hole (zeroed memory the guest reads).
 */
export function syntheticWorkingSet(dataRuns: PageRange[], pages: number, share: number, seed = 2): PageRange[] {
  const rand = prng(seed);
  const taken = new Uint8Array(pages);
  const out: PageRange[] = [];
  for (const r of dataRuns) {
    let p = r.firstPage;
    while (p < r.firstPage + r.pageCount) {
      const len = Math.min(r.firstPage + r.pageCount - p, 1 + Math.floor(rand() * 16));
      if (rand() < share) {
        out.push({ firstPage: p, pageCount: len });
        for (let i = 0; i < len; i++) taken[p + i] = 1;
      }
      p += len;
    }
  }
  for (let i = 0; i < out.length / 20; i++) {
    const p = Math.floor(rand() * pages);
    if (!taken[p]) {
      taken[p] = 1;
      out.push({ firstPage: p, pageCount: 1 });
    }
  }
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Writes a workingset.ranges file (WS-FORMAT.md). */
export async function writeRanges(path: string, ranges: PageRange[]): Promise<void> {
  const buf = Buffer.alloc(16 + 16 * ranges.length);
  buf.write('EMBWS1\0\0', 0, 'latin1');
  buf.writeUInt32LE(PAGE, 8);
  buf.writeUInt32LE(ranges.length, 12);
  ranges.forEach((r, i) => {
    buf.writeBigUInt64LE(BigInt(r.firstPage), 16 + 16 * i);
    buf.writeUInt32LE(r.pageCount, 24 + 16 * i);
  });
  await writeFile(path, buf);
}

/** Reads a workingset.ranges file (WS-FORMAT.md). */
export async function readRanges(path: string): Promise<PageRange[]> {
  const buf = await readFile(path);
  if (buf.subarray(0, 8).toString('latin1') !== 'EMBWS1\0\0')
    throw new Error(`${path} is not a working-set ranges file`);
  const count = buf.readUInt32LE(12);
  if (buf.length !== 16 + 16 * count) throw new Error(`${path}: size does not match ${count} ranges`);
  return Array.from({ length: count }, (_, i) => ({
    firstPage: Number(buf.readBigUInt64LE(16 + 16 * i)),
    pageCount: buf.readUInt32LE(24 + 16 * i),
  }));
}

/** Writes the working set's pages file: the ranges' bytes from the memory file, in order. */
export async function writeWorkingSetPages(path: string, memoryFile: string, ranges: PageRange[]): Promise<number> {
  const src = await open(memoryFile, 'r');
  const dst = await open(path, 'w');
  let at = 0;
  try {
    for (const r of ranges) {
      const buf = Buffer.alloc(r.pageCount * PAGE);
      await src.read(buf, 0, buf.length, r.firstPage * PAGE);
      await dst.write(buf, 0, buf.length, at);
      at += buf.length;
    }
  } finally {
    await src.close();
    await dst.close();
  }
  return at;
}

/** The pages of ranges, one by one, in order. */
export function pagesOf(ranges: PageRange[]): number[] {
  return ranges.flatMap((r) => Array.from({ length: r.pageCount }, (_, i) => r.firstPage + i));
}

import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';

/**
 * The working set of a snapshot (REAP): the guest memory pages a restored function touched on
 * its first invocation. Two files, in the format of WS-FORMAT (shared with the C page server in
 * native/):
 *
 * `workingset.ranges`, little-endian:
 *   bytes 0..7  magic "EMBWS1\0\0"
 *   u32         page size (4096)
 *   u32         count of ranges
 *   count × 16  { u64 first page (file offset / page size), u32 page count (>= 1), u32 reserved (0) }
 * Ranges are in first-touch order (or file order, when the recorder cannot see the order) and
 * never overlap.
 *
 * `workingset.pages`: the bytes of those pages, concatenated in the order of the records.
 */

export const WORKING_SET_FILES = { ranges: 'workingset.ranges', pages: 'workingset.pages' } as const;
export const WORKING_SET_MAGIC = Buffer.from('EMBWS1\0\0', 'latin1');
export const WORKING_SET_PAGE_SIZE = 4096;
const HEADER_BYTES = 16;
const RECORD_BYTES = 16;
/** More ranges than this is not a working set but a corrupt count (4 Mi ranges = 16 GiB of single pages). */
const MAX_RANGES = 4 * 1024 * 1024;

export interface PageRange {
  /** Page index into the memory file (byte offset / page size). */
  firstPage: number;
  /** Contiguous pages, >= 1. */
  pageCount: number;
}

export interface WorkingSetRanges {
  pageSize: number;
  /** In first-touch (or file) order; never overlapping. */
  ranges: PageRange[];
}

export function totalPages(ws: WorkingSetRanges): number {
  return ws.ranges.reduce((n, r) => n + r.pageCount, 0);
}

/** EMB_WORKING_SET_INVALID for the ranges or pages file `source`, saying in `reason` what is malformed. */
function invalid(source: string, reason: string, details: { memoryBytes?: number } = {}): EmbersError {
  return EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'invalid', source, reason, ...details });
}

/**
 * Parses a `workingset.ranges` file. Refuses a wrong magic, a page size other than 4096, a
 * length that does not match the count (truncated or trailing bytes), empty ranges, non-zero
 * reserved fields, overlapping ranges and, given `memoryBytes`, ranges past the memory file.
 */
export function parseWorkingSetRanges(
  buf: Buffer,
  source: string,
  opts: { memoryBytes?: number } = {},
): WorkingSetRanges {
  if (buf.length < HEADER_BYTES)
    throw invalid(source, `${buf.length} bytes is shorter than the ${HEADER_BYTES}-byte header (truncated)`);
  if (!buf.subarray(0, 8).equals(WORKING_SET_MAGIC)) {
    throw invalid(source, `bad magic ${JSON.stringify(buf.subarray(0, 8).toString('latin1'))} (expected "EMBWS1")`);
  }
  const pageSize = buf.readUInt32LE(8);
  if (pageSize !== WORKING_SET_PAGE_SIZE)
    throw invalid(source, `page size ${pageSize}, expected ${WORKING_SET_PAGE_SIZE}`);
  const count = buf.readUInt32LE(12);
  if (count > MAX_RANGES) throw invalid(source, `${count} ranges is more than ${MAX_RANGES}`);
  const expected = HEADER_BYTES + count * RECORD_BYTES;
  if (buf.length !== expected) {
    throw invalid(
      source,
      `${buf.length} bytes for ${count} ranges, expected ${expected} (${buf.length < expected ? 'truncated' : 'trailing bytes'})`,
    );
  }
  const ranges: PageRange[] = [];
  for (let i = 0; i < count; i++) {
    const at = HEADER_BYTES + i * RECORD_BYTES;
    const first = buf.readBigUInt64LE(at);
    const pageCount = buf.readUInt32LE(at + 8);
    const reserved = buf.readUInt32LE(at + 12);
    if (first * BigInt(pageSize) > BigInt(Number.MAX_SAFE_INTEGER))
      throw invalid(source, `range ${i} starts at page ${first}, past any memory file`);
    if (pageCount < 1) throw invalid(source, `range ${i} has no pages`);
    if (reserved !== 0) throw invalid(source, `range ${i} has a non-zero reserved field`);
    ranges.push({ firstPage: Number(first), pageCount });
  }
  const ws = { pageSize, ranges };
  checkRanges(ws, source, opts.memoryBytes);
  return ws;
}

/** Refuses overlapping or empty ranges, and ranges past `memoryBytes` when given. */
export function checkRanges(ws: WorkingSetRanges, source: string, memoryBytes?: number): void {
  const sorted = ws.ranges.map((r, index) => ({ ...r, index })).sort((a, b) => a.firstPage - b.firstPage);
  for (let i = 0; i < sorted.length; i++) {
    const r = sorted[i]!;
    if (
      !Number.isSafeInteger(r.firstPage) ||
      r.firstPage < 0 ||
      !Number.isInteger(r.pageCount) ||
      r.pageCount < 1 ||
      r.pageCount > 0xffffffff
    ) {
      throw invalid(source, `range ${r.index} (${r.firstPage}+${r.pageCount}) is not a page range`);
    }
    const prev = sorted[i - 1];
    if (prev && prev.firstPage + prev.pageCount > r.firstPage) {
      throw invalid(
        source,
        `ranges ${prev.index} (pages ${prev.firstPage}+${prev.pageCount}) and ${r.index} (pages ${r.firstPage}+${r.pageCount}) overlap`,
      );
    }
    if (memoryBytes !== undefined && (r.firstPage + r.pageCount) * ws.pageSize > memoryBytes) {
      throw invalid(
        source,
        `range ${r.index} (pages ${r.firstPage}+${r.pageCount}) ends past the ${memoryBytes}-byte memory file`,
        { memoryBytes },
      );
    }
  }
}

/** The bytes of a `workingset.ranges` file; refuses ranges that `parseWorkingSetRanges` would refuse. */
export function encodeWorkingSetRanges(ws: WorkingSetRanges): Buffer {
  if (ws.pageSize !== WORKING_SET_PAGE_SIZE)
    throw invalid('(being written)', `page size ${ws.pageSize}, expected ${WORKING_SET_PAGE_SIZE}`);
  checkRanges(ws, '(being written)');
  const buf = Buffer.alloc(HEADER_BYTES + ws.ranges.length * RECORD_BYTES);
  WORKING_SET_MAGIC.copy(buf, 0);
  buf.writeUInt32LE(ws.pageSize, 8);
  buf.writeUInt32LE(ws.ranges.length, 12);
  ws.ranges.forEach((r, i) => {
    const at = HEADER_BYTES + i * RECORD_BYTES;
    buf.writeBigUInt64LE(BigInt(r.firstPage), at);
    buf.writeUInt32LE(r.pageCount, at + 8);
  });
  return buf;
}

/**
 * Page ranges from page indices in the order they were seen; a page continues the previous
 * range only when it is the next page of it (so coalescing never changes the order). Repeated
 * pages after their first appearance are dropped.
 */
export function rangesFromPages(pages: Iterable<number>, pageSize = WORKING_SET_PAGE_SIZE): WorkingSetRanges {
  const seen = new Set<number>();
  const ranges: PageRange[] = [];
  for (const page of pages) {
    if (seen.has(page)) continue;
    seen.add(page);
    const last = ranges[ranges.length - 1];
    if (last && last.firstPage + last.pageCount === page && last.pageCount < 0xffffffff) last.pageCount++;
    else ranges.push({ firstPage: page, pageCount: 1 });
  }
  return { pageSize, ranges };
}

/**
 * Writes `workingset.pages` for `ws` to `outPath` from the memory file: each range's bytes in
 * record order. Refuses ranges past the end of the memory file.
 */
export async function writeWorkingSetPages(memoryPath: string, ws: WorkingSetRanges, outPath: string): Promise<number> {
  const src = await open(memoryPath, 'r');
  try {
    checkRanges(ws, outPath, (await src.stat()).size);
    const dst = await open(outPath, 'w');
    try {
      const chunk = Buffer.allocUnsafe(1 << 20);
      let written = 0;
      for (const r of ws.ranges) {
        let left = r.pageCount * ws.pageSize;
        let from = r.firstPage * ws.pageSize;
        while (left > 0) {
          const n = Math.min(left, chunk.length);
          const { bytesRead } = await src.read(chunk, 0, n, from);
          if (bytesRead !== n) throw invalid(outPath, `short read of ${memoryPath} at ${from}`);
          await dst.write(chunk, 0, n, written);
          written += n;
          from += n;
          left -= n;
        }
      }
      await dst.sync();
      return written;
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

/** Checks that a `workingset.pages` file has the size its ranges give. */
export function checkPagesSize(ws: WorkingSetRanges, pagesBytes: number, source: string): void {
  const expected = totalPages(ws) * ws.pageSize;
  if (pagesBytes !== expected) throw invalid(source, `${pagesBytes} bytes of pages, the ranges give ${expected}`);
}

/**
 * Writes both working-set files into `dir` (a staging dir): the ranges, and the pages read from
 * the memory file. Returns the pages' size in bytes.
 */
export async function writeWorkingSet(dir: string, memoryPath: string, ws: WorkingSetRanges): Promise<number> {
  const bytes = await writeWorkingSetPages(memoryPath, ws, join(dir, WORKING_SET_FILES.pages));
  await writeFile(join(dir, WORKING_SET_FILES.ranges), encodeWorkingSetRanges(ws));
  return bytes;
}

/** Reads and checks the ranges file in `dir`, against the memory file's size when given. */
export async function readWorkingSetRanges(
  dir: string,
  opts: { memoryBytes?: number } = {},
): Promise<WorkingSetRanges> {
  const path = join(dir, WORKING_SET_FILES.ranges);
  return parseWorkingSetRanges(await readFile(path), path, opts);
}

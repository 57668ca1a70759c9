/**
 * The page cache of one file, for REAP on QEMU: QEMU maps a snapshot's memory file
 * (memory-backend-file, share=off: a private copy-on-write mapping), so every guest page a
 * restored VM reads or writes first comes through the page cache of that file. Evicting the
 * file's pages before a restore and asking which pages are resident after the first request
 * gives the pages the restore touched; reading those pages before the VM resumes prefetches
 * them. Node has neither posix_fadvise nor mincore: native/page-cache.c does the syscalls,
 * built with gcc into the cache, named after the digest of its source (scripts/setup.sh
 * builds it the same way).
 */
import { open, readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../guest/paths.js';
import { run } from '../util/exec.js';
import { ensureNativeTool, nativeToolPath, type NativeTool } from '../util/native-tool.js';
import type { PageRange } from './working-set.js';

/** The tool's C source in the package. */
export function pageCacheToolSource(): string {
  return join(packageRoot(), 'native', 'page-cache.c');
}

const PAGE_CACHE_TOOL = (): NativeTool => ({ name: 'page-cache', sources: [pageCacheToolSource()] });

/** `<cacheDir>/native/page-cache-<sha256[0:12]>` */
export function pageCacheToolPath(cacheDir: string): Promise<string> {
  return nativeToolPath(cacheDir, PAGE_CACHE_TOOL());
}

/** The tool binary, built with gcc if this source was not built yet (see util/native-tool.ts). */
export function ensurePageCacheTool(cacheDir: string): Promise<string> {
  return ensureNativeTool(cacheDir, PAGE_CACHE_TOOL());
}

/** The page cache of one file, through the native tool. */
export class FilePageCache {
  constructor(
    private readonly tool: string,
    readonly path: string,
  ) {}

  static async open(cacheDir: string, path: string): Promise<FilePageCache> {
    return new FilePageCache(await ensurePageCacheTool(cacheDir), path);
  }

  /**
   * Drops the file's pages from the page cache (posix_fadvise DONTNEED on this file only, not
   * a global drop). Pages a running process maps stay; returns how many pages are still resident.
   */
  async evict(): Promise<number> {
    const { stdout } = await run(this.tool, ['evict', this.path]);
    return Number(/resident (\d+)/.exec(stdout)?.[1] ?? NaN);
  }

  /** The runs of resident pages (mincore on a read-only mapping of the file), in file order. */
  async resident(): Promise<PageRange[]> {
    const { stdout } = await run(this.tool, ['resident', this.path]);
    return parseRuns(stdout);
  }

  /**
   * Makes `ranges` resident: sorted by offset and read in file order by `workers` threads
   * (each its own contiguous share), every page in the cache when this resolves. Returns the
   * bytes read.
   */
  async prefetch(ranges: readonly PageRange[], workers = 4): Promise<number> {
    const input = ranges.map((r) => `${r.firstPage} ${r.pageCount}\n`).join('');
    const { stdout } = await run(this.tool, ['prefetch', this.path, String(workers)], { input });
    return Number(/pages (\d+)/.exec(stdout)?.[1] ?? NaN);
  }
}

function parseRuns(text: string): PageRange[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [first, count] = line.split(' ').map(Number);
      return { firstPage: first!, pageCount: count! };
    });
}

/**
 * The pages of `file` that process `pid` has mapped in its page tables (/proc/PID/pagemap:
 * present or swapped), in file order: the pages a VM whose memory is that file actually
 * touched (read, or written and so copied on write), plus the kernel's fault-around (up to 16
 * already-cached neighbours of a read fault). Unlike the page cache (`resident`), this does not
 * count the readahead around each fault (read_ahead_kb, often MiBs). Root only (pagemap).
 */
export async function mappedPages(pid: number, file: string): Promise<PageRange[]> {
  const target = await realpath(file);
  const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
  const pages = new Set<number>();
  const fh = await open(`/proc/${pid}/pagemap`, 'r');
  try {
    for (const line of maps.split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
      if (!m || m[4] !== target) continue;
      const start = Number.parseInt(m[1]!, 16);
      const count = (Number.parseInt(m[2]!, 16) - start) / PAGE;
      const firstFilePage = Number.parseInt(m[3]!, 16) / PAGE;
      const buf = Buffer.alloc(count * 8);
      await fh.read(buf, 0, buf.length, (start / PAGE) * 8);
      for (let i = 0; i < count; i++) {
        const flags = buf.readUInt32LE(i * 8 + 4) >>> 30; // bit 63 present, bit 62 swapped
        if (flags & 0b11) pages.add(firstFilePage + i);
      }
    }
  } finally {
    await fh.close();
  }
  const sorted = [...pages].sort((a, b) => a - b);
  const ranges: PageRange[] = [];
  for (const p of sorted) {
    const last = ranges[ranges.length - 1];
    if (last && last.firstPage + last.pageCount === p) last.pageCount++;
    else ranges.push({ firstPage: p, pageCount: 1 });
  }
  return ranges;
}

const PAGE = 4096;

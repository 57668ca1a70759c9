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
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { packageRoot } from '../guest/paths.js';
import { run } from '../util/exec.js';
import { exists, sha256 } from '../util/fs.js';
import type { PageRange } from './working-set.js';

/** The tool's C source in the package. */
export function pageCacheToolSource(): string {
  return join(packageRoot(), 'native', 'page-cache.c');
}

/** `<cacheDir>/native/page-cache-<sha256[0:12]>` */
export async function pageCacheToolPath(cacheDir: string): Promise<string> {
  const digest = sha256(await readFile(pageCacheToolSource())).slice(0, 12);
  return join(cacheDir, 'native', `page-cache-${digest}`);
}

/** The tool binary, built with gcc if this source was not built yet (built aside, then renamed). */
export async function ensurePageCacheTool(cacheDir: string): Promise<string> {
  const binary = await pageCacheToolPath(cacheDir);
  if (await exists(binary)) return binary;
  await mkdir(join(cacheDir, 'native'), { recursive: true });
  const tmp = `${binary}.tmp-${process.pid}`;
  try {
    await run('gcc', ['-O2', '-Wall', '-Wextra', '-pthread', '-o', tmp, pageCacheToolSource()]);
    await rename(tmp, binary);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return binary;
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

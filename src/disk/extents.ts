import { stat } from 'node:fs/promises';
import { run } from '../util/exec.js';
import type { DeltaRun } from './delta.js';

/** One extent of a file: logical and physical start in filesystem blocks, and its length. */
export interface Extent {
  logical: number;
  physical: number;
  length: number;
}

/**
 * The extent map of a file (FIEMAP, through e2fsprogs' `filefrag -v -s`: synced first, so
 * delayed allocations are on disk). Offsets are in the filesystem's blocks.
 */
export async function fileExtents(path: string): Promise<{ blockSize: number; extents: Extent[] }> {
  const { stdout } = await run('filefrag', ['-v', '-s', path]);
  const blockSize = Number(/\(\d+ blocks? of (\d+) bytes\)/.exec(stdout)?.[1] ?? 0);
  if (!blockSize) throw new Error(`filefrag printed no block size for ${path}`);
  const extents: Extent[] = [];
  for (const line of stdout.split('\n')) {
    const m = /^\s*\d+:\s*(\d+)\.\.\s*(\d+):\s*(\d+)\.\.\s*(\d+):\s*(\d+):/.exec(line);
    if (m) extents.push({ logical: Number(m[1]), physical: Number(m[3]), length: Number(m[5]) });
  }
  return { blockSize, extents };
}

/**
 * The runs where a reflink clone differs from its base, from the two extent maps alone,
 * without reading data: a block is unchanged exactly when the clone still maps it to the
 * same physical block as the base. Everything else — blocks written (copied on write),
 * holes punched where the base has data, data where the base has a hole, growth — is a
 * changed run. Both files must live on the same filesystem (the clone made by reflink).
 */
export async function diffByExtents(base: string, clone: string): Promise<DeltaRun[]> {
  const [b, c, cloneSize] = await Promise.all([fileExtents(base), fileExtents(clone), stat(clone).then((s) => s.size)]);
  const bs = c.blockSize;
  const totalBlocks = Math.ceil(cloneSize / bs);
  // Boundaries where either mapping may change; between two of them each file maps linearly (or not at all).
  const cuts = new Set<number>([0, totalBlocks]);
  for (const e of [...b.extents, ...c.extents]) {
    cuts.add(Math.min(e.logical, totalBlocks));
    cuts.add(Math.min(e.logical + e.length, totalBlocks));
  }
  const points = [...cuts].sort((x, y) => x - y);
  const physAt = (extents: Extent[], block: number) => {
    const e = extents.find((x) => block >= x.logical && block < x.logical + x.length);
    return e ? e.physical + (block - e.logical) : undefined;
  };
  const runs: DeltaRun[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const [from, to] = [points[i], points[i + 1]];
    if (from >= to) continue;
    const pb = physAt(b.extents, from);
    const pc = physAt(c.extents, from);
    if (pb === undefined && pc === undefined) continue; // a hole in both: zeros in both
    if (pb !== undefined && pc === pb) continue; // the same physical blocks
    const offset = from * bs;
    const length = Math.min(to * bs, cloneSize) - offset;
    const last = runs[runs.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else runs.push({ offset, length });
  }
  return runs;
}

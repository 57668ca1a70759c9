/**
 * Garbage collection and crash recovery of the image cache: `collectGarbage` deletes the blobs
 * and rootfs that nothing references, `reconcileImages` what a crash left behind.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pidAlive } from '../util/pid.js';
import { WORK_PREFIX } from './build.js';
import { checkIndex, kindOf } from './manifest.js';
import type { BlobStore } from './registry/blob-store.js';
import type { CacheGuard } from './registry/guard.js';
import type { RefStore } from './registry/refs.js';
import { DIGEST_RE, ENTRY_RE, type RootfsCache } from './rootfs-cache.js';
import type { GcResult } from './types.js';

/** The roots and what they keep: see ImageStore.gc. The caller holds the cache exclusively. */
export async function collectGarbage(
  { blobs, refs, cache }: { blobs: BlobStore; refs: RefStore; cache: RootfsCache },
  inUse: Iterable<string> | (() => Promise<Iterable<string>>),
): Promise<GcResult> {
  const named = await refs.all();
  // read once gc holds the cache: an instance restored while gc waited for it counts
  const roots = new Set<string>(typeof inUse === 'function' ? await inUse() : inUse);
  for (const e of Object.values(named)) {
    roots.add(e.manifestDigest);
    if (e.indexDigest) roots.add(e.indexDigest);
  }
  const keepBlobs = new Set<string>();
  const keepRootfs = new Set<string>();
  const walk = async (digest: string, depth: number): Promise<void> => {
    if (!DIGEST_RE.test(digest) || keepBlobs.has(digest)) return;
    keepRootfs.add(digest);
    if (!(await blobs.has(digest))) return;
    keepBlobs.add(digest);
    let doc: unknown;
    try {
      doc = JSON.parse(await readFile(blobs.path(digest), 'utf8'));
    } catch {
      return; // a layer, or not JSON: a leaf
    }
    if (typeof doc !== 'object' || doc === null || depth > 4) return;
    const d = doc as Record<string, unknown>;
    let kind: 'index' | 'manifest';
    try {
      kind = kindOf(d, { digest, size: 0 });
    } catch {
      return;
    }
    if (kind === 'index') {
      let entries: { digest: string }[] = [];
      try {
        entries = checkIndex(d, digest);
      } catch {
        return;
      }
      for (const child of entries) await walk(child.digest, depth + 1);
      return;
    }
    const config = (d.config as { digest?: unknown } | undefined)?.digest;
    if (typeof config === 'string' && DIGEST_RE.test(config)) keepBlobs.add(config);
    for (const layer of Array.isArray(d.layers) ? (d.layers as { digest?: unknown }[]) : []) {
      if (typeof layer?.digest === 'string' && DIGEST_RE.test(layer.digest)) keepBlobs.add(layer.digest);
    }
  };
  for (const root of roots) await walk(root, 0);

  const result: GcResult = {
    removedBlobs: [],
    removedRootfs: [],
    removedPartialBytes: 0,
    keptBlobs: 0,
    keptRootfs: 0,
    freedBytes: 0,
  };
  for (const blob of await blobs.list()) {
    if (keepBlobs.has(blob.digest)) {
      result.keptBlobs++;
      continue;
    }
    await blobs.remove(blob.digest);
    result.removedBlobs.push(blob);
    result.freedBytes += blob.size;
  }
  const names = await readdir(cache.dir).catch(() => [] as string[]);
  for (const name of names.sort()) {
    const e = ENTRY_RE.exec(name);
    if (!e) continue;
    const digest = `sha256:${e[1]}`;
    if (keepRootfs.has(digest)) {
      result.keptRootfs++;
      continue;
    }
    for (const r of await cache.remove(digest, Number(e[2]))) {
      result.removedRootfs.push({ manifestDigest: digest, ...r });
      result.freedBytes += r.diskBytes;
    }
  }
  result.removedPartialBytes = await blobs.cleanPartials(true);
  result.freedBytes += result.removedPartialBytes;
  return result;
}

/** See ImageStore.reconcile. `active`: work and partial dirs of this process's running builds. */
export async function reconcileImages({
  blobs,
  guard,
  cache,
  tmpDir,
  active,
}: {
  blobs: BlobStore;
  guard: CacheGuard;
  cache: RootfsCache;
  tmpDir: string;
  active: Set<string>;
}): Promise<void> {
  await blobs.cleanPartials(false);
  await guard.cleanStale();
  try {
    for (const name of await readdir(tmpDir)) {
      const path = join(tmpDir, name);
      if (
        name.startsWith(`${WORK_PREFIX}-`) &&
        !active.has(path) &&
        !(await ownerAlive(name.slice(WORK_PREFIX.length + 1)))
      ) {
        await rm(path, { recursive: true, force: true });
      }
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const names = await readdir(cache.dir).catch(() => [] as string[]);
  for (const name of names) {
    const path = join(cache.dir, name);
    if (active.has(path)) continue;
    if (name.startsWith('.partial-') && (await ownerAlive(name.slice('.partial-'.length)))) continue; // another process is building it
    if (name.startsWith('.partial-') || name.startsWith('.trash-')) {
      await rm(path, { recursive: true, force: true });
    } else if (ENTRY_RE.test(name) && !(await cache.readEntry(path))) {
      await rm(path, { recursive: true, force: true });
    }
  }
}

/** True when a "<pid>-…" name belongs to a live process other than this one's finished work. */
async function ownerAlive(rest: string): Promise<boolean> {
  const pid = Number(rest.split('-')[0]);
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && (await pidAlive(pid));
}

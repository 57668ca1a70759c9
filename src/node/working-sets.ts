/**
 * A node's working sets (REAP) as restores use them: which route a restore's prefetch takes
 * (page cache on QEMU, page server on Firecracker), the page server's options for a prefetch
 * and for a recording, and the publishing of a working set the page server recorded (in
 * first-touch order) as the snapshot's companion.
 */
import { sleep } from '../util/sleep.js';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import type { LocalSnapshotStore } from '../snapshot/local-store.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotManifest } from '../snapshot/manifest.js';
import { WorkingSetStore, type WorkingSetManifest } from '../snapshot/working-set-store.js';
import {
  WORKING_SET_FILES,
  WORKING_SET_PAGE_SIZE,
  parseWorkingSetRanges,
  totalPages,
  writeWorkingSet,
} from '../memory/working-set.js';
import type { VmmKind } from '../vmm/driver.js';
import { ensureUffdHandler } from '../vmm/firecracker/uffd-handler.js';
import type { PrefetchLaunch } from './launcher.js';
import type { PrefetchMode } from './snapshot-types.js';

export type { PrefetchMode } from './snapshot-types.js';

/** How a restore gets a snapshot's working set in: not at all, through the memory file's page cache (QEMU), or through the page server (Firecracker). */
export type PrefetchRoute = 'none' | 'page-cache' | 'page-server';

/**
 * The prefetch route of a restore of snapshot `id` on a node running `vmm`: 'auto' prefetches
 * when the snapshot has a working set, 'on' requires one (refused with EMB_CONFIG_INVALID
 * otherwise), 'off' never. QEMU maps the memory file, so its working set is read into the page
 * cache; Firecracker loads with the `Uffd` backend and its page server copies the working set in.
 */
export function prefetchRoute(vmm: VmmKind, hasWorkingSet: boolean, mode: PrefetchMode, id: string): PrefetchRoute {
  if (!['auto', 'on', 'off'].includes(mode)) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      { option: 'prefetch', value: mode, expected: 'auto, on or off' },
      { hint: 'pass --prefetch auto, on or off' },
    );
  }
  if (mode === 'off') return 'none';
  if (!hasWorkingSet) {
    if (mode === 'auto') return 'none';
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      {
        option: 'prefetch',
        value: mode,
        problem: `is not possible: snapshot ${id} has no working set to prefetch`,
        id,
      },
      { hint: `record one with \`embers snapshot record-ws ${id}\`, or restore with --prefetch auto or off` },
    );
  }
  return vmm === 'firecracker' ? 'page-server' : 'page-cache';
}

/**
 * A Firecracker restore's prefetch of the verified working set in `dir` (WorkingSetStore.dirOf,
 * described by `ws`, its manifest): the page server (built into `cacheDir`) copies its pages in,
 * in first-touch order, before the driver resumes the VM.
 */
export async function pageServerPrefetch(
  dir: string,
  ws: WorkingSetManifest,
  cacheDir: string,
): Promise<PrefetchLaunch> {
  const pagesFile = ws.files.find((f) => f.name === WORKING_SET_FILES.pages);
  return {
    via: 'page-server',
    pageServer: {
      binary: await ensureUffdHandler(cacheDir),
      workingSet: {
        rangesPath: join(dir, WORKING_SET_FILES.ranges),
        // the page server checks the pages file's digest again before it serves any of it
        ...(pagesFile ? { pagesPath: join(dir, WORKING_SET_FILES.pages), pagesSha256: pagesFile.sha256 } : {}),
      },
    },
  };
}

/**
 * A Firecracker restore that records its working set: the page server (built into `cacheDir`)
 * serves every page lazily and logs each page's first fault; when the VM's process exits it
 * writes the ranges, in first-touch order, to `recordPath` (WS-FORMAT).
 */
export async function pageServerRecord(recordPath: string, cacheDir: string): Promise<PrefetchLaunch> {
  return { via: 'page-server', pageServer: { binary: await ensureUffdHandler(cacheDir), recordPath } };
}

/**
 * Publishes the working set the page server recorded at `recordPath` (it writes the file when the
 * recording clone's VMM exits: this waits up to `timeoutMs` for it) as the companion of snapshot
 * `m` in `store`: its ranges in first-touch order and those pages' bytes from the memory file.
 * A snapshot that already has a working set keeps it. The record file is removed.
 */
export async function publishRecordedWorkingSet(
  store: LocalSnapshotStore,
  m: SnapshotManifest,
  recordPath: string,
  timeoutMs = 30_000,
): Promise<WorkingSetManifest> {
  const memoryBytes = fileEntry(m, SNAPSHOT_FILES.memory)!.sizeBytes;
  let bytes: Buffer | undefined;
  for (const deadline = Date.now() + timeoutMs; !bytes; ) {
    bytes = await readFile(recordPath).catch(() => undefined);
    if (bytes) break;
    if (Date.now() > deadline) {
      throw EmbersError.of('EMB_WORKING_SET_RECORD_FAILED', { id: m.id, recordPath, timeoutMs });
    }
    await sleep(20);
  }
  try {
    const ws = parseWorkingSetRanges(bytes, recordPath, { memoryBytes });
    if (ws.ranges.length === 0) {
      throw EmbersError.of('EMB_WORKING_SET_RECORD_FAILED', { id: m.id });
    }
    const sets = new WorkingSetStore(store);
    const existing = await sets.get(m.id);
    if (existing) return existing;
    const staging = await sets.staging(m.id);
    try {
      await writeWorkingSet(staging, join(store.pathOf(m.id), SNAPSHOT_FILES.memory), ws);
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
    return await sets.publish(m.id, staging, {
      recordedAt: new Date().toISOString(),
      recorder: 'uffd-record',
      order: 'first-touch',
      pageSize: WORKING_SET_PAGE_SIZE,
      pages: totalPages(ws),
    });
  } finally {
    await rm(recordPath, { force: true });
  }
}

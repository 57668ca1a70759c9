/**
 * A node's working sets (REAP) around its restores: the prefetch plan of a restore (verified
 * working set; page cache on QEMU, page server on Firecracker) and recording a snapshot's
 * working set with a clone of its own.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { writeJsonAtomic } from '../util/fs.js';
import { roundMs } from '../util/format.js';
import type { FileStamp, LocalSnapshotStore } from '../snapshot/local-store.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotManifest } from '../snapshot/manifest.js';
import { WorkingSetStore, type WorkingSetManifest } from '../snapshot/working-set-store.js';
import { FilePageCache, ensurePageCacheTool, mappedPages } from '../memory/page-cache.js';
import {
  WORKING_SET_PAGE_SIZE,
  readWorkingSetRanges,
  totalPages,
  writeWorkingSet,
  type PageRange,
} from '../memory/working-set.js';
import type { VmmKind } from '../vmm/driver.js';
import type { InstanceRecord } from './instances.js';
import { httpRequest, type InvokeRequest } from './invoke.js';
import type { PrefetchLaunch } from './launcher.js';
import type { SnapshotSource } from './remote.js';
import type {
  PrefetchMode,
  RecordWorkingSetOptions,
  RecordWorkingSetResult,
  RestoreOptions,
  RestoreResult,
} from './snapshot-types.js';
import { pageServerPrefetch, prefetchRoute, publishRecordedWorkingSet } from './working-sets.js';

export interface NodeWorkingSetsDeps {
  store: LocalSnapshotStore;
  /** <home>/restore: the working sets' verification stamps go in <id>/. */
  restoreDir: string;
  /** Where native helpers are built. */
  cacheDir: string;
  /** Scratch space (named with our pid). */
  tmpDir: string;
  vmm: VmmKind;
  /** Makes snapshot `id` local, fetching it from `source`. */
  ensureLocal(id: string, source: SnapshotSource): Promise<unknown>;
  /** The node's restore (SnapshotService.restore). */
  restore(id: string, opts: RestoreOptions): Promise<RestoreResult>;
  /** Stops an instance and releases what it owns. */
  stop(name: string): Promise<void>;
}

export class NodeWorkingSets {
  constructor(private readonly deps: NodeWorkingSetsDeps) {}

  /**
   * What a restore of `m` prefetches (see prefetchRoute): its working set, verified (digests
   * unless the files' stamps are unchanged since the last check) and checked against the memory
   * file; on QEMU its ranges for the page cache, on Firecracker the page server with its files.
   */
  async prefetchPlan(
    m: SnapshotManifest,
    mode: PrefetchMode,
  ): Promise<{ launch: PrefetchLaunch; pages: number } | undefined> {
    const sets = new WorkingSetStore(this.deps.store);
    const route = prefetchRoute(this.deps.vmm, mode === 'off' ? false : await sets.has(m.id), mode, m.id);
    if (route === 'none') return undefined;
    const stampsPath = join(this.deps.restoreDir, m.id, 'workingset-verified.json');
    const known = JSON.parse(await readFile(stampsPath, 'utf8').catch(() => 'null')) as Record<
      string,
      FileStamp
    > | null;
    const { manifest, stamps } = await sets.verify(m.id, known ?? undefined);
    if (JSON.stringify(stamps) !== JSON.stringify(known)) await writeJsonAtomic(stampsPath, stamps);
    const memoryBytes = fileEntry(m, SNAPSHOT_FILES.memory)!.sizeBytes;
    const dir = sets.dirOf(m.id);
    const ws = await readWorkingSetRanges(dir, { memoryBytes });
    const pages = totalPages(ws);
    if (route === 'page-cache')
      return {
        launch: { via: 'page-cache', tool: await ensurePageCacheTool(this.deps.cacheDir), ranges: ws.ranges },
        pages,
      };
    return { launch: await pageServerPrefetch(dir, manifest, this.deps.cacheDir), pages };
  }

  /** Drops `m`'s memory file from the page cache; refused while running clones keep pages of it mapped. */
  async evictMemory(m: SnapshotManifest): Promise<void> {
    const cache = await FilePageCache.open(
      this.deps.cacheDir,
      join(this.deps.store.pathOf(m.id), SNAPSHOT_FILES.memory),
    );
    const left = await cache.evict();
    if (left > 0) {
      throw EmbersError.of('EMB_WORKING_SET_RECORD_FAILED', { id: m.id, residentPages: left });
    }
  }

  /**
   * Records the working set of snapshot `id` (REAP). On Firecracker: restores one clone with the
   * page server in record mode (every page served lazily, each first fault logged), sends it
   * `request` (default: GET /), stops it, and publishes the pages in first-touch order, with
   * their bytes (working-sets.ts publishRecordedWorkingSet). With QEMU: drops its memory file from the
   * page cache, restores one clone (which answers its first request: the readiness probe, GET
   * /), sends it `request` (default: GET /), then reads which pages of the memory file the VM
   * mapped (/proc/PID/pagemap of QEMU; mincore on the file would also count the kernel's
   * readahead around each fault, reported as `residentPages`) and publishes them, with their
   * bytes, as the snapshot's working set. The ranges are in file order: neither tells in which
   * order pages were touched (Firecracker's page server records the true order). A snapshot
   * that has a working set keeps it.
   */
  async record(id: string, opts: RecordWorkingSetOptions = {}): Promise<RecordWorkingSetResult> {
    const t0 = performance.now();
    const sets = new WorkingSetStore(this.deps.store);
    await this.deps.ensureLocal(id, opts.source ?? { kind: 'local' });
    const m = await this.deps.store.get(id);
    const memoryBytes = fileEntry(m, SNAPSHOT_FILES.memory)!.sizeBytes;
    const existing = await sets.get(id);
    if (existing) return { manifest: existing, recorded: false, memoryBytes, ms: roundMs(performance.now() - t0) };
    const name = opts.name ?? `ws-${id.slice(5, 13)}-${randomBytes(2).toString('hex')}`;
    if (this.deps.vmm === 'firecracker') {
      // the page server logs each page's first fault and writes the order when the VMM exits
      const recordTo = join(this.deps.tmpDir, `ws-record-${process.pid}-${randomBytes(3).toString('hex')}.ranges`);
      try {
        const restored = await this.deps.restore(id, { names: [name], recordTo, readyTimeoutMs: opts.readyTimeoutMs });
        let status: number;
        try {
          status = await this.firstRequest(restored.clones[0]!.record, id, opts.request);
        } finally {
          await this.deps.stop(name).catch(() => undefined);
        }
        const manifest = await publishRecordedWorkingSet(this.deps.store, m, recordTo);
        await writeJsonAtomic(
          join(this.deps.restoreDir, id, 'workingset-verified.json'),
          (await sets.verify(id)).stamps,
        );
        return { manifest, recorded: true, memoryBytes, status, ms: roundMs(performance.now() - t0) };
      } finally {
        await rm(recordTo, { force: true });
      }
    }
    const restored = await this.deps.restore(id, {
      names: [name],
      prefetch: 'off',
      evictMemory: true,
      readyTimeoutMs: opts.readyTimeoutMs,
    });
    let resident: PageRange[];
    let residentPages: number;
    let status: number;
    try {
      const rec = restored.clones[0]!.record;
      status = await this.firstRequest(rec, id, opts.request);
      const memoryFile = join(this.deps.store.pathOf(id), SNAPSHOT_FILES.memory);
      // what the VM mapped (pagemap), not all that became resident: the page cache also holds the
      // readahead around each fault (read_ahead_kb, 8 MiB on some disks), which is not the working set
      resident = await mappedPages(rec.vm.pid, memoryFile);
      residentPages = totalPages({
        pageSize: WORKING_SET_PAGE_SIZE,
        ranges: await (await FilePageCache.open(this.deps.cacheDir, memoryFile)).resident(),
      });
    } finally {
      await this.deps.stop(name).catch(() => undefined);
    }
    const ws = { pageSize: WORKING_SET_PAGE_SIZE, ranges: resident };
    const staging = await sets.staging(id);
    try {
      await writeWorkingSet(staging, join(this.deps.store.pathOf(id), SNAPSHOT_FILES.memory), ws);
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
    const manifest = await sets.publish(id, staging, {
      recordedAt: new Date().toISOString(),
      recorder: 'qemu-pagemap',
      order: 'file',
      pageSize: WORKING_SET_PAGE_SIZE,
      pages: totalPages(ws),
    });
    await writeJsonAtomic(join(this.deps.restoreDir, id, 'workingset-verified.json'), (await sets.verify(id)).stamps);
    return { manifest, recorded: true, memoryBytes, residentPages, status, ms: roundMs(performance.now() - t0) };
  }

  /** Sends a recording clone its first request (default GET /); returns the answer's status. */
  private async firstRequest(rec: InstanceRecord, id: string, request: InvokeRequest | undefined): Promise<number> {
    try {
      return (await httpRequest(rec.cloneIp, rec.function.port, request ?? {})).status;
    } catch (err) {
      throw EmbersError.of(
        'EMB_INSTANCE_INVOKE_FAILED',
        { id, name: rec.name, reason: (err as Error).message },
        { cause: err },
      );
    }
  }

  /** The working-set manifest of a local snapshot, or undefined; with `verify`, its files are checked first. */
  async get(id: string, opts: { verify?: boolean } = {}): Promise<WorkingSetManifest | undefined> {
    const sets = new WorkingSetStore(this.deps.store);
    if (!(await sets.has(id))) return undefined;
    return opts.verify ? (await sets.verify(id)).manifest : sets.get(id);
  }
}

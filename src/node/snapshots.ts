import { randomBytes } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { asNoSpaceError, writeJsonAtomic } from '../util/fs.js';
import { GUEST_NET } from '../net/addressing.js';
import { LocalSnapshotStore } from '../snapshot/local-store.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotManifest } from '../snapshot/manifest.js';
import { validateInstanceName, type InstanceStore } from './instances.js';
import type { ImageStore } from '../image/store.js';
import type { HypervisorDriver } from '../vmm/driver.js';
import { ensureUffdHandler } from '../vmm/firecracker/uffd-handler.js';
import { checkHostCompat, describeHost, type HostDescription } from '../snapshot/host-compat.js';
import type { GuestKits } from './guest-kits.js';
import { kitKindOf, type Launcher, type PrefetchLaunch } from './launcher.js';
import type { RemoteSnapshots, SnapshotSource } from './remote.js';
import type { TransferOptions, TransferResult } from '../snapshot/transfer.js';
import { roundMs } from '../util/format.js';
import { crashPoint } from '../util/crash-point.js';
import { pidAlive } from '../util/pid.js';
import type { WorkingSetManifest } from '../snapshot/working-set-store.js';
import { WORKING_SET_PAGE_SIZE } from '../memory/working-set.js';
import { RestoredDisks, type RestoredDisk } from './restored-disk.js';
import { createSnapshot } from './snapshot-create.js';
import { runWhileArriving, startArrivingSnapshot, type ArrivingSnapshot } from './arriving-snapshot.js';
import { pageServerRecord } from './working-sets.js';
import { NodeWorkingSets } from './working-set-service.js';
import type {
  CreateSnapshotOptions,
  CreateSnapshotResult,
  EarlyRestore,
  RecordWorkingSetOptions,
  RecordWorkingSetResult,
  RestoreOptions,
  RestoreResult,
  RestoredClone,
} from './snapshot-types.js';

export type { RestoredDisk } from './restored-disk.js';
export type {
  CreateSnapshotOptions,
  CreateSnapshotResult,
  EarlyRestore,
  PrefetchMode,
  RecordWorkingSetOptions,
  RecordWorkingSetResult,
  RestoreOptions,
  RestoreResult,
  RestoredClone,
} from './snapshot-types.js';
export {
  pageServerPrefetch,
  pageServerRecord,
  prefetchRoute,
  publishRecordedWorkingSet,
  type PrefetchRoute,
} from './working-sets.js';

/** What the snapshot service works with: given, not reached for through the node. */
export interface SnapshotServiceDeps {
  /** The local snapshot store's dir. */
  snapshotsDir: string;
  /** Where restored disks are materialised (<home>/restore). */
  restoreDir: string;
  /** Scratch space (named with our pid, so reconcile can tell a dead run's). */
  tmpDir: string;
  instances: InstanceStore;
  images: ImageStore;
  driver: HypervisorDriver;
  kits: GuestKits;
  launcher: Launcher;
  remote: RemoteSnapshots;
  /** Where native helpers are built (<cacheDir>/native). */
  cacheDir: string;
  onProgress?: (msg: string) => void;
}

/**
 * Snapshot lifecycle of a node: create (snapshot-create.ts: pause → VMM snapshot → flush → disk
 * delta → resume → manifest → atomic publish) and restore (verify → rootfs → disk = rootfs + delta,
 * digest-checked → N clones, each with its own slot and copy-on-write disk, memory mapped
 * from the snapshot).
 */
export class SnapshotService {
  readonly store: LocalSnapshotStore;
  private readonly restoreDir: string;
  private readonly driver: HypervisorDriver;
  private readonly remote: RemoteSnapshots;
  private readonly disks: RestoredDisks;
  private readonly sets: NodeWorkingSets;

  constructor(private readonly deps: SnapshotServiceDeps) {
    this.store = new LocalSnapshotStore(deps.snapshotsDir);
    this.sets = new NodeWorkingSets({
      store: this.store,
      restoreDir: deps.restoreDir,
      cacheDir: deps.cacheDir,
      tmpDir: deps.tmpDir,
      vmm: deps.driver.kind,
      ensureLocal: (id, source) => this.remote.ensureLocal(this.store, id, source),
      restore: (id, opts) => this.restore(id, opts),
      stop: (name) => this.deps.launcher.stop(name),
    });
    this.disks = new RestoredDisks({
      store: this.store,
      restoreDir: deps.restoreDir,
      tmpDir: deps.tmpDir,
      images: deps.images,
      onProgress: deps.onProgress,
    });
    this.restoreDir = deps.restoreDir;
    this.driver = deps.driver;
    this.remote = deps.remote;
  }

  /** Snapshots an instance: see createSnapshot (snapshot-create.ts). */
  create(instance: string, opts: CreateSnapshotOptions = {}): Promise<CreateSnapshotResult> {
    return createSnapshot(
      {
        snapshotsDir: this.deps.snapshotsDir,
        tmpDir: this.deps.tmpDir,
        store: this.store,
        instances: this.deps.instances,
        images: this.deps.images,
        driver: this.driver,
        launcher: this.deps.launcher,
        remote: this.remote,
        trustVerified: (m) => this.trustVerified(m),
      },
      instance,
      opts,
    );
  }

  /** Checks that this node can restore `m` at all (hypervisor, accelerator, network identity). */
  async checkCompatible(m: SnapshotManifest): Promise<void> {
    const driver = this.driver;
    const accel = await driver.accelerator();
    const foreign = (
      problem: 'vmm' | 'accelerator' | 'guest-network',
      recorded: string,
      here: string,
      setting?: string,
    ) => EmbersError.of('EMB_SNAPSHOT_INCOMPATIBLE', { problem, id: m.id, vmm: m.vmm, recorded, here, setting });
    if (m.vmm.kind !== driver.kind) throw foreign('vmm', m.vmm.kind, driver.kind);
    if (m.vmm.accelerator !== accel.accelerator) throw foreign('accelerator', m.vmm.accelerator, accel.accelerator);
    await driver.checkSnapshotFormat(m.vmm.snapshotFormat, `snapshot ${m.id}`);
    for (const [k, v] of Object.entries(GUEST_NET)) {
      if ((m.guestNetwork as Record<string, unknown>)[k] !== v)
        throw foreign('guest-network', String((m.guestNetwork as Record<string, unknown>)[k]), String(v), k);
    }
  }

  /**
   * Refuses (EMB_SNAPSHOT_HOST_MISMATCH) to restore `m` on a host unlike the one it was made
   * on (the rules: snapshot/host-compat.ts), unless `allowHostMismatch`. `here` describes this
   * host, measured by default. Returns (and reports as progress) the warnings.
   */
  async checkHost(
    m: SnapshotManifest,
    opts: { allowHostMismatch?: boolean; here?: HostDescription } = {},
  ): Promise<string[]> {
    const here = opts.here ?? (await describeHost(this.driver, (await this.deps.kits.get(kitKindOf(m))).kernelVersion));
    const warnings = checkHostCompat(m, here, opts);
    for (const w of warnings) this.deps.onProgress?.(`warning: ${w}`);
    return warnings;
  }

  /**
   * The restored disk of a snapshot, materialised once: rootfs + delta, proven bit-identical
   * to the disk at pause by its sha256 (see RestoredDisks). Cached in <home>/restore/<id>/.
   */
  async restoredDisk(
    m: SnapshotManifest,
    opts: { allowUnverifiedDisk?: boolean } = {},
    /** A snapshot still arriving (arriving-snapshot.ts): its files other than memory, verified by the download, are in this dir. */
    arriving?: { bundleDir: string },
  ): Promise<RestoredDisk> {
    return this.disks.get(m, opts, arriving);
  }

  /**
   * Restores `count` clones of a snapshot concurrently; each answers before this resolves.
   * The snapshot is pinned meanwhile: `snapshot rm` in another process refuses (EMB_SNAPSHOT_BUSY).
   */
  async restore(id: string, opts: RestoreOptions = {}): Promise<RestoreResult> {
    const count = opts.count ?? 1;
    for (const name of opts.names ?? []) validateInstanceName(name);
    await this.deps.launcher.checkRoom(count);
    const t0 = performance.now();
    this.remote.requireEnabled();
    const unpin = await this.store.pin(id);
    try {
      return await this.restorePinned(id, count, t0, opts);
    } finally {
      await unpin();
    }
  }

  /**
   * Starts one clone of `id` before the snapshot has arrived, when it can (see startArriving:
   * Firecracker, not here, `opts.source` gives the memory file's chunk digests and has a working
   * set); undefined when it cannot, having downloaded nothing but manifests: restore it as usual
   * then. Resolves once the clone is up; `arrived` settles with the download (the snapshot stays
   * pinned until then). When the download fails, `stop` stops the clone (by default the node's
   * stop of that instance) before `arrived` rejects.
   */
  async restoreEarly(
    id: string,
    opts: RestoreOptions = {},
    stop?: (name: string) => Promise<void>,
  ): Promise<EarlyRestore | undefined> {
    for (const name of opts.names ?? []) validateInstanceName(name);
    await this.deps.launcher.checkRoom(1);
    const t0 = performance.now();
    this.remote.requireEnabled();
    const unpin = await this.store.pin(id);
    try {
      const a = await this.startArriving(id, 1, opts);
      if (!a) {
        await unpin();
        return undefined;
      }
      const early = await this.restoreArriving(a, t0, opts, stop ?? ((name) => this.deps.launcher.stop(name)));
      const arrived = early.arrived.finally(unpin);
      arrived.catch(() => undefined); // the caller awaits it when it likes
      return { result: early.result, arrived };
    } catch (err) {
      await unpin();
      throw err;
    }
  }

  private async restorePinned(id: string, count: number, t0: number, opts: RestoreOptions): Promise<RestoreResult> {
    const arriving = await this.startArriving(id, count, opts);
    if (arriving) {
      // this restore ends with the download: the snapshot is here, verified, when it resolves
      const early = await this.restoreArriving(arriving, t0, opts, (name) => this.deps.launcher.stop(name));
      const done = await early.arrived;
      return {
        ...early.result,
        fetch: { ms: done.ms, bytes: done.bytes, resumedBytes: 0 },
        earlyStart: { ...early.result.earlyStart!, requestedChunks: done.requested },
      };
    }
    const { fetched } = await this.remote.ensureLocal(this.store, id, opts.source ?? { kind: 'local' }, {
      onProgress: opts.onTransferProgress,
    });
    const fetchMs = roundMs(performance.now() - t0);
    const m = await this.store.get(id);
    if (fetched) await this.trustVerified(m); // the download checked every digest
    await crashPoint('snapshot.restore.after-fetch');
    await this.checkCompatible(m);
    const hostWarnings = await this.checkHost(m, { allowHostMismatch: opts.allowHostMismatch });
    if (!fileEntry(m, m.disk.diff === 'block' ? SNAPSHOT_FILES.blockDelta : SNAPSHOT_FILES.rsyncBatch)) {
      throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'no-disk', id, diff: m.disk.diff });
    }
    let disk: RestoredDisk;
    try {
      disk = await this.restoredDisk(m, opts);
    } catch (err) {
      if (fetched && !this.remote.cacheSnapshots) await this.remove(id).catch(() => undefined);
      throw await asNoSpaceError(err, `restoring the disk of snapshot ${id}`, this.deps.restoreDir);
    }
    await this.deps.kits.get(kitKindOf(m));
    await crashPoint('snapshot.restore.after-disk');
    const prefetch = opts.recordTo
      ? { launch: await pageServerRecord(opts.recordTo, this.deps.cacheDir), pages: 0 }
      : await this.sets.prefetchPlan(m, opts.prefetch ?? 'auto');
    if (opts.evictMemory) await this.sets.evictMemory(m);
    const prepareMs = roundMs(performance.now() - t0);
    const names = Array.from(
      { length: count },
      (_, i) => opts.names?.[i] ?? `${id.slice(5, 13)}-${randomBytes(2).toString('hex')}`,
    );
    const results = await Promise.allSettled(names.map((name) => this.restoreOne(m, name, disk, opts, prefetch)));
    // --cache-snapshots off: a downloaded snapshot is dropped once its clones have loaded it
    // (their memory mappings and disks keep what they use)
    if (fetched && !this.remote.cacheSnapshots) await this.remove(id);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // all or nothing: stop the clones that did come up
      for (const r of results)
        if (r.status === 'fulfilled') await this.deps.launcher.stop(r.value.record.name).catch(() => undefined);
      throw failed.reason;
    }
    return {
      manifest: m,
      clones: results.map((r) => (r as PromiseFulfilledResult<RestoredClone>).value),
      prepareMs,
      hostWarnings,
      fetch: fetched ? { ms: fetchMs, bytes: fetched.bytes, resumedBytes: fetched.resumedBytes } : undefined,
      prefetched: prefetch ? { pages: prefetch.pages, bytes: prefetch.pages * WORKING_SET_PAGE_SIZE } : undefined,
    };
  }

  /**
   * An early start (arriving-snapshot.ts) of a restore of `id` that is not here: on Firecracker,
   * one clone, with prefetch not off, from a remote whose manifest gives the memory file's chunk
   * digests and that has a working set. Undefined otherwise: the snapshot is downloaded whole first.
   */
  private async startArriving(id: string, count: number, opts: RestoreOptions): Promise<ArrivingSnapshot | undefined> {
    if (
      this.driver.kind !== 'firecracker' ||
      count !== 1 ||
      opts.prefetch === 'off' ||
      opts.recordTo ||
      (await this.store.has(id))
    )
      return undefined;
    const source = this.remote.rangeSource(opts.source ?? { kind: 'local' });
    if (!source) return undefined;
    return startArrivingSnapshot({
      store: this.store,
      source,
      id,
      pageServerBinary: await ensureUffdHandler(this.deps.cacheDir),
      tmpDir: this.deps.tmpDir,
      transfer: { onProgress: opts.onTransferProgress },
    });
  }

  /**
   * Restores one clone of a snapshot still arriving: it starts from its verified working set while
   * the memory file streams in, and this resolves once the clone is up; `arrived` settles with the
   * download's end (whole-file digest, atomic publish). A chunk or file that fails its digest stops
   * the clone (`stop`) and rejects `arrived`: EMB_SNAPSHOT_CORRUPT.
   */
  private async restoreArriving(
    a: ArrivingSnapshot,
    t0: number,
    opts: RestoreOptions,
    stop: (name: string) => Promise<void>,
  ): Promise<EarlyRestore> {
    const m = a.manifest;
    let prepared: { prepareMs: number; hostWarnings: string[]; disk: RestoredDisk };
    try {
      await this.checkCompatible(m);
      const hostWarnings = await this.checkHost(m, { allowHostMismatch: opts.allowHostMismatch });
      const disk = await this.restoredDisk(m, opts, { bundleDir: a.bundleDir });
      await this.deps.kits.get(kitKindOf(m));
      prepared = { prepareMs: roundMs(performance.now() - t0), hostWarnings, disk };
    } catch (err) {
      await a.abandon();
      throw err;
    }
    const name = opts.names?.[0] ?? `${m.id.slice(5, 13)}-${randomBytes(2).toString('hex')}`;
    const run = await runWhileArriving(
      a,
      () =>
        this.restoreOne(
          m,
          name,
          prepared.disk,
          opts,
          { launch: { via: 'page-server', pageServer: a.pageServer } },
          a.bundleDir,
        ),
      (clone) => stop(clone.record.name),
    );
    const arrived = run.arrived.then(async (done) => {
      await this.trustVerified(done.manifest, { keepDisk: true });
      if (!this.remote.cacheSnapshots) await this.remove(m.id);
      return {
        manifest: done.manifest,
        bytes: done.bytes,
        requested: done.requested,
        ms: roundMs(performance.now() - t0),
      };
    });
    arrived.catch(() => undefined);
    return {
      result: {
        manifest: m,
        clones: [run.clone],
        prepareMs: prepared.prepareMs,
        hostWarnings: prepared.hostWarnings,
        prefetched: { pages: a.workingSet.pages, bytes: a.workingSet.pages * WORKING_SET_PAGE_SIZE },
        earlyStart: { startMs: roundMs(run.startedAt - t0), bytesBeforeStart: a.bytesBeforeStart, requestedChunks: [] },
      },
      arrived,
    };
  }

  private async restoreOne(
    m: SnapshotManifest,
    name: string,
    disk: RestoredDisk,
    opts: RestoreOptions,
    prefetch: { launch: PrefetchLaunch } | undefined,
    bundleDir = this.store.pathOf(m.id),
  ): Promise<RestoredClone> {
    const record = await this.deps.launcher.launch({
      kind: 'restore',
      name,
      snapshot: m,
      bundleDir,
      disk,
      startedAt: performance.now(),
      readyTimeoutMs: opts.readyTimeoutMs,
      skipFixups: opts.skipFixups,
      prefetch: prefetch?.launch,
    });
    return { record, diskVerified: disk.verified };
  }

  /**
   * Records the working set of snapshot `id` (REAP): see NodeWorkingSets.record (Firecracker:
   * the page server's first-touch order; QEMU: the pages the VM mapped).
   */
  recordWorkingSet(id: string, opts: RecordWorkingSetOptions = {}): Promise<RecordWorkingSetResult> {
    return this.sets.record(id, opts);
  }

  /** The working-set manifest of a local snapshot, or undefined; with `verify`, its files are checked first. */
  workingSet(id: string, opts: { verify?: boolean } = {}): Promise<WorkingSetManifest | undefined> {
    return this.sets.get(id, opts);
  }

  /**
   * Records that this process has just proved every file of `m` against its digest (it
   * published or downloaded them), so the first restore checks stamps instead of hashing
   * again; any later change to a file changes its stamp and brings the hashing back.
   */
  private async trustVerified(m: SnapshotManifest, opts: { keepDisk?: boolean } = {}): Promise<void> {
    const path = join(this.restoreDir, m.id, 'verified.json');
    // an early restore made the disk before the snapshot was published: its record stays
    const kept = opts.keepDisk ? (JSON.parse(await readFile(path, 'utf8').catch(() => '{}')) as object) : {};
    await writeJsonAtomic(path, { ...kept, snapshot: await this.store.stampsOf(m) });
  }

  /** The snapshots in the local store. */
  async list(): Promise<SnapshotManifest[]> {
    return this.store.list();
  }

  /** The snapshot ids in the S3-compatible store, and where that store is. */
  async listRemote(): Promise<{ location: string; ids: string[] }> {
    const s3 = this.remote.s3();
    return { location: s3.location, ids: await s3.list() };
  }

  /** A local snapshot's manifest; with `verify`, every file is checked against its size and sha256 first. */
  async inspect(id: string, opts: { verify?: boolean } = {}): Promise<SnapshotManifest> {
    const m = await this.store.get(id);
    if (opts.verify) await this.store.verify(m);
    return m;
  }

  /** Uploads a local snapshot to the S3-compatible store (resuming a partial upload). */
  async push(id: string, opts?: TransferOptions): Promise<TransferResult> {
    return this.remote.push(this.store, id, opts);
  }

  /** Downloads a snapshot, verified, unless it is already here. @default source: the S3-compatible store */
  async pull(
    id: string,
    source: SnapshotSource = { kind: 's3' },
    opts?: TransferOptions,
  ): Promise<{ fetched: TransferResult | undefined }> {
    const r = await this.remote.ensureLocal(this.store, id, source, opts);
    // here already: its working set may have been recorded since it was pulled
    if (!r.fetched) await this.remote.pullWorkingSet(this.store, id, source, opts);
    return r;
  }

  /** Removes a snapshot and its materialised restore disk. */
  async remove(id: string): Promise<void> {
    await this.store.remove(id);
    await rm(join(this.restoreDir, id), { recursive: true, force: true });
  }

  /** Drops staging leftovers, restore disks of snapshots that no longer exist, and restore disks a dead process left half-written. */
  async reconcile(): Promise<void> {
    await this.store.reconcile();
    for (const id of await readdir(this.restoreDir).catch(() => [] as string[])) {
      if (!(await this.store.has(id).catch(() => false))) {
        await rm(join(this.restoreDir, id), { recursive: true, force: true });
        continue;
      }
      // a restored disk being written by a process that died (`.disk-<pid>-<random>.img`)
      for (const name of await readdir(join(this.restoreDir, id)).catch(() => [] as string[])) {
        const pid = Number(/^\.disk-(\d+)-/.exec(name)?.[1]);
        if (pid && !(await pidAlive(pid))) await rm(join(this.restoreDir, id, name), { force: true });
      }
    }
  }
}

import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, asEmbersError } from '../errors.js';
import { allocatedBytes, asNoSpaceError, fsyncPath, requireFreeSpace, sha256File, writeJsonAtomic } from '../util/fs.js';
import { cloneDisk, type CloneMethod } from '../disk/clone.js';
import { diffByExtents } from '../disk/extents.js';
import { applyDelta, diffByComparison, writeDelta } from '../disk/delta.js';
import { applyRsyncBatch, writeRsyncBatch } from '../disk/rsync-diff.js';
import { GUEST_NET } from '../net/addressing.js';
import { pinImageReference } from '../image/index.js';
import { LocalSnapshotStore, stampFile, type FileStamp } from '../snapshot/local-store.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotManifest } from '../snapshot/manifest.js';
import { validateInstanceName, type InstanceRecord, type InstanceStore } from './instances.js';
import type { ImageStore } from '../image/store.js';
import type { HypervisorDriver } from '../vmm/driver.js';
import { ensureUffdHandler } from '../vmm/firecracker/uffd-handler.js';
import { checkHostCompat, describeHost, type HostDescription } from '../snapshot/host-compat.js';
import type { GuestKits } from './guest-kits.js';
import { kitKindOf, type Launcher, type PrefetchLaunch } from './launcher.js';
import type { RemoteSnapshots, SnapshotSource } from './remote.js';
import type { TransferOptions, TransferResult } from '../snapshot/transfer.js';
import { phaseTimer, roundMs } from '../util/format.js';
import { crashPoint } from '../util/crash-point.js';
import { pidAlive } from '../util/pid.js';
import { WorkingSetStore, type WorkingSetManifest } from '../snapshot/working-set-store.js';
import { FilePageCache, ensurePageCacheTool, mappedPages } from '../memory/page-cache.js';
import { MEMORY_CHUNK_SIZE, chunkDigests } from '../memory/chunks.js';
import { WORKING_SET_PAGE_SIZE, readWorkingSetRanges, totalPages, writeWorkingSet, type PageRange } from '../memory/working-set.js';
import { httpRequest, type InvokeRequest } from './invoke.js';
import { runWhileArriving, startArrivingSnapshot, type ArrivingSnapshot } from './arriving-snapshot.js';
import { pageServerPrefetch, pageServerRecord, prefetchRoute, publishRecordedWorkingSet, type PrefetchMode } from './working-sets.js';

export { pageServerPrefetch, pageServerRecord, prefetchRoute, publishRecordedWorkingSet, type PrefetchMode, type PrefetchRoute } from './working-sets.js';

export interface CreateSnapshotOptions {
  /** How disk changes are captured. @default 'block' */
  diskDiff?: 'block' | 'rsync';
  /** Stop the instance after the snapshot instead of resuming it. @default false */
  stop?: boolean;
  /** Upload progress (remote mode). */
  onTransferProgress?: TransferOptions['onProgress'];
}

export interface CreateSnapshotResult {
  manifest: SnapshotManifest;
  /** How the changed blocks were found: extent maps (reflink filesystems), block comparison, or an rsync batch. */
  diffMethod: 'extents' | 'comparison' | 'rsync';
  timings: { createMs: number; pausedMs: number; phases: Record<string, number> };
}

export interface RestoreOptions {
  /** Clones to restore concurrently. @default 1 */
  count?: number;
  /** Names for the clones; default <snapshot>-<random>. */
  names?: string[];
  readyTimeoutMs?: number;
  /**
   * Restore an rsync-mode snapshot although its disk cannot be proven bit-identical
   * (for comparisons only: the guest's filesystem state may not match its disk).
   */
  allowUnverifiedDisk?: boolean;
  /**
   * Restore although this host differs from the snapshot's in a way that can break the guest
   * (CPU vendor, flags or model, VMM major version, guest kernel, drive layout; see
   * snapshot/host-compat.ts): the differences become warnings. @default false
   */
  allowHostMismatch?: boolean;
  /** Where to get the snapshot if it is not here: S3 (remote mode's default) or a peer node. */
  source?: SnapshotSource;
  /** Download progress. */
  onTransferProgress?: TransferOptions['onProgress'];
  /** Skip the restore fix-ups (clock, entropy, restore hook): only for benchmarks that measure their cost. @default false */
  skipFixups?: boolean;
  /**
   * Prefetch the snapshot's working set (REAP) before the clones resume: 'auto' when it has one,
   * 'on' requires one, 'off' restores as if it had none. QEMU reads it into the memory file's
   * page cache; Firecracker loads with the `Uffd` backend and its page server copies it into
   * guest memory (see prefetchRoute). @default 'auto'
   */
  prefetch?: PrefetchMode;
  /**
   * Drop the snapshot's memory file from the page cache (posix_fadvise DONTNEED on that file)
   * once it is verified, before the clones start: a restore as on a node that has not read it
   * recently. Recording a working set needs it; benchmarks use it. Refused while running clones
   * map the file. @default false
   */
  evictMemory?: boolean;
  /**
   * Firecracker: serve guest memory through the page server in record mode, which writes the
   * pages' first-touch order to this path when the clone's VMM exits (recordWorkingSet). No
   * prefetch then. @default none
   */
  recordTo?: string;
}

export interface RestoreResult {
  manifest: SnapshotManifest;
  clones: RestoredClone[];
  /** ms from the call to the clones' VMMs starting: fetch, verification, disk. */
  prepareMs: number;
  /** Host differences that were allowed, and what an older manifest does not record. */
  hostWarnings: string[];
  /** Set when the snapshot was downloaded for this restore. */
  fetch?: { ms: number; bytes: number; resumedBytes: number };
  /** Set when the clones were restored with the working set prefetched. */
  prefetched?: { pages: number; bytes: number };
  /**
   * Set when the clone started before the snapshot had arrived (arriving-snapshot.ts): ms from the
   * call until it was up, bytes downloaded before it could start, and the memory chunks its faults asked for first.
   */
  earlyStart?: { startMs: number; bytesBeforeStart: number; requestedChunks: number[] };
}

export interface RecordWorkingSetResult {
  manifest: WorkingSetManifest;
  /** False when the snapshot already had a working set (they are immutable): nothing was recorded. */
  recorded: boolean;
  /** The snapshot's memory file size, to compare the working set against. */
  memoryBytes: number;
  /** Status of the first request's answer (when recorded). */
  status?: number;
  /** Pages of the memory file in the page cache after that request (mincore): the working set plus the kernel's readahead (when recorded). */
  residentPages?: number;
  ms: number;
}

/** A snapshot's disk, materialised and checked: rootfs + delta. */
export interface RestoredDisk {
  path: string;
  /** Its sha256 equals the disk's at pause. */
  verified: boolean;
  /** How it was made from the rootfs. */
  method: CloneMethod;
}

export interface RestoredClone {
  record: InstanceRecord;
  diskVerified: boolean;
}

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
 * Snapshot lifecycle of a node: create (pause → VMM snapshot → flush → disk delta →
 * resume → manifest → atomic publish) and restore (verify → rootfs → disk = rootfs + delta,
 * digest-checked → N clones, each with its own slot and copy-on-write disk, memory mapped
 * from the snapshot).
 */
export class SnapshotService {
  readonly store: LocalSnapshotStore;
  private readonly restoreDir: string;
  private readonly driver: HypervisorDriver;
  private readonly remote: RemoteSnapshots;

  constructor(private readonly deps: SnapshotServiceDeps) {
    this.store = new LocalSnapshotStore(deps.snapshotsDir);
    this.restoreDir = deps.restoreDir;
    this.driver = deps.driver;
    this.remote = deps.remote;
  }

  async create(instance: string, opts: CreateSnapshotOptions = {}): Promise<CreateSnapshotResult> {
    this.remote.requireEnabled();
    const diff = opts.diskDiff ?? 'block';
    const rec = await this.deps.instances.get(instance);
    const image = await this.deps.images.get(rec.image.manifestDigest);
    if (!image) {
      throw new EmbersError(
        'EMB_IMAGE_NOT_FOUND',
        `the rootfs of ${rec.image.reference} (${rec.image.manifestDigest}) is no longer cached`,
        { instance },
        {
          hint: `pull the image again (\`embers image pull ${rec.image.reference}\`), then retry`,
        },
      );
    }
    // What it will write: the guest memory it touched, the state, a frozen copy of the disk
    // and the delta (at most the disk's data again). Refused before the VM is paused.
    const memoryBytes = (await allocatedBytes(rec.vm.memoryFile)) ?? rec.function.memoryMiB * 1024 * 1024;
    const diskBytes = (await allocatedBytes(rec.diskPath)) ?? 0;
    await requireFreeSpace(this.deps.snapshotsDir, memoryBytes + 2 * diskBytes + 4 * 1024 * 1024, `snapshot create of ${instance}`);
    const { phases, mark } = phaseTimer();
    const t0 = performance.now();
    const staging = await this.store.staging();
    // one snapshot of an instance at a time; a marker a killed create left is taken over
    await this.deps.instances.beginSnapshot(instance).catch(async (err: unknown) => {
      await rm(staging, { recursive: true, force: true });
      throw err;
    });
    // a frozen copy of the disk at pause: the VM resumes while it is hashed and diffed
    const diskCopy = join(this.deps.tmpDir, `snapshot-disk-${process.pid}-${randomBytes(4).toString('hex')}.img`);
    let paused = false;
    let pausedAt = 0;
    let pausedMs = 0;
    try {
      let t = performance.now();
      await this.driver.pause(rec.vm);
      paused = true;
      pausedAt = performance.now();
      mark('pauseMs', t);
      await crashPoint('snapshot.create.after-pause');

      t = performance.now();
      const vmFiles = await this.driver.snapshot(rec.vm, staging);
      mark('vmmSnapshotMs', t);
      await crashPoint('snapshot.create.after-vmm-snapshot');

      // Every write the VMM accepted is in the disk file once it is paused (QEMU drains and
      // flushes its block devices on stop); fsync makes it durable, the copy freezes it.
      t = performance.now();
      await fsyncPath(rec.diskPath);
      const copyMethod = await cloneDisk(rec.diskPath, diskCopy);
      mark('diskCopyMs', t);
      await crashPoint('snapshot.create.after-disk-copy');

      t = performance.now();
      if (opts.stop) await this.deps.launcher.stop(instance);
      else await this.driver.resume(rec.vm);
      paused = false;
      pausedMs = performance.now() - pausedAt;
      mark(opts.stop ? 'stopMs' : 'resumeMs', t);
      await crashPoint('snapshot.create.after-resume');

      t = performance.now();
      // the memory file's chunk digests (a remote restore verifies each chunk on its own) alongside the disk's
      const [diskSha, memoryChunks] = await Promise.all([sha256File(diskCopy), chunkDigests(join(staging, SNAPSHOT_FILES.memory), MEMORY_CHUNK_SIZE)]);
      const diskSize = (await stat(diskCopy)).size;
      mark('diskHashMs', t);

      t = performance.now();
      let changedBytes: number;
      let diffMethod: CreateSnapshotResult['diffMethod'] = 'rsync';
      if (diff === 'block') {
        // On a reflink filesystem the extent maps say which blocks changed without reading
        // them (FIEMAP); elsewhere, compare block by block.
        diffMethod = rec.diskMethod === 'reflink' && copyMethod === 'reflink' ? 'extents' : 'comparison';
        const runs = diffMethod === 'extents' ? await diffByExtents(image.rootfsPath, diskCopy) : await diffByComparison(image.rootfsPath, diskCopy);
        const stats = await writeDelta(diskCopy, runs, join(staging, SNAPSHOT_FILES.blockDelta));
        changedBytes = stats.changedBytes;
      } else {
        const batch = join(staging, SNAPSHOT_FILES.rsyncBatch);
        changedBytes = (await this.withRsyncWork((work) => writeRsyncBatch(image.rootfsPath, diskCopy, batch, work))).batchBytes;
      }
      mark('diskDiffMs', t);
      await crashPoint('snapshot.create.after-delta');

      t = performance.now();
      const accel = await this.driver.accelerator();
      const host = await describeHost(this.driver, rec.kit.kernelVersion);
      const manifest = await this.store.publish(
        staging,
        {
          createdAt: new Date().toISOString(),
          function: rec.function,
          image: { ...rec.image, flattenerVersion: image.flattenerVersion },
          disk: { diff, sha256AtPause: diskSha, sizeBytes: diskSize, changedBytes },
          vmm: {
            kind: this.driver.kind,
            version: await this.driver.version(),
            snapshotFormat: await this.driver.snapshotFormat(),
            accelerator: accel.accelerator,
            deviceDiscovery: rec.vm.deviceDiscovery ?? this.driver.deviceDiscovery,
            driveLayout: rec.vm.driveLayout ?? this.driver.driveLayout,
            vsock: vmFiles.vsock,
            agent: vmFiles.agent,
          },
          host: { cpu: host.cpu, guestCpu: host.guestCpu },
          machine: { vcpus: rec.function.vcpus, memoryMiB: rec.function.memoryMiB },
          guestNetwork: { ...GUEST_NET },
          guestKit: rec.kit,
        },
        { chunks: { [SNAPSHOT_FILES.memory]: { chunkSize: MEMORY_CHUNK_SIZE, sha256: memoryChunks } } },
      );
      mark('publishMs', t);
      await crashPoint('snapshot.create.after-publish');
      await this.trustVerified(manifest);
      if (this.remote.mode === 'remote') {
        // upload after creation (the manifest last, so readers never see a half upload)
        t = performance.now();
        try {
          await this.remote.push(this.store, manifest.id, { onProgress: opts.onTransferProgress });
        } catch (err) {
          const e = asEmbersError(err);
          throw new EmbersError(
            e.code,
            `snapshot ${manifest.id} was created here, but its upload failed: ${e.message}`,
            { ...e.details, id: manifest.id },
            {
              cause: err,
              hint: `${e.hint}; then upload it with \`embers snapshot push ${manifest.id}\` (it resumes)`,
            },
          );
        }
        mark('uploadMs', t);
      }
      return { manifest, diffMethod, timings: { createMs: roundMs(performance.now() - t0), pausedMs: roundMs(pausedMs), phases } };
    } catch (err) {
      if (paused) await this.driver.resume(rec.vm).catch(() => undefined);
      await rm(staging, { recursive: true, force: true });
      await rm(diskCopy, { force: true });
      throw await asNoSpaceError(err, `snapshot create of ${instance}`, this.deps.snapshotsDir);
    } finally {
      await rm(diskCopy, { force: true });
      await this.deps.instances.endSnapshot(instance);
    }
  }

  /** Checks that this node can restore `m` at all (hypervisor, accelerator, network identity). */
  async checkCompatible(m: SnapshotManifest): Promise<void> {
    const driver = this.driver;
    const accel = await driver.accelerator();
    const foreign = (why: string) =>
      new EmbersError('EMB_SNAPSHOT_INCOMPATIBLE', `snapshot ${m.id} cannot be restored here: ${why}`, {
        id: m.id,
        vmm: m.vmm,
        here: { kind: driver.kind, accelerator: accel.accelerator },
      });
    if (m.vmm.kind !== driver.kind) throw foreign(`it was made by ${m.vmm.kind}, this node runs ${driver.kind}`);
    if (m.vmm.accelerator !== accel.accelerator)
      throw foreign(`it was made under ${m.vmm.accelerator}, this node uses ${accel.accelerator} (CPU state differs)`);
    await driver.checkSnapshotFormat(m.vmm.snapshotFormat, `snapshot ${m.id}`);
    for (const [k, v] of Object.entries(GUEST_NET)) {
      if ((m.guestNetwork as Record<string, unknown>)[k] !== v)
        throw foreign(`its guest network ${k} is ${String((m.guestNetwork as Record<string, unknown>)[k])}, slots here use ${v}`);
    }
  }

  /**
   * Refuses (EMB_SNAPSHOT_HOST_MISMATCH) to restore `m` on a host unlike the one it was made
   * on (the rules: snapshot/host-compat.ts), unless `allowHostMismatch`. `here` describes this
   * host, measured by default. Returns (and reports as progress) the warnings.
   */
  async checkHost(m: SnapshotManifest, opts: { allowHostMismatch?: boolean; here?: HostDescription } = {}): Promise<string[]> {
    const here = opts.here ?? (await describeHost(this.driver, (await this.deps.kits.get(kitKindOf(m))).kernelVersion));
    const warnings = checkHostCompat(m, here, opts);
    for (const w of warnings) this.deps.onProgress?.(`warning: ${w}`);
    return warnings;
  }

  /**
   * The restored disk of a snapshot, materialised once: rootfs + delta, proven bit-identical
   * to the disk at pause by its sha256. Cached in <home>/restore/<id>/ for later restores.
   */
  async restoredDisk(
    m: SnapshotManifest,
    opts: { allowUnverifiedDisk?: boolean } = {},
    /** A snapshot still arriving (arriving-snapshot.ts): its files other than memory, verified by the download, are in this dir. */
    arriving?: { bundleDir: string },
  ): Promise<RestoredDisk> {
    const dir = join(this.restoreDir, m.id);
    const disk = join(dir, 'disk.img');
    const stampsPath = join(dir, 'verified.json');
    const cached = JSON.parse(await readFile(stampsPath, 'utf8').catch(() => 'null')) as {
      snapshot: Record<string, FileStamp>;
      /** Absent until the disk is materialised (the stamps alone are written after a publish or fetch). */
      disk?: FileStamp;
      verified?: boolean;
      method?: CloneMethod;
    } | null;

    // the bundle itself: sizes always, digests unless unchanged since last verified
    const snapshotStamps = arriving ? {} : await this.store.verify(m, cached?.snapshot);
    const diskStamp = await stampFile(disk);
    if (cached?.disk && diskStamp && JSON.stringify(diskStamp) === JSON.stringify(cached.disk)) {
      if (!cached.verified && !opts.allowUnverifiedDisk) throw this.unverified(m);
      return { path: disk, verified: cached.verified === true, method: cached.method ?? 'sparse-copy' };
    }

    // the rootfs is copied below: `image gc` waits until the restored disk is made
    const release = await this.deps.images.hold();
    try {
      return await this.materialiseDisk(m, dir, disk, stampsPath, snapshotStamps, opts, arriving?.bundleDir ?? this.store.pathOf(m.id));
    } finally {
      await release();
    }
  }

  private async materialiseDisk(
    m: SnapshotManifest,
    dir: string,
    disk: string,
    stampsPath: string,
    snapshotStamps: Record<string, FileStamp>,
    opts: { allowUnverifiedDisk?: boolean },
    snapDir: string,
  ): Promise<RestoredDisk> {
    // the image exactly as the snapshot saw it: a registry tag may have moved since
    const pinned = await pinImageReference(m.image.reference, m.image.manifestDigest);
    const image = await this.deps.images.ensure(pinned, { onProgress: this.deps.onProgress });
    if (image.manifestDigest !== m.image.manifestDigest) {
      throw new EmbersError(
        'EMB_SNAPSHOT_DISK_MISMATCH',
        `image ${m.image.reference} now resolves to ${image.manifestDigest}, the snapshot was made from ${m.image.manifestDigest}`,
        {
          id: m.id,
          which: 'image manifest digest',
        },
      );
    }
    if (image.rootfsSha256 !== m.image.rootfsSha256) {
      throw new EmbersError(
        'EMB_SNAPSHOT_DISK_MISMATCH',
        `the rootfs built here for ${m.image.manifestDigest} has sha256 ${image.rootfsSha256}, the snapshot's was ${m.image.rootfsSha256}`,
        {
          id: m.id,
          which: 'rootfs sha256',
        },
      );
    }

    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.disk-${process.pid}-${randomBytes(3).toString('hex')}.img`);
    try {
      // a reflink of the rootfs where possible, so clones keep sharing its unchanged blocks
      const method = await cloneDisk(image.rootfsPath, tmp);
      let verified: boolean;
      if (m.disk.diff === 'block') {
        await applyDelta(join(snapDir, SNAPSHOT_FILES.blockDelta), tmp);
      } else {
        await this.withRsyncWork((work) => applyRsyncBatch(tmp, join(snapDir, SNAPSHOT_FILES.rsyncBatch), work));
        await truncateTo(tmp, m.disk.sizeBytes);
      }
      const digest = await sha256File(tmp);
      verified = digest === m.disk.sha256AtPause;
      if (!verified && m.disk.diff === 'block') {
        throw new EmbersError('EMB_SNAPSHOT_DISK_MISMATCH', `restored disk of ${m.id} has sha256 ${digest}, the disk at pause had ${m.disk.sha256AtPause}`, {
          id: m.id,
          which: 'disk sha256',
          expected: m.disk.sha256AtPause,
          actual: digest,
        });
      }
      await crashPoint('snapshot.restore.disk.before-rename');
      await rename(tmp, disk);
      await writeJsonAtomic(stampsPath, { snapshot: snapshotStamps, disk: await stampFile(disk), verified, method });
      if (!verified && !opts.allowUnverifiedDisk) throw this.unverified(m);
      return { path: disk, verified, method };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  private unverified(m: SnapshotManifest): EmbersError {
    return new EmbersError(
      'EMB_SNAPSHOT_DISK_MISMATCH',
      `snapshot ${m.id} captured its disk with rsync: the patched disk has the same files but not the same bytes as the disk at pause, so the guest's cached filesystem state would not match it`,
      { id: m.id, which: 'disk sha256', diff: m.disk.diff },
      { hint: 'create the snapshot with --disk-diff block (the default); pass --allow-unverified-disk only to study the rsync method' },
    );
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

  private async restorePinned(id: string, count: number, t0: number, opts: RestoreOptions): Promise<RestoreResult> {
    const arriving = await this.startArriving(id, count, opts);
    if (arriving) return this.restoreArriving(arriving, t0, opts);
    const { fetched } = await this.remote.ensureLocal(this.store, id, opts.source ?? { kind: 'local' }, { onProgress: opts.onTransferProgress });
    const fetchMs = roundMs(performance.now() - t0);
    const m = await this.store.get(id);
    if (fetched) await this.trustVerified(m); // the download checked every digest
    await crashPoint('snapshot.restore.after-fetch');
    await this.checkCompatible(m);
    const hostWarnings = await this.checkHost(m, { allowHostMismatch: opts.allowHostMismatch });
    if (!fileEntry(m, m.disk.diff === 'block' ? SNAPSHOT_FILES.blockDelta : SNAPSHOT_FILES.rsyncBatch)) {
      throw new EmbersError('EMB_SNAPSHOT_CORRUPT', `snapshot ${id} lists no disk ${m.disk.diff === 'block' ? 'delta' : 'batch'}`, { id });
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
      : await this.prefetchPlan(m, opts.prefetch ?? 'auto');
    if (opts.evictMemory) await this.evictMemory(m);
    const prepareMs = roundMs(performance.now() - t0);
    const names = Array.from({ length: count }, (_, i) => opts.names?.[i] ?? `${id.slice(5, 13)}-${randomBytes(2).toString('hex')}`);
    const results = await Promise.allSettled(names.map((name) => this.restoreOne(m, name, disk, opts, prefetch)));
    // --cache-snapshots off: a downloaded snapshot is dropped once its clones have loaded it
    // (their memory mappings and disks keep what they use)
    if (fetched && !this.remote.cacheSnapshots) await this.remove(id);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // all or nothing: stop the clones that did come up
      for (const r of results) if (r.status === 'fulfilled') await this.deps.launcher.stop(r.value.record.name).catch(() => undefined);
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
    if (this.driver.kind !== 'firecracker' || count !== 1 || opts.prefetch === 'off' || opts.recordTo || (await this.store.has(id))) return undefined;
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
   * the memory file streams in; the download's end (whole-file digest, atomic publish) is awaited
   * before this resolves. A chunk or file that fails its digest stops the clone: EMB_SNAPSHOT_CORRUPT.
   */
  private async restoreArriving(a: ArrivingSnapshot, t0: number, opts: RestoreOptions): Promise<RestoreResult> {
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
      () => this.restoreOne(m, name, prepared.disk, opts, { launch: { via: 'page-server', pageServer: a.pageServer } }, a.bundleDir),
      (clone) => this.deps.launcher.stop(clone.record.name),
    );
    await this.trustVerified(run.manifest);
    if (!this.remote.cacheSnapshots) await this.remove(m.id);
    return {
      manifest: m,
      clones: [run.clone],
      prepareMs: prepared.prepareMs,
      hostWarnings: prepared.hostWarnings,
      fetch: { ms: roundMs(performance.now() - t0), bytes: run.bytes, resumedBytes: 0 },
      prefetched: { pages: a.workingSet.pages, bytes: a.workingSet.pages * WORKING_SET_PAGE_SIZE },
      earlyStart: { startMs: roundMs(run.startedAt - t0), bytesBeforeStart: a.bytesBeforeStart, requestedChunks: run.requested },
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
   * What a restore of `m` prefetches (see prefetchRoute): its working set, verified (digests
   * unless the files' stamps are unchanged since the last check) and checked against the memory
   * file; on QEMU its ranges for the page cache, on Firecracker the page server with its files.
   */
  private async prefetchPlan(m: SnapshotManifest, mode: PrefetchMode): Promise<{ launch: PrefetchLaunch; pages: number } | undefined> {
    const sets = new WorkingSetStore(this.store);
    const route = prefetchRoute(this.driver.kind, mode === 'off' ? false : await sets.has(m.id), mode, m.id);
    if (route === 'none') return undefined;
    const stampsPath = join(this.restoreDir, m.id, 'workingset-verified.json');
    const known = JSON.parse(await readFile(stampsPath, 'utf8').catch(() => 'null')) as Record<string, FileStamp> | null;
    const { manifest, stamps } = await sets.verify(m.id, known ?? undefined);
    if (JSON.stringify(stamps) !== JSON.stringify(known)) await writeJsonAtomic(stampsPath, stamps);
    const memoryBytes = fileEntry(m, SNAPSHOT_FILES.memory)!.sizeBytes;
    const dir = sets.dirOf(m.id);
    const ws = await readWorkingSetRanges(dir, { memoryBytes });
    const pages = totalPages(ws);
    if (route === 'page-cache') return { launch: { via: 'page-cache', tool: await ensurePageCacheTool(this.deps.cacheDir), ranges: ws.ranges }, pages };
    return { launch: await pageServerPrefetch(dir, manifest, this.deps.cacheDir), pages };
  }

  /** Drops `m`'s memory file from the page cache; refused while running clones keep pages of it mapped. */
  private async evictMemory(m: SnapshotManifest): Promise<void> {
    const cache = await FilePageCache.open(this.deps.cacheDir, join(this.store.pathOf(m.id), SNAPSHOT_FILES.memory));
    const left = await cache.evict();
    if (left > 0) {
      throw new EmbersError(
        'EMB_WORKING_SET_RECORD_FAILED',
        `${left} pages of ${m.id}'s memory file stay in the page cache after posix_fadvise(DONTNEED): running clones of it map them`,
        { id: m.id, residentPages: left },
      );
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
  async recordWorkingSet(
    id: string,
    opts: { request?: InvokeRequest; readyTimeoutMs?: number; source?: SnapshotSource; /** the recording clone's name */ name?: string } = {},
  ): Promise<RecordWorkingSetResult> {
    const t0 = performance.now();
    const sets = new WorkingSetStore(this.store);
    await this.remote.ensureLocal(this.store, id, opts.source ?? { kind: 'local' });
    const m = await this.store.get(id);
    const memoryBytes = fileEntry(m, SNAPSHOT_FILES.memory)!.sizeBytes;
    const existing = await sets.get(id);
    if (existing) return { manifest: existing, recorded: false, memoryBytes, ms: roundMs(performance.now() - t0) };
    const name = opts.name ?? `ws-${id.slice(5, 13)}-${randomBytes(2).toString('hex')}`;
    if (this.driver.kind === 'firecracker') {
      // the page server logs each page's first fault and writes the order when the VMM exits
      const recordTo = join(this.deps.tmpDir, `ws-record-${process.pid}-${randomBytes(3).toString('hex')}.ranges`);
      const restored = await this.restore(id, { names: [name], recordTo, readyTimeoutMs: opts.readyTimeoutMs });
      let status: number;
      try {
        status = await this.firstRequest(restored.clones[0]!.record, id, opts.request);
      } finally {
        await this.deps.launcher.stop(name).catch(() => undefined);
      }
      const manifest = await publishRecordedWorkingSet(this.store, m, recordTo).finally(() => rm(recordTo, { force: true }));
      await writeJsonAtomic(join(this.restoreDir, id, 'workingset-verified.json'), (await sets.verify(id)).stamps);
      return { manifest, recorded: true, memoryBytes, status, ms: roundMs(performance.now() - t0) };
    }
    const restored = await this.restore(id, { names: [name], prefetch: 'off', evictMemory: true, readyTimeoutMs: opts.readyTimeoutMs });
    let resident: PageRange[];
    let residentPages: number;
    let status: number;
    try {
      const rec = restored.clones[0]!.record;
      status = await this.firstRequest(rec, id, opts.request);
      const memoryFile = join(this.store.pathOf(id), SNAPSHOT_FILES.memory);
      // what the VM mapped (pagemap), not all that became resident: the page cache also holds the
      // readahead around each fault (read_ahead_kb, 8 MiB on some disks), which is not the working set
      resident = await mappedPages(rec.vm.pid, memoryFile);
      residentPages = totalPages({ pageSize: WORKING_SET_PAGE_SIZE, ranges: await (await FilePageCache.open(this.deps.cacheDir, memoryFile)).resident() });
    } finally {
      await this.deps.launcher.stop(name).catch(() => undefined);
    }
    const ws = { pageSize: WORKING_SET_PAGE_SIZE, ranges: resident };
    const staging = await sets.staging(id);
    try {
      await writeWorkingSet(staging, join(this.store.pathOf(id), SNAPSHOT_FILES.memory), ws);
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
    await writeJsonAtomic(join(this.restoreDir, id, 'workingset-verified.json'), (await sets.verify(id)).stamps);
    return { manifest, recorded: true, memoryBytes, residentPages, status, ms: roundMs(performance.now() - t0) };
  }

  /** Sends a recording clone its first request (default GET /); returns the answer's status. */
  private async firstRequest(rec: InstanceRecord, id: string, request: InvokeRequest | undefined): Promise<number> {
    try {
      return (await httpRequest(rec.cloneIp, rec.function.port, request ?? {})).status;
    } catch (err) {
      throw new EmbersError(
        'EMB_INSTANCE_INVOKE_FAILED',
        `the first request to ${rec.name}, restored from ${id}, failed: ${(err as Error).message}`,
        { id, name: rec.name },
        { cause: err },
      );
    }
  }

  /** The working-set manifest of a local snapshot, or undefined; with `verify`, its files are checked first. */
  async workingSet(id: string, opts: { verify?: boolean } = {}): Promise<WorkingSetManifest | undefined> {
    const sets = new WorkingSetStore(this.store);
    if (!(await sets.has(id))) return undefined;
    return opts.verify ? (await sets.verify(id)).manifest : sets.get(id);
  }

  /**
   * Records that this process has just proved every file of `m` against its digest (it
   * published or downloaded them), so the first restore checks stamps instead of hashing
   * again; any later change to a file changes its stamp and brings the hashing back.
   */
  private async trustVerified(m: SnapshotManifest): Promise<void> {
    await writeJsonAtomic(join(this.restoreDir, m.id, 'verified.json'), { snapshot: await this.store.stampsOf(m) });
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
  async pull(id: string, source: SnapshotSource = { kind: 's3' }, opts?: TransferOptions): Promise<{ fetched: TransferResult | undefined }> {
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

  /** Runs `fn` with a scratch dir for rsync under the node's tmp (named with our pid, so reconcile can tell a dead run's), removed afterwards. */
  private async withRsyncWork<T>(fn: (work: string) => Promise<T>): Promise<T> {
    const work = join(this.deps.tmpDir, `rsync-${process.pid}-${randomBytes(3).toString('hex')}`);
    try {
      return await fn(work);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }
}

async function truncateTo(path: string, size: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

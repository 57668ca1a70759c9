/**
 * Snapshot create of a node: pause → VMM snapshot → flush → frozen disk copy → resume →
 * disk delta (or rsync batch) and the memory file's chunk digests → manifest → atomic publish,
 * then the upload when the node works with a remote store.
 */
import { randomBytes } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, asEmbersError } from '../errors.js';
import { allocatedBytes, asNoSpaceError, fsyncPath, requireFreeSpace, sha256File } from '../util/fs.js';
import { cloneDisk } from '../disk/clone.js';
import { diffByExtents } from '../disk/extents.js';
import { diffByComparison, writeDelta } from '../disk/delta.js';
import { writeRsyncBatch } from '../disk/rsync-diff.js';
import { GUEST_NET } from '../net/addressing.js';
import type { LocalSnapshotStore } from '../snapshot/local-store.js';
import { SNAPSHOT_FILES, type SnapshotManifest } from '../snapshot/manifest.js';
import { describeHost } from '../snapshot/host-compat.js';
import { MEMORY_CHUNK_SIZE, chunkDigests } from '../memory/chunks.js';
import type { HypervisorDriver } from '../vmm/driver.js';
import type { ImageStore } from '../image/store.js';
import { phaseTimer, roundMs } from '../util/format.js';
import { crashPoint } from '../util/crash-point.js';
import type { InstanceStore } from './instances.js';
import type { Launcher } from './launcher.js';
import type { RemoteSnapshots } from './remote.js';
import { withRsyncWork } from './restored-disk.js';
import type { CreateSnapshotOptions, CreateSnapshotResult } from './snapshot-types.js';

/** What a snapshot create works with: given by the snapshot service. */
export interface SnapshotCreateDeps {
  /** The local snapshot store's dir (free space is checked there). */
  snapshotsDir: string;
  /** Scratch space (named with our pid, so reconcile can tell a dead run's). */
  tmpDir: string;
  store: LocalSnapshotStore;
  instances: InstanceStore;
  images: ImageStore;
  driver: HypervisorDriver;
  launcher: Launcher;
  remote: RemoteSnapshots;
  /** Records that every file of a just-published snapshot was proved against its digest. */
  trustVerified: (m: SnapshotManifest) => Promise<void>;
}

/**
 * Snapshots instance `instance` into the local store (and uploads it in remote mode). The VM is
 * paused only for the VMM snapshot and the disk copy; with `opts.stop` it is stopped instead of resumed.
 */
export async function createSnapshot(
  deps: SnapshotCreateDeps,
  instance: string,
  opts: CreateSnapshotOptions = {},
): Promise<CreateSnapshotResult> {
  deps.remote.requireEnabled();
  const diff = opts.diskDiff ?? 'block';
  const rec = await deps.instances.get(instance);
  const image = await deps.images.get(rec.image.manifestDigest);
  if (!image) {
    throw EmbersError.of(
      'EMB_IMAGE_NOT_FOUND',
      {
        problem: 'rootfs-gone',
        instance,
        reference: rec.image.reference,
        manifestDigest: rec.image.manifestDigest,
      },
      {
        hint: `pull the image again (\`embers image pull ${rec.image.reference}\`), then retry`,
      },
    );
  }
  // What it will write: the guest memory it touched, the state, a frozen copy of the disk
  // and the delta (at most the disk's data again). Refused before the VM is paused.
  const memoryBytes = (await allocatedBytes(rec.vm.memoryFile)) ?? rec.function.memoryMiB * 1024 * 1024;
  const diskBytes = (await allocatedBytes(rec.diskPath)) ?? 0;
  await requireFreeSpace(
    deps.snapshotsDir,
    memoryBytes + 2 * diskBytes + 4 * 1024 * 1024,
    `snapshot create of ${instance}`,
  );
  const { phases, mark } = phaseTimer();
  const t0 = performance.now();
  const staging = await deps.store.staging();
  // one snapshot of an instance at a time; a marker a killed create left is taken over
  await deps.instances.beginSnapshot(instance).catch(async (err: unknown) => {
    await rm(staging, { recursive: true, force: true });
    throw err;
  });
  // a frozen copy of the disk at pause: the VM resumes while it is hashed and diffed
  const diskCopy = join(deps.tmpDir, `snapshot-disk-${process.pid}-${randomBytes(4).toString('hex')}.img`);
  let paused = false;
  let pausedAt = 0;
  let pausedMs = 0;
  try {
    let t = performance.now();
    await deps.driver.pause(rec.vm);
    paused = true;
    pausedAt = performance.now();
    mark('pauseMs', t);
    await crashPoint('snapshot.create.after-pause');

    t = performance.now();
    const vmFiles = await deps.driver.snapshot(rec.vm, staging);
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
    if (opts.stop) await deps.launcher.stop(instance);
    else await deps.driver.resume(rec.vm);
    paused = false;
    pausedMs = performance.now() - pausedAt;
    mark(opts.stop ? 'stopMs' : 'resumeMs', t);
    await crashPoint('snapshot.create.after-resume');

    t = performance.now();
    // the memory file's chunk digests (a remote restore verifies each chunk on its own) alongside the disk's
    const [diskSha, memoryChunks] = await Promise.all([
      sha256File(diskCopy),
      chunkDigests(join(staging, SNAPSHOT_FILES.memory), MEMORY_CHUNK_SIZE),
    ]);
    const diskSize = (await stat(diskCopy)).size;
    mark('diskHashMs', t);

    t = performance.now();
    let changedBytes: number;
    let diffMethod: CreateSnapshotResult['diffMethod'] = 'rsync';
    if (diff === 'block') {
      // On a reflink filesystem the extent maps say which blocks changed without reading
      // them (FIEMAP); elsewhere, compare block by block.
      diffMethod = rec.diskMethod === 'reflink' && copyMethod === 'reflink' ? 'extents' : 'comparison';
      const runs =
        diffMethod === 'extents'
          ? await diffByExtents(image.rootfsPath, diskCopy)
          : await diffByComparison(image.rootfsPath, diskCopy);
      const stats = await writeDelta(diskCopy, runs, join(staging, SNAPSHOT_FILES.blockDelta));
      changedBytes = stats.changedBytes;
    } else {
      const batch = join(staging, SNAPSHOT_FILES.rsyncBatch);
      changedBytes = (
        await withRsyncWork(deps.tmpDir, (work) => writeRsyncBatch(image.rootfsPath, diskCopy, batch, work))
      ).batchBytes;
    }
    mark('diskDiffMs', t);
    await crashPoint('snapshot.create.after-delta');

    t = performance.now();
    const accel = await deps.driver.accelerator();
    const host = await describeHost(deps.driver, rec.kit.kernelVersion);
    const manifest = await deps.store.publish(
      staging,
      {
        createdAt: new Date().toISOString(),
        function: rec.function,
        image: { ...rec.image, flattenerVersion: image.flattenerVersion },
        disk: { diff, sha256AtPause: diskSha, sizeBytes: diskSize, changedBytes },
        vmm: {
          kind: deps.driver.kind,
          version: await deps.driver.version(),
          snapshotFormat: await deps.driver.snapshotFormat(),
          accelerator: accel.accelerator,
          deviceDiscovery: rec.vm.deviceDiscovery ?? deps.driver.deviceDiscovery,
          driveLayout: rec.vm.driveLayout ?? deps.driver.driveLayout,
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
    await deps.trustVerified(manifest);
    if (deps.remote.mode === 'remote') {
      // upload after creation (the manifest last, so readers never see a half upload)
      t = performance.now();
      try {
        await deps.remote.push(deps.store, manifest.id, { onProgress: opts.onTransferProgress });
      } catch (err) {
        const e = asEmbersError(err);
        throw e.within(
          `snapshot ${manifest.id} was created here, but its upload failed`,
          { id: manifest.id },
          { cause: err, hint: `${e.hint}; then upload it with \`embers snapshot push ${manifest.id}\` (it resumes)` },
        );
      }
      mark('uploadMs', t);
    }
    return {
      manifest,
      diffMethod,
      timings: { createMs: roundMs(performance.now() - t0), pausedMs: roundMs(pausedMs), phases },
    };
  } catch (err) {
    if (paused) await deps.driver.resume(rec.vm).catch(() => undefined);
    await rm(staging, { recursive: true, force: true });
    await rm(diskCopy, { force: true });
    throw await asNoSpaceError(err, `snapshot create of ${instance}`, deps.snapshotsDir);
  } finally {
    await rm(diskCopy, { force: true });
    await deps.instances.endSnapshot(instance);
  }
}

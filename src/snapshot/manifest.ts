import { EmbersError } from '../errors.js';
import type { DeviceDiscovery, DriveLayout } from '../vmm/driver.js';
import type { GuestCpu, HostCpu } from '../vmm/host-cpu.js';

export const MANIFEST_FORMAT = 1;
export const MANIFEST_NAME = 'manifest.json';

export interface SnapshotFile {
  name: string;
  sizeBytes: number;
  sha256: string;
  /**
   * Where a sparse file has data, as [offset, length] runs, sorted; everything else is zeros.
   * Set for files that are mostly zeros (guest memory): transfers fetch only these runs. The
   * sha256 covers the whole file, zeros included, so a wrong map cannot go unnoticed.
   */
  dataRanges?: [number, number][];
  /**
   * sha256 of each fixed-size chunk of the file (chunk i covers [i*chunkSize, (i+1)*chunkSize),
   * the last one shorter), so a chunk can be verified on its own while the rest is still
   * arriving (a restore that starts before the memory file is whole). Both set or neither.
   */
  chunkSha256?: string[];
  chunkSize?: number;
}

/** Everything needed to restore a snapshot on any node, and to prove the restore is exact. */
export interface SnapshotManifest {
  formatVersion: number;
  id: string;
  createdAt: string;
  /** The workload the snapshot was made of, as its maker described it (node/ stores its function spec); opaque here. */
  function: object;
  /** restoreHook: the image's declared restore hook (its labels), absent when it declares none. */
  image: {
    reference: string;
    manifestDigest: string;
    rootfsSha256: string;
    flattenerVersion: number;
    restoreHook?: { path: string; timeoutMs?: number };
  };
  disk: {
    /** How the disk changes were captured. */
    diff: 'block' | 'rsync';
    /** sha256 of the whole instance disk at pause: a restored disk must hash to this. */
    sha256AtPause: string;
    sizeBytes: number;
    /** Bytes of disk that differ from the rootfs (block mode) or the batch size (rsync). */
    changedBytes: number;
  };
  /** The VMM that wrote the snapshot; `snapshotFormat` is its state-file format (Firecracker's snapshot version, or the QEMU release). */
  vmm: {
    kind: 'qemu' | 'firecracker';
    version: string;
    snapshotFormat: string;
    accelerator: 'kvm' | 'tcg';
    /** How the guest found its devices; a restore rebuilds the same machine. Absent in older manifests (they were all 'acpi'). */
    deviceDiscovery?: DeviceDiscovery;
    /** How the VMM reached the disk, which decides the drive path in the state file. Absent in older manifests, or if the driver did not say. */
    driveLayout?: DriveLayout;
    /** The VM had a vsock device (Firecracker re-points it on load only then). Absent: it had none, or the driver did not say. */
    vsock?: boolean;
    /** The VM had the guest agent's channel (restores then run the fix-ups through it). Absent in manifests older than the agent: none. */
    agent?: boolean;
  };
  /**
   * The host CPU and the CPU the guest saw (snapshot/host-compat.ts says what a restoring host
   * must match). Absent in manifests written before embers recorded it: treated as unknown.
   */
  host?: { cpu: HostCpu; guestCpu: GuestCpu };
  machine: { vcpus: number; memoryMiB: number };
  guestNetwork: {
    tapName: string;
    guestIp: string;
    gatewayIp: string;
    prefixLen: number;
    guestMac: string;
    gatewayMac: string;
  };
  guestKit: { kind: string; kernelVersion: string; cacheKey: string };
  /** Every file of the bundle but the manifest, with its size and digest. */
  files: SnapshotFile[];
}

/** The role of each bundle file. */
export const SNAPSHOT_FILES = {
  state: 'vmstate.bin',
  memory: 'memory.bin',
  blockDelta: 'disk.delta',
  rsyncBatch: 'disk.rsync-batch',
} as const;

/**
 * A snapshot's working set (REAP) lives in this subdirectory of its bundle dir, published
 * after the snapshot by an atomic rename of a staging dir (`.workingset-staging-<pid>-…`), with
 * its own manifest (snapshot/working-set-store.ts): the snapshot's manifest and files are never
 * rewritten. Removing the snapshot removes it.
 */
export const WORKING_SET_DIR = 'workingset';
export const WORKING_SET_STAGING = '.workingset-staging-';

const ID_RE = /^snap-[0-9a-f]{16,64}$/;

export function isSnapshotId(id: string): boolean {
  return ID_RE.test(id);
}

/** Refuses anything that is not a snapshot id before it reaches a path, a key or a URL. */
export function requireSnapshotId(id: string): void {
  if (!isSnapshotId(id)) throw EmbersError.of('EMB_SNAPSHOT_NOT_FOUND', { id, problem: 'not-an-id' });
}

/** What a bundle file may be named. */
export const FILE_NAME_RE = /^[a-z0-9][a-z0-9._-]*$/;

/**
 * The checks every file a manifest lists passes (a snapshot's, or a working set's): a safe name,
 * a size, a sha256. `bad` makes the error that names what is off.
 */
export function checkListedFile(
  f: { name: string; sizeBytes: number; sha256: string },
  bad: (why: string) => Error,
): void {
  if (typeof f?.name !== 'string' || !FILE_NAME_RE.test(f.name) || f.name === MANIFEST_NAME)
    throw bad(`file name ${String(f?.name)}`);
  if (!Number.isSafeInteger(f.sizeBytes) || f.sizeBytes < 0) throw bad(`size of ${f.name}`);
  if (typeof f.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(f.sha256)) throw bad(`sha256 of ${f.name}`);
}

/** Parses and checks a manifest's shape; anything off is EMB_SNAPSHOT_CORRUPT (or _INCOMPATIBLE for a newer format). */
export function parseManifest(text: string, source: string): SnapshotManifest {
  let m: SnapshotManifest;
  try {
    m = JSON.parse(text) as SnapshotManifest;
  } catch (err) {
    throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'manifest-json', source }, { cause: err });
  }
  const bad = (why: string) =>
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'manifest-invalid', source, reason: why });
  if (typeof m !== 'object' || m === null) throw bad('not an object');
  if (m.formatVersion !== MANIFEST_FORMAT) {
    throw EmbersError.of('EMB_SNAPSHOT_INCOMPATIBLE', {
      problem: 'format',
      source,
      formatVersion: m.formatVersion,
      readsFormat: MANIFEST_FORMAT,
    });
  }
  if (typeof m.id !== 'string' || !isSnapshotId(m.id)) throw bad('id');
  if (!Array.isArray(m.files) || m.files.length === 0) throw bad('files');
  for (const f of m.files) {
    checkListedFile(f, bad);
    if (f.dataRanges !== undefined && !validDataRanges(f.dataRanges, f.sizeBytes))
      throw bad(`data ranges of ${f.name}`);
    if ((f.chunkSha256 !== undefined || f.chunkSize !== undefined) && !validChunks(f))
      throw bad(`chunk digests of ${f.name}`);
  }
  if (!m.disk || !['block', 'rsync'].includes(m.disk.diff) || !/^[0-9a-f]{64}$/.test(m.disk.sha256AtPause))
    throw bad('disk');
  if (!m.image || !/^sha256:[0-9a-f]{64}$/.test(m.image.manifestDigest) || !/^[0-9a-f]{64}$/.test(m.image.rootfsSha256))
    throw bad('image');
  if (!m.vmm || !['qemu', 'firecracker'].includes(m.vmm.kind) || typeof m.vmm.snapshotFormat !== 'string')
    throw bad('vmm');
  if (m.vmm.deviceDiscovery !== undefined && !['acpi', 'cmdline'].includes(m.vmm.deviceDiscovery))
    throw bad('vmm.deviceDiscovery');
  if (m.vmm.driveLayout !== undefined && !['plain', 'mount-namespace', 'jail'].includes(m.vmm.driveLayout))
    throw bad('vmm.driveLayout');
  if (m.vmm.vsock !== undefined && typeof m.vmm.vsock !== 'boolean') throw bad('vmm.vsock');
  if (m.vmm.agent !== undefined && typeof m.vmm.agent !== 'boolean') throw bad('vmm.agent');
  if (m.host !== undefined && !validHost(m.host)) throw bad('host');
  if (!m.machine || !Number.isInteger(m.machine.vcpus) || !Number.isInteger(m.machine.memoryMiB)) throw bad('machine');
  for (const role of [SNAPSHOT_FILES.state, SNAPSHOT_FILES.memory]) {
    if (!m.files.some((f) => f.name === role)) throw bad(`no ${role}`);
  }
  return m;
}

export function fileEntry(m: SnapshotManifest, name: string): SnapshotFile | undefined {
  return m.files.find((f) => f.name === name);
}

function validHost(h: unknown): boolean {
  const host = h as SnapshotManifest['host'];
  if (typeof host !== 'object' || host === null) return false;
  const { cpu, guestCpu } = host as NonNullable<SnapshotManifest['host']>;
  return (
    typeof cpu?.vendor === 'string' &&
    typeof cpu.modelName === 'string' &&
    Array.isArray(cpu.flags) &&
    cpu.flags.every((f) => typeof f === 'string') &&
    typeof guestCpu?.model === 'string' &&
    typeof guestCpu.hostDependent === 'boolean'
  );
}

function validChunks(f: SnapshotFile): boolean {
  const { chunkSha256, chunkSize } = f;
  if (!Number.isSafeInteger(chunkSize) || chunkSize! <= 0 || chunkSize! % 4096 !== 0 || !Array.isArray(chunkSha256))
    return false;
  return (
    chunkSha256.length === Math.ceil(f.sizeBytes / chunkSize!) &&
    chunkSha256.every((d) => typeof d === 'string' && /^[0-9a-f]{64}$/.test(d))
  );
}

function validDataRanges(ranges: unknown, size: number): boolean {
  if (!Array.isArray(ranges)) return false;
  let end = 0;
  for (const r of ranges) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1])) return false;
    const [offset, length] = r as [number, number];
    if (offset < end || length <= 0 || offset + length > size) return false;
    end = offset + length;
  }
  return true;
}

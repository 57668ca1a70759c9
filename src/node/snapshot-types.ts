/**
 * What the snapshot service of a node (snapshots.ts) takes and gives: options and results of
 * create, restore and working-set recording.
 */
import type { SnapshotManifest } from '../snapshot/manifest.js';
import type { TransferOptions } from '../snapshot/transfer.js';
import type { WorkingSetManifest } from '../snapshot/working-set-store.js';
import type { InstanceRecord } from './instances.js';
import type { InvokeRequest } from './invoke.js';
import type { SnapshotSource } from './remote.js';

/** How a restore uses a snapshot's working set: see RestoreOptions.prefetch. */
export type PrefetchMode = 'auto' | 'on' | 'off';

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

/**
 * A restore of one clone that started before its snapshot had arrived (SnapshotService.restoreEarly):
 * the restore as of the clone being up, and the end of the download.
 */
export interface EarlyRestore {
  /** Its `earlyStart` is set (its requestedChunks come with `arrived`); its `fetch` is not: the memory file is still arriving. */
  result: RestoreResult;
  /**
   * Settles when the download ends: resolved once the snapshot and its working set are published
   * (verified whole) in the local store; rejected, nothing published, the clone stopped, when a
   * chunk or a file failed its digest, the source failed, or the clone stopped first.
   */
  arrived: Promise<{ manifest: SnapshotManifest; bytes: number; requested: number[]; ms: number }>;
}

/** What recording a working set sends and waits for (SnapshotService.recordWorkingSet). */
export interface RecordWorkingSetOptions {
  /** The first request (default GET /). */
  request?: InvokeRequest;
  readyTimeoutMs?: number;
  /** Where to get the snapshot if it is not here. */
  source?: SnapshotSource;
  /** The recording clone's name. */
  name?: string;
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

export interface RestoredClone {
  record: InstanceRecord;
  diskVerified: boolean;
}

/** The snapshot area's error details (see snapshot.ts): per code of disks, snapshots, working sets and remote stores, the shape of its details. */
import type { SnapshotVersionDetails } from './shared.js';

/** Which remote a REMOTE_* error concerns: an S3-compatible store or another embers node (a peer). */
export type RemoteKind = 's3' | 'peer';

/** What the S3 store says about a failed request (snapshot/s3-store.ts), or the peer client about its request. */
export interface S3RequestDetails {
  /** Names the remote in the message ("the S3 endpoint URL", "the peer URL"); absent: the endpoint alone. */
  readonly remote?: RemoteKind;
  readonly endpoint?: string;
  readonly bucket?: string;
  /** The request that failed, e.g. `GET snap-…/memory.bin bytes 0-99` or `HEAD /v1/snapshots/…`. */
  readonly request?: string;
  readonly status?: number | null;
  readonly serviceCode?: string;
}

/** One way a snapshot's host differs from this one (snapshot/host-compat.ts compares them). */
export type HostMismatchKind = 'vmm' | 'kernel' | 'cpu-model' | 'cpu-vendor' | 'cpu-flags' | 'drive-layout';
export interface HostMismatch {
  what: HostMismatchKind;
  recorded: string;
  here: string;
  /** For cpu-flags: the flags this host lacks. */
  missing?: string[];
}

/** Which check of a snapshot's files failed (EMB_SNAPSHOT_CORRUPT); the template frames the other details by it. */
export type SnapshotCorruptProblem =
  /** the manifest (`source`) is not JSON */
  | 'manifest-json'
  /** the manifest (`source`) has a bad field (`reason`) */
  | 'manifest-invalid'
  /** the snapshot dir `id` has no manifest (`file`) */
  | 'manifest-missing'
  /** the manifest stored for `id` (at `source`, if remote) is the manifest of `manifestId` */
  | 'manifest-of-another'
  /** the manifest lists no disk for its `diff` method */
  | 'no-disk'
  /** snapshot `id` holds `file`, which its manifest does not list */
  | 'unlisted-file'
  /** snapshot `id` lacks `file` */
  | 'missing-file'
  /** `file` is `actualBytes`, the manifest says `sizeBytes` (`fetched`: in a staging dir) */
  | 'size'
  /** `file` does not match its sha256 (`expected`, `actual`) */
  | 'digest'
  /** chunk `chunk` of `file` (bytes `start` to `end`, exclusive) does not match its sha256 */
  | 'chunk-digest'
  /** `chunks` digests of `chunkSize` bytes do not cover `file` (`sizeBytes`): it changed while hashed */
  | 'chunks-cover'
  /** a fetched snapshot's `staged` files are not its `listed` ones */
  | 'staged-files'
  /** `file` of `id` from `source` does not match its manifest (`actualBytes`, `actual` if known); nothing published */
  | 'fetched-mismatch'
  /** local file `path` ends at `actualBytes`, before `position` + `length` */
  | 'short-file'
  /** the remote (`remote`: its object `key` or `file`) lacks `file` its manifest lists */
  | 'remote-missing'
  /** the remote holds `file` at `actualBytes`, the manifest says `sizeBytes` */
  | 'remote-size'
  /** the remote holds `file` shorter than the `sizeBytes` the manifest says */
  | 'remote-short'
  /** the remote says `file` has sha256 `actual`, the manifest says `expected` */
  | 'remote-digest'
  /** `source` sent more than bytes `start` to `end` (exclusive) of `file` of `id` */
  | 'overrun'
  /** the disk delta `path` is corrupt (`reason`) */
  | 'delta'
  /** the state file `stateFile` cannot be opened (`reason`) */
  | 'state-file-unreadable'
  /** the state file `stateFile` is not a Firecracker x86_64 snapshot state file (`reason`) */
  | 'state-file'
  /** the recorded `snapshotVersion` is not MAJOR.MINOR.PATCH */
  | 'format-version'
  /** the page server refused chunk `chunk` of `file`: it does not match its sha256 */
  | 'chunk-refused'
  /** chunk `chunk` of `file` came with `actualBytes`, not `sizeBytes` */
  | 'chunk-length'
  /** `file` arrived whole with sha256 `actual`, not `expected` */
  | 'whole-digest';

/** Which check of a working set failed (EMB_WORKING_SET_INVALID). */
export type WorkingSetProblem =
  /** a ranges or pages file (`source`) is malformed (`reason`) */
  | 'invalid'
  /** its manifest (`source`) is not JSON */
  | 'manifest-json'
  /** its manifest (`source`) has a bad field (`reason`) */
  | 'manifest-invalid'
  /** snapshot `id` has none */
  | 'none'
  /** a fetched working set's `staged` files are not its `listed` ones */
  | 'staged-files'
  /** the working set of `id` holds `file`, which its manifest does not list */
  | 'unlisted-file'
  /** it lacks `file` */
  | 'missing-file'
  /** `file` is `actualBytes`, its manifest says `sizeBytes` */
  | 'size'
  /** `file` does not match its sha256 */
  | 'digest'
  /** `file` of `id` from `source` does not match its manifest (`actualBytes`, sha256 `actual`) */
  | 'fetched-mismatch';

/** Why a snapshot cannot be restored by this node (EMB_SNAPSHOT_INCOMPATIBLE). */
export type SnapshotIncompatibleProblem =
  /** made by the hypervisor `recorded`, this node runs `here` */
  | 'vmm'
  /** made under the accelerator `recorded`, this node uses `here` */
  | 'accelerator'
  /** its guest network `setting` is `recorded`, slots here use `here` */
  | 'guest-network'
  /** its manifest (`source`) has `formatVersion`, this embers reads `readsFormat` */
  | 'format'
  /** its state (`source`) was written by the QEMU release `recorded`, this host runs `here` */
  | 'qemu-release'
  /** taken with the `snapshotDriveLayout` drive layout, the driver runs `driveLayout` */
  | 'drive-layout';

export interface SnapshotErrorDetails {
  EMB_DISK_CLONE_FAILED: { readonly source: string; readonly target: string; readonly reason?: string };
  EMB_NO_SPACE: {
    /** What failed or was refused, e.g. "pulling image x" (starts the message). */
    readonly step: string;
    readonly path: string;
    /** The message of the error that said the disk was full. */
    readonly cause?: string;
    readonly freeBytes?: number;
    /** Set when the step was refused up front: about how much it needs. */
    readonly needBytes?: number;
    readonly totalBytes?: number;
  };
  EMB_SNAPSHOT_NOT_FOUND: {
    readonly id: string;
    /** The local store looked in. */
    readonly store?: string;
    /** `id` is not even a snapshot id. */
    readonly problem?: 'not-an-id';
  };
  EMB_SNAPSHOT_CORRUPT: SnapshotVersionDetails & {
    readonly problem: SnapshotCorruptProblem;
    readonly remote?: RemoteKind;
    readonly actual?: string;
    /** The size found (of a file, an object, a chunk). */
    readonly actualBytes?: number;
    readonly chunk?: number;
    readonly chunkSize?: number;
    readonly chunks?: number;
    readonly diff?: 'block' | 'rsync';
    readonly end?: number;
    readonly endpoint?: string;
    readonly expected?: string;
    /** The snapshot was being fetched (checked in its staging dir). */
    readonly fetched?: boolean;
    readonly file?: string;
    readonly id?: string;
    readonly key?: string;
    readonly length?: number;
    readonly listed?: string[];
    readonly manifestId?: string;
    readonly path?: string;
    readonly position?: number;
    /** What is wrong, where a check says it in words (a manifest field, a header, an OS error). */
    readonly reason?: string;
    readonly serviceCode?: string;
    /** The size the manifest says. */
    readonly sizeBytes?: number;
    readonly source?: string;
    readonly staged?: string[];
    readonly start?: number;
    readonly stateFile?: string;
  };
  EMB_SNAPSHOT_INCOMPATIBLE: {
    readonly problem: SnapshotIncompatibleProblem;
    readonly driveLayout?: string;
    readonly formatVersion?: unknown;
    readonly readsFormat?: number;
    readonly here?: string;
    readonly id?: string;
    readonly recorded?: string;
    readonly setting?: string;
    readonly snapshotDriveLayout?: string;
    readonly source?: string;
    readonly stateFile?: string;
    /** The VM the snapshot was to be restored as. */
    readonly vm?: string;
    readonly vmm?: unknown;
  };
  EMB_SNAPSHOT_HOST_MISMATCH: {
    readonly id: string;
    readonly here?: unknown;
    readonly mismatches: readonly HostMismatch[];
    readonly recorded?: unknown;
    readonly unknown?: string[];
  };
  /** The template tells a newer minor from another major by the versions. */
  EMB_SNAPSHOT_VERSION_MISMATCH: SnapshotVersionDetails & {
    readonly snapshotVersion: string;
    readonly binarySnapshotVersion: string;
  };
  EMB_SNAPSHOT_LOAD_FAILED: {
    readonly stateFile: string;
    /** The VM the snapshot was loaded for. */
    readonly vm?: string;
    readonly faultMessage: string;
    readonly memoryBackend?: unknown;
    readonly method?: string;
    readonly path?: string;
    readonly tail?: string;
  };
  EMB_SNAPSHOT_DISK_MISMATCH: {
    readonly id: string;
    /** What differs; with `diff: 'rsync'` and no `actual`, the disk could not be verified at all. */
    readonly which: 'image manifest digest' | 'rootfs sha256' | 'disk sha256';
    readonly actual?: string;
    readonly diff?: 'block' | 'rsync';
    readonly expected?: string;
    /** The image reference of the snapshot (which: image manifest digest). */
    readonly reference?: string;
    /** The image manifest the rootfs was built for (which: rootfs sha256). */
    readonly manifestDigest?: string;
  };
  EMB_SNAPSHOT_BUSY: { readonly id: string; readonly pids: readonly number[] };
  EMB_SNAPSHOT_TRANSFER_BUSY: {
    /** The transfer's name, e.g. `pull-snap-…`. */
    readonly transfer: string;
    readonly store: string;
    readonly lock: string;
    readonly pid: number;
  };
  EMB_WORKING_SET_INVALID: {
    readonly problem: WorkingSetProblem;
    readonly actual?: string;
    readonly actualBytes?: number;
    readonly expected?: string;
    readonly file?: string;
    readonly id?: string;
    readonly listed?: string[];
    readonly memoryBytes?: number;
    readonly reason?: string;
    readonly sizeBytes?: number;
    readonly source?: string;
    readonly staged?: string[];
  };
  /** The template tells the cases by the fields present: residentPages, recordPath, or neither (no page recorded). */
  EMB_WORKING_SET_RECORD_FAILED: {
    readonly id: string;
    readonly residentPages?: number;
    readonly recordPath?: string;
    readonly timeoutMs?: number;
  };
  EMB_REMOTE_UNREACHABLE: S3RequestDetails & {
    /** connect: no connection; broken: it broke while reading; stalled: nothing came for stallTimeoutMs; ended-early: a range ended short. */
    readonly problem: 'connect' | 'broken' | 'stalled' | 'ended-early';
    /** The errno or SDK error name, null when there is none. */
    readonly cause?: string | null;
    readonly end?: number;
    readonly file?: string;
    readonly got?: number;
    readonly id?: string;
    readonly key?: string;
    readonly path?: string;
    /** What was being read (a key, a path, "the snapshot list"). */
    readonly reading?: string;
    /** The error text of the failure. */
    readonly reason?: string;
    readonly stallTimeoutMs?: number;
    readonly start?: number;
    readonly want?: number;
  };
  /** With `etag`: a part of a multipart upload arrived altered; otherwise the remote failed `request`. */
  EMB_REMOTE_UNAVAILABLE: S3RequestDetails & {
    readonly etag?: string;
    readonly key?: string;
    readonly md5?: string;
    readonly part?: number;
    readonly path?: string;
    readonly retryAfterMs?: number;
  };
  EMB_REMOTE_AUTH: S3RequestDetails & {
    /** No credentials could be found (`reason` says why); otherwise the remote refused them. */
    readonly problem?: 'no-credentials';
    readonly reason?: string;
  };
  EMB_REMOTE_NOT_FOUND: S3RequestDetails & {
    readonly id?: string;
    readonly key?: string;
    /** The store's name, e.g. `s3://bucket/prefix`. */
    readonly location?: string;
  };
  EMB_REMOTE_REQUEST_FAILED: S3RequestDetails & {
    /**
     * refused: an unexpected status; unexpected: an answer embers cannot use (`reason`);
     * too-many-bytes, no-content-range, wrong-range: a ranged read got other bytes than asked.
     */
    readonly problem: 'refused' | 'unexpected' | 'too-many-bytes' | 'no-content-range' | 'wrong-range';
    readonly contentRange?: string;
    readonly end?: number;
    readonly file?: string;
    readonly path?: string;
    readonly reason?: string;
    readonly source?: string;
    readonly start?: number;
  };
  EMB_PEER_AUTH: { readonly endpoint: string; readonly path?: string; readonly request: string };
}

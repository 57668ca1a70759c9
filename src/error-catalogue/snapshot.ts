/** Errors of disks, snapshots, working sets and remote stores (S3 and peers): the shape of each code's details and its catalogue entry (see shared.ts). */
import type { AreaCatalogue, SnapshotVersionDetails } from './shared.js';

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

/** One line per mismatch, e.g. "CPU vendor: GenuineIntel (…) recorded, AuthenticAMD (…) here". */
export function describeMismatch(x: HostMismatch): string {
  switch (x.what) {
    case 'vmm':
      return `VMM: ${x.recorded} recorded, ${x.here} here (another kind or major version)`;
    case 'kernel':
      return `guest kernel: ${x.recorded} recorded, ${x.here} here`;
    case 'cpu-model':
      return `guest CPU model: ${x.recorded} recorded, ${x.here} here`;
    case 'cpu-vendor':
      return `CPU vendor: ${x.recorded} recorded, ${x.here} here`;
    case 'cpu-flags': {
      const list = x.missing ?? [];
      return `CPU flags: this host (${x.here}) lacks ${list.length} the snapshot's (${x.recorded}) had: ${list.slice(0, 12).join(' ')}${list.length > 12 ? ' …' : ''}`;
    }
    case 'drive-layout':
      return `drive layout: ${x.recorded} recorded, ${x.here} here`;
  }
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

type Details<C extends keyof SnapshotErrorDetails> = SnapshotErrorDetails[C];

const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** How a message names a remote: "the peer URL", "the S3 endpoint URL", or the endpoint alone. */
function remoteName(d: { readonly remote?: RemoteKind; readonly endpoint?: string }): string {
  return d.remote === 'peer'
    ? `the peer ${d.endpoint}`
    : d.remote === 's3'
      ? `the S3 endpoint ${d.endpoint}`
      : `${d.endpoint}`;
}

/** A byte range [start, end) as "bytes S-E" (inclusive), the way HTTP writes it. */
const bytesRange = (start?: number, end?: number) => `bytes ${start}-${(end ?? 0) - 1}`;

function noSpaceMessage(d: Details<'EMB_NO_SPACE'>): string {
  if (d.needBytes !== undefined)
    return `${d.step} needs about ${mib(d.needBytes)} on the filesystem of ${d.path}, and ${mib(d.freeBytes ?? 0)} are free; nothing was started`;
  const room =
    d.freeBytes !== undefined && d.totalBytes !== undefined
      ? ` (${mib(d.freeBytes)} free of ${mib(d.totalBytes)} after cleaning up)`
      : '';
  return `${d.step} failed: no space left on the filesystem of ${d.path}${room}; nothing partial was kept`;
}

function corruptMessage(d: Details<'EMB_SNAPSHOT_CORRUPT'>): string {
  const from = d.source ? ` (${d.source})` : '';
  // a file of a remote: "snapshot ID at the peer URL: FILE" or "remote snapshot ID in s3://…: the object KEY"
  const remoteFile =
    d.remote === 's3'
      ? `remote snapshot ${d.id} in ${d.source}: the object ${d.key}`
      : `snapshot ${d.id} at ${remoteName(d)}: ${d.file}`;
  switch (d.problem) {
    case 'manifest-json':
      return `snapshot manifest ${d.source} is not valid JSON`;
    case 'manifest-invalid':
      return `snapshot manifest ${d.source} is invalid: ${d.reason}`;
    case 'manifest-missing':
      return `snapshot ${d.id} has no ${d.file}`;
    case 'manifest-of-another':
      return d.source
        ? `${d.source}: the manifest stored for ${d.id} is the manifest of ${d.manifestId}`
        : `snapshot dir ${d.id} holds the manifest of ${d.manifestId}`;
    case 'no-disk':
      return `snapshot ${d.id} lists no disk ${d.diff === 'block' ? 'delta' : 'batch'}`;
    case 'unlisted-file':
      return `snapshot ${d.id} holds a file its manifest does not list: ${d.file}`;
    case 'missing-file':
      return `snapshot ${d.id} is missing ${d.file}`;
    case 'size':
      return d.fetched
        ? `fetched snapshot ${d.id}: ${d.file} is ${d.actualBytes} bytes, the manifest says ${d.sizeBytes}`
        : `snapshot ${d.id}: ${d.file} is ${d.actualBytes} bytes, the manifest says ${d.sizeBytes} (truncated or replaced)`;
    case 'digest':
      return `snapshot ${d.id}: ${d.file} does not match its sha256 (corrupt or tampered)`;
    case 'chunk-digest':
      return `snapshot ${d.id}: chunk ${d.chunk} of ${d.file} (${bytesRange(d.start, d.end)}) does not match its sha256 (corrupt or tampered)`;
    case 'chunks-cover':
      return `${d.chunks} chunk digests of ${d.chunkSize} bytes do not cover ${d.file} (${d.sizeBytes} bytes): it changed while it was hashed`;
    case 'staged-files':
      return `fetched snapshot ${d.id}: the staged files (${d.staged?.join(', ')}) are not the files its manifest lists (${d.listed?.join(', ')})`;
    case 'fetched-mismatch':
      return `snapshot ${d.id} from ${d.source}: ${d.file} does not match its manifest (${d.actualBytes} of ${d.sizeBytes} bytes, sha256 ${d.actual}): corrupt or tampered at the source; nothing was published`;
    case 'short-file':
      return `${d.path} is shorter than its snapshot manifest says (it ends at ${d.actualBytes}, before ${(d.position ?? 0) + (d.length ?? 0)})`;
    case 'remote-missing':
      return d.remote === 's3'
        ? `remote snapshot ${d.id} in ${d.source} is incomplete: its manifest lists ${d.file}, but the object ${d.key} does not exist`
        : `${remoteFile} is listed in its manifest but the peer does not serve it (${d.serviceCode})`;
    case 'remote-size':
      return `${remoteFile} is ${d.actualBytes} bytes there, the manifest says ${d.sizeBytes} (corrupt or tampered)`;
    case 'remote-short':
      return `${remoteFile} is shorter there than the ${d.sizeBytes} bytes the manifest says (corrupt or tampered)`;
    case 'remote-digest':
      return `${remoteFile} has sha256 ${d.actual} there, the manifest says ${d.expected} (corrupt or tampered)`;
    case 'overrun':
      return `${d.source} sent more than ${bytesRange(d.start, d.end)} of ${d.file} of ${d.id}`;
    case 'delta':
      return `disk delta ${d.path} is corrupt: ${d.reason}`;
    case 'state-file-unreadable':
      return `snapshot state file ${d.stateFile} cannot be opened: ${d.reason}`;
    case 'state-file':
      return `${d.stateFile} is not a Firecracker x86_64 snapshot state file: ${d.reason}`;
    case 'format-version':
      return `snapshot format version "${d.snapshotVersion}"${from} is not MAJOR.MINOR.PATCH`;
    case 'chunk-refused':
      return `chunk ${d.chunk} of ${d.file} does not match its sha256: the page server refused it`;
    case 'chunk-length':
      return `chunk ${d.chunk} of ${d.file} came with ${d.actualBytes} bytes instead of ${d.sizeBytes}`;
    case 'whole-digest':
      return `${d.file} arrived whole with sha256 ${d.actual}, not ${d.expected}`;
  }
}

function incompatibleMessage(d: Details<'EMB_SNAPSHOT_INCOMPATIBLE'>): string {
  const here = `snapshot ${d.id} cannot be restored here`;
  switch (d.problem) {
    case 'vmm':
      return `${here}: it was made by ${d.recorded}, this node runs ${d.here}`;
    case 'accelerator':
      return `${here}: it was made under ${d.recorded}, this node uses ${d.here} (CPU state differs)`;
    case 'guest-network':
      return `${here}: its guest network ${d.setting} is ${d.recorded}, slots here use ${d.here}`;
    case 'format':
      return `snapshot ${d.source} has format ${String(d.formatVersion)}; this embers reads format ${d.readsFormat}`;
    case 'qemu-release':
      return `${d.source} was written by ${d.recorded}; this host runs ${d.here}`;
    case 'drive-layout':
      return `snapshot ${d.stateFile} was taken with the ${d.snapshotDriveLayout} drive layout, this driver runs ${d.driveLayout}: the drive path it records would not be ${d.vm}'s disk`;
  }
}

function versionMismatchMessage(d: Details<'EMB_SNAPSHOT_VERSION_MISMATCH'>): string {
  const from = d.source ? ` (${d.source})` : '';
  const by = `${d.binary ?? 'firecracker'}${d.binaryVersion ? ` v${d.binaryVersion}` : ''}`;
  const [snap, bin] = [d.snapshotVersion, d.binarySnapshotVersion].map((v) => Number(v.split('.')[0]));
  return snap !== bin
    ? `snapshot format v${d.snapshotVersion}${from} has major version ${snap}, but ${by} loads snapshot format v${d.binarySnapshotVersion} (major ${bin}): refused before load`
    : `snapshot format v${d.snapshotVersion}${from} is newer than v${d.binarySnapshotVersion}, the newest ${by} loads: refused before load`;
}

function diskMismatchMessage(d: Details<'EMB_SNAPSHOT_DISK_MISMATCH'>): string {
  switch (d.which) {
    case 'image manifest digest':
      return `image ${d.reference} now resolves to ${d.actual}, the snapshot was made from ${d.expected}`;
    case 'rootfs sha256':
      return `the rootfs built here for ${d.manifestDigest} has sha256 ${d.actual}, the snapshot's was ${d.expected}`;
    case 'disk sha256':
      return d.actual === undefined && d.diff === 'rsync'
        ? `snapshot ${d.id} captured its disk with rsync: the patched disk has the same files but not the same bytes as the disk at pause, so the guest's cached filesystem state would not match it`
        : `restored disk of ${d.id} has sha256 ${d.actual}, the disk at pause had ${d.expected}`;
  }
}

function workingSetInvalidMessage(d: Details<'EMB_WORKING_SET_INVALID'>): string {
  const tampered = (what: string) => `working set of ${d.id}: ${what} (corrupt or tampered)`;
  switch (d.problem) {
    case 'invalid':
      return `working set ${d.source} is invalid: ${d.reason}`;
    case 'manifest-json':
      return `working-set manifest ${d.source} is not valid JSON`;
    case 'manifest-invalid':
      return `working-set manifest ${d.source} is invalid: ${d.reason}`;
    case 'none':
      return `snapshot ${d.id} has no working set`;
    case 'staged-files':
      return `fetched working set of ${d.id}: staged files (${d.staged?.join('/')}) are not the listed ones (${d.listed?.join('/')})`;
    case 'unlisted-file':
      return tampered(`holds a file its manifest does not list: ${d.file}`);
    case 'missing-file':
      return tampered(`${d.file} is missing`);
    case 'size':
      return tampered(`${d.file} is ${d.actualBytes} bytes, its manifest says ${d.sizeBytes}`);
    case 'digest':
      return tampered(`${d.file} does not match its sha256`);
    case 'fetched-mismatch':
      return `working set of ${d.id} from ${d.source}: ${d.file} does not match its manifest (${d.actualBytes} of ${d.sizeBytes} bytes, sha256 ${d.actual}); nothing was published`;
  }
}

function recordFailedMessage(d: Details<'EMB_WORKING_SET_RECORD_FAILED'>): string {
  if (d.residentPages !== undefined)
    return `${d.residentPages} pages of ${d.id}'s memory file stay in the page cache after posix_fadvise(DONTNEED): running clones of it map them`;
  if (d.recordPath !== undefined)
    return `the page server recording the working set of ${d.id} wrote nothing to ${d.recordPath} within ${d.timeoutMs} ms of its VM stopping`;
  return `the page server recorded no page of ${d.id}: the clone touched no guest memory`;
}

function unreachableMessage(d: Details<'EMB_REMOTE_UNREACHABLE'>): string {
  const why = d.reason ? `: ${d.reason}` : '';
  switch (d.problem) {
    case 'connect':
      return `cannot reach ${remoteName(d)} (${d.cause ?? d.reason})${d.request ? ` for ${d.request}` : ''}`;
    case 'stalled':
      return `${remoteName(d)} sent nothing for ${d.stallTimeoutMs} ms during ${d.request}: stalled`;
    case 'ended-early':
      return `${remoteName(d)} ended ${bytesRange(d.start, d.end)} of ${d.file} of ${d.id} early`;
    case 'broken':
      return d.got !== undefined
        ? `the connection to ${remoteName(d)} broke after ${d.got} of ${d.want} bytes of ${d.file}${why}`
        : `the connection to ${remoteName(d)} broke while reading ${d.reading ?? d.key ?? `${d.file} of ${d.id}`}${why}`;
  }
}

function requestFailedMessage(d: Details<'EMB_REMOTE_REQUEST_FAILED'>): string {
  switch (d.problem) {
    case 'refused':
      return `${remoteName(d)} refused ${d.request} (${d.status ?? 'no status'} ${d.serviceCode}${d.reason ? `: ${d.reason}` : ''})`;
    case 'unexpected':
      return `${remoteName(d)}, ${d.request}: ${d.reason}`;
    case 'too-many-bytes':
      return `${d.source} sent more than the ${(d.end ?? 0) - (d.start ?? 0)} bytes asked for ${d.file} [${d.start}, ${d.end})`;
    case 'no-content-range':
      return `${remoteName(d)} answered a ranged GET of ${d.path} without a valid Content-Range`;
    case 'wrong-range':
      return `${remoteName(d)} sent ${d.contentRange} of ${d.path} for bytes=${d.start}-${(d.end ?? 0) - 1}`;
  }
}

export const SNAPSHOT_ERRORS = {
  // disks
  EMB_DISK_CLONE_FAILED: {
    summary: 'creating the instance disk failed',
    message: (d) => `could not copy ${d.source} to ${d.target}${d.reason ? `: ${d.reason}` : ''}`,
    hint: 'check free disk space under the embers home',
    exit: 70,
  },
  EMB_NO_SPACE: {
    summary: 'the filesystem embers writes to (the home: images, snapshots, instance disks) is full',
    message: noSpaceMessage,
    hint:
      'free space on that filesystem: remove snapshots you no longer need (`embers snapshot rm ID`, `embers snapshot ls` lists them), ' +
      'drop images no instance or snapshot uses (`embers image gc`), or use a --home on a larger filesystem',
    exit: 74,
  },
  // snapshots
  EMB_SNAPSHOT_NOT_FOUND: {
    summary: 'no snapshot has that id',
    message: (d) =>
      d.problem === 'not-an-id'
        ? `"${d.id}" is not a snapshot id (snap-<hex>)`
        : `no snapshot ${d.id}${d.store === undefined ? '' : ` in ${d.store}`}`,
    hint: 'list snapshots with `embers snapshot ls`',
    exit: 66,
  },
  EMB_SNAPSHOT_CORRUPT: {
    summary: 'a snapshot file is missing, truncated or does not match its digest',
    message: corruptMessage,
    hint: 'the snapshot cannot be restored safely; delete it and create or pull it again',
    exit: 65,
  },
  EMB_SNAPSHOT_INCOMPATIBLE: {
    summary: 'the snapshot was made for another hypervisor, format or machine',
    message: incompatibleMessage,
    hint: 'restore it with the hypervisor and version named in its manifest',
    exit: 65,
  },
  EMB_SNAPSHOT_HOST_MISMATCH: {
    summary:
      'the snapshot was made on a host whose CPU, VMM version, guest kernel or drive layout differs from this one',
    message: (d) =>
      `snapshot ${d.id} was made on a host that differs from this one: ${d.mismatches.map(describeMismatch).join('; ')}`,
    hint: 'restore it on a host like the one named in the details, or create the snapshot here; if you know the difference is harmless, pass --allow-host-mismatch (RestoreOptions.allowHostMismatch)',
    exit: 65,
  },
  EMB_SNAPSHOT_VERSION_MISMATCH: {
    summary: 'the snapshot data format is not one this hypervisor binary can load',
    message: versionMismatchMessage,
    hint: 'restore it with a Firecracker whose `firecracker --snapshot-version` has the same major (and no lower minor) version as the snapshot, or create the snapshot again with this binary',
    exit: 65,
  },
  EMB_SNAPSHOT_LOAD_FAILED: {
    summary: 'the hypervisor failed to load the snapshot, and the process that tried was stopped',
    message: (d) =>
      `Firecracker could not load snapshot ${d.stateFile} for ${d.vm}: ${d.faultMessage}${d.tail === undefined ? '' : `\n${d.tail}`}`,
    hint: 'see fault_message and the VMM log tail in the details; a Firecracker process cannot be reused after a failed load',
    exit: 70,
  },
  EMB_SNAPSHOT_DISK_MISMATCH: {
    summary: 'the restored disk is not bit-identical to the disk at pause',
    message: diskMismatchMessage,
    hint: 'the rootfs or the delta differs from the one the snapshot was made from; the restore was refused to protect the guest filesystem',
    exit: 65,
  },
  EMB_SNAPSHOT_BUSY: {
    summary: 'another process is restoring this snapshot, so it cannot be removed now',
    message: (d) => `snapshot ${d.id} is being restored by another process (pid ${d.pids.join(', ')})`,
    hint: 'retry `embers snapshot rm` once that restore has finished (its pid is in the details); clones already running keep what they loaded',
    exit: 75,
  },
  EMB_SNAPSHOT_TRANSFER_BUSY: {
    summary: 'another process is already pushing or pulling this snapshot with the same local store',
    message: (d) => `another transfer (${d.transfer}) is running with the store ${d.store} (pid ${d.pid})`,
    hint: 'wait for that transfer to finish (the lock file named in the details holds its pid); a transfer whose process died is taken over automatically',
    exit: 75,
  },
  EMB_WORKING_SET_INVALID: {
    summary:
      'a working set (workingset.ranges or workingset.pages) is malformed: bad magic, truncated, overlapping or out-of-range page ranges',
    message: workingSetInvalidMessage,
    hint: 'the working set cannot be used; the snapshot still restores without it. Record it again with `embers snapshot record-ws <id>`',
    exit: 65,
  },
  EMB_WORKING_SET_RECORD_FAILED: {
    summary:
      'recording a working set failed: the memory file could not be dropped from the page cache, or the VMM cannot record one here',
    message: recordFailedMessage,
    hint: 'stop the running clones of the snapshot (`embers ps`; their VMMs keep its memory pages cached), then run `embers snapshot record-ws <id>` again',
    exit: 75,
  },
  // remote stores (S3-compatible services) and peers (other embers nodes)
  EMB_REMOTE_UNREACHABLE: {
    summary: 'the remote store or peer could not be reached (connection refused, reset or timed out), after retries',
    message: unreachableMessage,
    hint: 'check that the endpoint named in the details is up and reachable from this node; run the transfer again and it resumes where it stopped',
    exit: 69,
  },
  EMB_REMOTE_UNAVAILABLE: {
    summary:
      'the remote store or peer kept answering with a server error or throttling (5xx, 429, SlowDown), after retries',
    message: (d) =>
      d.etag !== undefined
        ? `part ${d.part} of ${d.key} arrived altered at ${d.endpoint} (ETag ${d.etag}, sent MD5 ${d.md5})`
        : `${remoteName(d)} failed ${d.request} (${d.status ?? '?'} ${d.serviceCode})`,
    hint: 'the service is failing or overloaded: retry later; the transfer resumes where it stopped',
    exit: 75,
  },
  EMB_REMOTE_AUTH: {
    summary: 'the remote store refused the credentials (unknown access key, wrong secret, or access denied)',
    message: (d) =>
      d.problem === 'no-credentials'
        ? `no S3 credentials for ${d.endpoint}: ${d.reason}`
        : `${remoteName(d)} refused the credentials for ${d.request} (${d.status ?? '?'} ${d.serviceCode})`,
    hint: 'check the access key id and secret (EMBERS_S3_ACCESS_KEY_ID, EMBERS_S3_SECRET_ACCESS_KEY) and that they may read and write the bucket',
    exit: 77,
  },
  EMB_REMOTE_NOT_FOUND: {
    summary: 'the remote store or peer has no snapshot with that id, or the bucket does not exist',
    message: (d) =>
      d.bucket === undefined
        ? `the peer ${d.endpoint} has no snapshot ${d.id}`
        : d.id === undefined
          ? `the bucket ${d.bucket} does not exist at ${d.endpoint}`
          : `no snapshot ${d.id} in ${d.location ?? `the bucket ${d.bucket}`} (${d.endpoint})${d.key === undefined ? '' : `: ${d.key} does not exist`}`,
    hint: 'check the id, the bucket and the prefix (EMBERS_S3_BUCKET, EMBERS_S3_PREFIX); list what the remote holds',
    exit: 66,
  },
  EMB_REMOTE_REQUEST_FAILED: {
    summary: 'the remote store or peer refused a request for a reason embers does not expect',
    message: requestFailedMessage,
    hint: 'see the status and the service error code in the details; the service may lack an S3 feature embers uses (multipart upload, ListParts, ranged GET)',
    exit: 70,
  },
  EMB_PEER_AUTH: {
    summary: 'the peer refused the token (HTTP 401)',
    message: (d) => `the peer ${d.endpoint} refused the token (401) for ${d.request}`,
    hint: 'give the pulling node the same peer token the serving node was started with (sent as `Authorization: Bearer <token>`)',
    exit: 77,
  },
} as const satisfies AreaCatalogue<SnapshotErrorDetails>;

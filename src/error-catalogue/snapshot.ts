/** Errors of disks, snapshots, working sets and remote stores (S3 and peers): each code's catalogue entry and message template (see shared.ts); the shape of each code's details is in snapshot-details.ts. */
import type { AreaCatalogue } from './shared.js';
import type { RemoteKind, HostMismatch, SnapshotErrorDetails } from './snapshot-details.js';

export type {
  RemoteKind,
  S3RequestDetails,
  HostMismatchKind,
  HostMismatch,
  SnapshotCorruptProblem,
  WorkingSetProblem,
  SnapshotIncompatibleProblem,
  SnapshotErrorDetails,
} from './snapshot-details.js';

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

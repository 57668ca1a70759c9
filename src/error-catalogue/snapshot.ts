/** Errors of disks, snapshots, working sets and remote stores (S3 and peers): the shape of each code's details and its catalogue entry (see shared.ts). */
import type { AreaCatalogue, SnapshotVersionDetails } from './shared.js';

/** What the S3 store says about a failed request (snapshot/s3-store.ts). */
export interface S3RequestDetails {
  readonly endpoint?: string;
  readonly bucket?: string;
  readonly request?: string;
  readonly status?: number | null;
  readonly serviceCode?: string;
}

export interface SnapshotErrorDetails {
  EMB_DISK_CLONE_FAILED: { readonly source?: string; readonly target?: string };
  EMB_NO_SPACE: {
    readonly cause?: string;
    readonly freeBytes?: number;
    readonly needBytes?: number;
    readonly path?: string;
    readonly totalBytes?: number;
  };
  EMB_SNAPSHOT_NOT_FOUND: { readonly id: string };
  EMB_SNAPSHOT_CORRUPT: SnapshotVersionDetails & {
    readonly actual?: string;
    readonly chunk?: number;
    readonly chunkSize?: number;
    readonly chunks?: number;
    readonly endpoint?: string;
    readonly expected?: string;
    readonly file?: string;
    readonly id?: string;
    readonly key?: string;
    readonly length?: number;
    readonly listed?: string[];
    readonly manifestId?: string;
    readonly name?: string;
    readonly path?: string;
    readonly position?: number;
    readonly reason?: string;
    readonly sizeBytes?: number;
    readonly source?: string;
    readonly staged?: string[];
    readonly stateFile?: string;
  };
  EMB_SNAPSHOT_INCOMPATIBLE: {
    readonly driveLayout?: unknown;
    readonly formatVersion?: number;
    readonly here?: unknown;
    readonly id?: string;
    readonly recorded?: string;
    readonly snapshotDriveLayout?: unknown;
    readonly source?: string;
    readonly stateFile?: string;
    readonly vmm?: unknown;
  };
  EMB_SNAPSHOT_HOST_MISMATCH: {
    readonly here?: unknown;
    readonly id?: string;
    readonly mismatches?: unknown;
    readonly recorded?: unknown;
    readonly unknown?: string[];
  };
  EMB_SNAPSHOT_VERSION_MISMATCH: SnapshotVersionDetails;
  EMB_SNAPSHOT_LOAD_FAILED: {
    readonly faultMessage?: string;
    readonly memoryBackend?: unknown;
    readonly method?: string;
    readonly path?: string;
    readonly stateFile?: string;
    readonly tail?: string;
  };
  EMB_SNAPSHOT_DISK_MISMATCH: {
    readonly actual?: string;
    readonly diff?: 'block' | 'rsync';
    readonly expected?: string;
    readonly id?: string;
    readonly which?: string;
  };
  EMB_SNAPSHOT_BUSY: { readonly id: string; readonly pids: readonly number[] };
  EMB_SNAPSHOT_TRANSFER_BUSY: { readonly lock?: string; readonly pid?: number };
  EMB_WORKING_SET_INVALID: {
    readonly memoryBytes?: number;
    readonly actual?: string;
    readonly expected?: string;
    readonly file?: string;
    readonly id?: string;
    readonly source?: string;
  };
  EMB_WORKING_SET_RECORD_FAILED: {
    readonly id?: string;
    readonly residentPages?: number;
    readonly recordPath?: string;
  };
  EMB_REMOTE_UNREACHABLE: S3RequestDetails & {
    readonly cause?: string | null;
    readonly endpoint?: string;
    readonly file?: string;
    readonly got?: number;
    readonly id?: string;
    readonly key?: string;
    readonly path?: string;
    readonly stallTimeoutMs?: number;
    readonly want?: number;
  };
  EMB_REMOTE_UNAVAILABLE: S3RequestDetails & {
    readonly endpoint?: string;
    readonly key?: string;
    readonly part?: number;
    readonly path?: string;
    readonly retryAfterMs?: number;
    readonly serviceCode?: string;
    readonly status?: number | null;
  };
  EMB_REMOTE_AUTH: S3RequestDetails;
  EMB_REMOTE_NOT_FOUND: S3RequestDetails & {
    readonly bucket?: string;
    readonly endpoint?: string;
    readonly id?: string;
    readonly key?: string;
  };
  EMB_REMOTE_REQUEST_FAILED: S3RequestDetails & {
    readonly bucket?: string;
    readonly end?: number;
    readonly endpoint?: string;
    readonly file?: string;
    readonly path?: string;
    readonly request?: string;
    readonly serviceCode?: string;
    readonly source?: string;
    readonly start?: number;
    readonly status?: number | null;
  };
  EMB_PEER_AUTH: { readonly endpoint?: string; readonly path?: string };
}

export const SNAPSHOT_ERRORS = {
  // disks
  EMB_DISK_CLONE_FAILED: {
    summary: 'creating the instance disk failed',
    hint: 'check free disk space under the embers home',
    exit: 70,
  },
  EMB_NO_SPACE: {
    summary: 'the filesystem embers writes to (the home: images, snapshots, instance disks) is full',
    hint:
      'free space on that filesystem: remove snapshots you no longer need (`embers snapshot rm ID`, `embers snapshot ls` lists them), ' +
      'drop images no instance or snapshot uses (`embers image gc`), or use a --home on a larger filesystem',
    exit: 74,
  },
  // snapshots
  EMB_SNAPSHOT_NOT_FOUND: {
    summary: 'no snapshot has that id',
    message: (d) => `no snapshot ${d.id}`,
    hint: 'list snapshots with `embers snapshot ls`',
    exit: 66,
  },
  EMB_SNAPSHOT_CORRUPT: {
    summary: 'a snapshot file is missing, truncated or does not match its digest',
    hint: 'the snapshot cannot be restored safely; delete it and create or pull it again',
    exit: 65,
  },
  EMB_SNAPSHOT_INCOMPATIBLE: {
    summary: 'the snapshot was made for another hypervisor, format or machine',
    hint: 'restore it with the hypervisor and version named in its manifest',
    exit: 65,
  },
  EMB_SNAPSHOT_HOST_MISMATCH: {
    summary:
      'the snapshot was made on a host whose CPU, VMM version, guest kernel or drive layout differs from this one',
    hint: 'restore it on a host like the one named in the details, or create the snapshot here; if you know the difference is harmless, pass --allow-host-mismatch (RestoreOptions.allowHostMismatch)',
    exit: 65,
  },
  EMB_SNAPSHOT_VERSION_MISMATCH: {
    summary: 'the snapshot data format is not one this hypervisor binary can load',
    hint: 'restore it with a Firecracker whose `firecracker --snapshot-version` has the same major (and no lower minor) version as the snapshot, or create the snapshot again with this binary',
    exit: 65,
  },
  EMB_SNAPSHOT_LOAD_FAILED: {
    summary: 'the hypervisor failed to load the snapshot, and the process that tried was stopped',
    hint: 'see fault_message and the VMM log tail in the details; a Firecracker process cannot be reused after a failed load',
    exit: 70,
  },
  EMB_SNAPSHOT_DISK_MISMATCH: {
    summary: 'the restored disk is not bit-identical to the disk at pause',
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
    hint: 'wait for that transfer to finish (the lock file named in the details holds its pid); a transfer whose process died is taken over automatically',
    exit: 75,
  },
  EMB_WORKING_SET_INVALID: {
    summary:
      'a working set (workingset.ranges or workingset.pages) is malformed: bad magic, truncated, overlapping or out-of-range page ranges',
    hint: 'the working set cannot be used; the snapshot still restores without it. Record it again with `embers snapshot record-ws <id>`',
    exit: 65,
  },
  EMB_WORKING_SET_RECORD_FAILED: {
    summary:
      'recording a working set failed: the memory file could not be dropped from the page cache, or the VMM cannot record one here',
    hint: 'stop the running clones of the snapshot (`embers ps`; their VMMs keep its memory pages cached), then run `embers snapshot record-ws <id>` again',
    exit: 75,
  },
  // remote stores (S3-compatible services) and peers (other embers nodes)
  EMB_REMOTE_UNREACHABLE: {
    summary: 'the remote store or peer could not be reached (connection refused, reset or timed out), after retries',
    hint: 'check that the endpoint named in the details is up and reachable from this node; run the transfer again and it resumes where it stopped',
    exit: 69,
  },
  EMB_REMOTE_UNAVAILABLE: {
    summary:
      'the remote store or peer kept answering with a server error or throttling (5xx, 429, SlowDown), after retries',
    hint: 'the service is failing or overloaded: retry later; the transfer resumes where it stopped',
    exit: 75,
  },
  EMB_REMOTE_AUTH: {
    summary: 'the remote store refused the credentials (unknown access key, wrong secret, or access denied)',
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
          : `no snapshot ${d.id} in the bucket ${d.bucket} (${d.endpoint})`,
    hint: 'check the id, the bucket and the prefix (EMBERS_S3_BUCKET, EMBERS_S3_PREFIX); list what the remote holds',
    exit: 66,
  },
  EMB_REMOTE_REQUEST_FAILED: {
    summary: 'the remote store or peer refused a request for a reason embers does not expect',
    hint: 'see the status and the service error code in the details; the service may lack an S3 feature embers uses (multipart upload, ListParts, ranged GET)',
    exit: 70,
  },
  EMB_PEER_AUTH: {
    summary: 'the peer refused the token (HTTP 401)',
    hint: 'give the pulling node the same peer token the serving node was started with (sent as `Authorization: Bearer <token>`)',
    exit: 77,
  },
} as const satisfies AreaCatalogue<SnapshotErrorDetails>;

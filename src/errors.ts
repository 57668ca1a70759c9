/**
 * The one error catalogue of embers. Every failure the system reports has a stable
 * `code` (EMB_<AREA>_<WHAT>): callers branch on the code, never on message text.
 * Each entry says what failed and, in `hint`, what to do next.
 */
import type { ErrorDetailsByCode } from './error-details.js';

export type { ErrorDetailsByCode, RegistryRequestDetails } from './error-details.js';

export interface ErrorSpec {
  /** One-line description of the failure, used in docs (the README's table of codes). */
  readonly summary: string;
  /* And, for codes with a standard case, `message`: the message template, a function of the
   * code's typed details (see ERRORS' type); `EmbersError.of(code, details)` uses it. */
  /** What the user can do about it. */
  readonly hint: string;
  /** Process exit code used by the CLI. */
  readonly exit: number;
}

export const ERRORS = {
  // configuration and usage
  EMB_USAGE: { summary: 'bad command-line usage', hint: 'run `embers --help`', exit: 64 },
  EMB_CONFIG_INVALID: {
    summary: 'an option has an invalid value',
    hint: 'check the option against `embers --help`',
    exit: 64,
  },
  EMB_NOT_ROOT: {
    summary: 'embers needs root for netns, tap devices and mounts',
    hint: 'run as root (sudo)',
    exit: 77,
  },
  EMB_HOST_TOOL_MISSING: {
    summary: 'a host program embers needs is not installed',
    message: (d) =>
      d.cmd !== undefined
        ? `host program not found: ${d.cmd}`
        : d.header !== undefined
          ? `${d.header} is missing (Debian package ${d.debianPackage})`
          : `${d.program ?? 'a host program'} is not installed (Debian package ${d.debianPackage})`,
    hint: 'run `scripts/setup.sh` (installs the Debian packages embers uses)',
    exit: 69,
  },
  EMB_HOST_COMMAND_FAILED: {
    summary: 'a host command failed',
    hint: 'see the command output in the error details',
    exit: 70,
  },

  // guest kit
  EMB_GUEST_KERNEL_MISSING: {
    summary: 'the guest kernel is missing or not an ELF vmlinux',
    hint: 'run `embers guest build` to (re)build the guest kit (`embers guest build-kernel` for --guest-kernel firecracker-config)',
    exit: 66,
  },
  EMB_GUEST_BUILD_FAILED: {
    summary: 'building the guest kit (kernel, initramfs) failed',
    hint: 'check that Debian packages can be downloaded (`apt-get update`), then run `embers guest build` again',
    exit: 70,
  },
  EMB_GUEST_RUN_CONFIG_INVALID: {
    summary:
      'the run configuration of a function (argv, env, user, working dir, hostname) cannot be passed to the guest',
    hint: 'check the image config (Entrypoint, Cmd, Env, User, WorkingDir) and the overrides given on the command line',
    exit: 65,
  },

  // images
  EMB_IMAGE_NOT_FOUND: {
    summary: 'the image reference does not name an existing image',
    hint: 'check the path or reference; local images are OCI layout directories or `docker save` archives',
    exit: 66,
  },
  EMB_IMAGE_MANIFEST_INVALID: {
    summary: 'the image index, manifest or config is not valid JSON of the expected schema',
    hint: 'rebuild or re-export the image; embers reads OCI image layouts (oci-layout, index.json, blobs/sha256)',
    exit: 65,
  },
  EMB_IMAGE_DIGEST_MISMATCH: {
    summary: 'a blob does not match its digest',
    hint: 'the image is corrupt or was tampered with: re-export or re-pull it',
    exit: 65,
  },
  EMB_IMAGE_LAYER_UNSAFE: {
    summary: 'a layer holds an entry that would escape the root filesystem',
    hint: 'the image is malicious or broken; embers refuses it. Rebuild it without path traversal, absolute-link escapes or out-of-tree hard links',
    exit: 65,
  },
  EMB_IMAGE_LAYER_INVALID: {
    summary: 'a layer is not a valid tar archive (bad header, truncated, or a tree it cannot apply to)',
    hint: 'the layer is corrupt or was produced by a broken tool: rebuild or re-export the image',
    exit: 65,
  },
  EMB_IMAGE_BLOB_MISSING: {
    summary: 'a blob the image index or manifest names is not in the image',
    hint: 'the image layout is incomplete: re-export it with all its blobs (foreign or non-distributable layers must be included)',
    exit: 65,
  },
  EMB_IMAGE_LAYER_UNSUPPORTED: {
    summary: 'a layer uses a media type or tar feature embers does not read',
    hint: 'use gzip, zstd or uncompressed tar layers',
    exit: 65,
  },
  EMB_IMAGE_PLATFORM_MISSING: {
    summary: 'the image index has no linux/amd64 entry',
    hint: 'build or pull an image for linux/amd64',
    exit: 65,
  },
  EMB_IMAGE_FLATTEN_FAILED: {
    summary: 'building the ext4 rootfs from the image failed',
    hint: 'see the details; check free disk space under the embers home',
    exit: 70,
  },
  EMB_IMAGE_REFERENCE_INVALID: {
    summary: 'the image reference is neither a local image nor a valid registry reference',
    hint: 'write REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST] (lowercase repository; docker.io and library/ are implied for short names), or a local image as a path, oci:PATH or docker-archive:PATH',
    exit: 64,
  },
  EMB_IMAGE_CACHE_BUSY: {
    summary:
      'the image cache stayed locked by another process (a pull, or `embers image gc`) for longer than embers waits',
    hint: 'wait for the other `embers image` command to finish (the lock file and its pid are in the details); a lock whose process died is taken over automatically',
    exit: 75,
  },

  // registries (the OCI distribution API: Docker Hub, GHCR, Harbor, `registry`…)
  EMB_REGISTRY_UNREACHABLE: {
    summary:
      'the registry could not be reached, or the connection broke before the answer was complete (refused, reset, timed out), after retries',
    hint: 'check that the registry named in the details is up and reachable from this node; pull again: blob downloads resume where they stopped',
    exit: 69,
  },
  EMB_REGISTRY_UNAVAILABLE: {
    summary: 'the registry kept answering with a server error or throttling (5xx, 429), after retries',
    hint: 'the registry is failing or rate-limiting this node: retry later',
    exit: 75,
  },
  EMB_REGISTRY_AUTH: {
    summary:
      'the registry or its token service refused the credentials, or asked for credentials embers does not have (HTTP 401/403)',
    hint: 'add an `auths` entry for the registry to the credentials file (EMBERS_REGISTRY_AUTH_FILE, default ~/.docker/config.json; docker config.json format) and check the user name, the password and the access to the repository',
    exit: 77,
  },
  EMB_REGISTRY_TLS: {
    summary: 'the TLS connection to the registry failed (it serves plain HTTP, or its certificate is not trusted)',
    hint: 'for a registry serving plain HTTP on a trusted network, list it in EMBERS_INSECURE_REGISTRIES (host or host:port, comma-separated); for a private CA, pass it with NODE_EXTRA_CA_CERTS',
    exit: 69,
  },
  EMB_REGISTRY_REQUEST_FAILED: {
    summary: 'the registry answered in a way embers does not expect (status, headers or body)',
    hint: 'see the status and the registry error code in the details; the server may not implement the OCI distribution API',
    exit: 70,
  },

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

  // network
  EMB_NET_SETUP_FAILED: {
    summary: 'creating a network slot (netns, tap, veth, nftables) failed',
    hint: 'check that iproute2 and nftables are installed and that the kernel has tun, veth and nf_tables',
    exit: 70,
  },
  EMB_NET_EXHAUSTED: {
    summary: 'no free network slot is left on this node',
    hint: 'stop instances you no longer need (`embers ps` lists them, `embers stop` stops them)',
    exit: 75,
  },

  // hypervisor
  EMB_VMM_NOT_FOUND: {
    summary: 'the hypervisor binary is not installed',
    hint: 'install qemu-system-x86 (Debian) or set the firecracker binary path',
    exit: 69,
  },
  EMB_VMM_START_FAILED: {
    summary: 'the hypervisor process exited while starting',
    hint: 'see the tail of its output in the error details',
    exit: 70,
  },
  EMB_VMM_COMMAND_FAILED: {
    summary: 'the hypervisor refused a command',
    hint: 'see the details; the VM may be in the wrong state for this operation',
    exit: 70,
  },
  EMB_VMM_TIMEOUT: {
    summary: 'the hypervisor did not answer in time',
    hint: 'the host may be overloaded; retry, or raise the timeout',
    exit: 75,
  },
  EMB_VMM_API_FAULT: {
    summary: 'the hypervisor API refused a request (Firecracker answered with a fault_message)',
    hint: 'see method, path and fault_message in the details; the VM may be in the wrong state for this call',
    exit: 70,
  },
  EMB_VMM_API_UNREACHABLE: {
    summary: 'the hypervisor API socket could not be reached, or the connection broke before an answer',
    hint: 'the VMM process may have exited: see the VMM log named in the details',
    exit: 70,
  },
  EMB_VMM_KVM_UNAVAILABLE: {
    summary: 'the hypervisor needs hardware-backed KVM, which this host lacks',
    hint: 'run on a host whose CPU has vmx/svm with /dev/kvm from kvm_intel or kvm_amd, or use the QEMU driver (--vmm qemu)',
    exit: 69,
  },
  EMB_VMM_CLEANUP_FAILED: {
    summary: 'stopping a VM left resources behind',
    hint: 'the details list the steps that failed and the paths leaked; remove them by hand',
    exit: 70,
  },

  // guest agent
  EMB_GUEST_AGENT_UNREACHABLE: {
    summary: 'the guest agent did not answer on its channel (virtio-serial or vsock) in time',
    hint: 'check the guest console with `embers logs <instance>` for "embers-agent:" lines; an instance booted from a kit without the agent has none',
    exit: 69,
  },
  EMB_GUEST_AGENT_FAILED: {
    summary: 'the guest agent refused or failed a request (clock, entropy, exec)',
    hint: "the error message gives the agent's reason; check the guest console with `embers logs <instance>`",
    exit: 70,
  },
  EMB_RESTORE_HOOK_FAILED: {
    summary: "the function's restore hook failed, timed out or could not start, so the restored clone was stopped",
    hint: "the details hold the hook's exit status and the tail of its output; fix the hook (restoreHook in the function spec) or raise its timeout",
    exit: 70,
  },

  // instances
  EMB_INSTANCE_NOT_FOUND: {
    summary: 'no instance has that name',
    message: (d) => `no instance named ${d.name}`,
    hint: 'list instances with `embers ps`',
    exit: 66,
  },
  EMB_INSTANCE_EXISTS: {
    summary: 'an instance with that name already exists',
    message: (d) => `instance ${d.name} already exists`,
    hint: 'pick another --name or stop the existing instance',
    exit: 73,
  },
  EMB_INSTANCE_NOT_READY: {
    summary: 'the function did not answer on its port before the timeout',
    hint: 'check the guest console with `embers logs <instance>`; raise --ready-timeout if the function starts slowly',
    exit: 75,
  },
  EMB_INSTANCE_INVOKE_FAILED: {
    summary: 'the request to the function failed',
    hint: 'check the guest console with `embers logs <instance>`',
    exit: 70,
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
  EMB_INSTANCE_BUSY: {
    summary: 'another process is snapshotting this instance',
    message: (d) => `instance ${d.name} is being snapshotted by another process (pid ${d.pid})`,
    hint: 'wait for that `embers snapshot create` to finish (its pid is in the details), then retry; a snapshot whose process died is taken over automatically',
    exit: 75,
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

  // functions and the node daemon (embers serve) and its HTTP API
  EMB_FUNCTION_NOT_FOUND: {
    summary: 'no function has that name on this node',
    message: (d) => `no function named ${d.function}`,
    hint: 'list functions with `embers fn ls`',
    exit: 66,
  },
  EMB_FUNCTION_SPEC_INVALID: {
    summary: 'a function spec or name is invalid',
    hint: 'fix the field named in the message (see `embers fn deploy --help` and GET /openapi.json for the ranges)',
    exit: 65,
  },
  EMB_FUNCTION_QUEUE_FULL: {
    summary: 'every instance of the function is busy, maxInstances is reached and its request queue is full',
    hint: 'retry after the time in Retry-After, or raise maxInstances, concurrency or maxQueue in the spec',
    exit: 75,
  },
  EMB_FUNCTION_TIMEOUT: {
    summary: 'the request waited for an instance longer than its deadline',
    message: (d) => `function ${d.function}: no instance was free within ${d.requestTimeoutSeconds} s`,
    hint: 'retry; raise requestTimeoutSeconds or maxInstances in the spec if this repeats',
    exit: 75,
  },
  EMB_FUNCTION_DRAINING: {
    summary: 'the function is being removed, or the node is shutting down, so it takes no new requests',
    message: (d) =>
      d.function === undefined
        ? 'the node is shutting down'
        : `function ${d.function} takes no new requests: it is being removed or the node is shutting down`,
    hint: 'deploy the function again, or retry on a running node',
    exit: 75,
  },
  EMB_API_AUTH: {
    summary: 'the API refused the request: missing or wrong bearer token',
    hint: 'send `Authorization: Bearer <token>` with the EMBERS_API_TOKEN the daemon was started with',
    exit: 77,
  },
  EMB_API_ROUTE_NOT_FOUND: {
    summary: 'the API has no such route',
    hint: 'see GET /openapi.json for the routes',
    exit: 64,
  },
  EMB_API_BODY_TOO_LARGE: {
    summary: 'the request body is larger than the API accepts',
    hint: 'send a smaller body (see --body-limit of embers serve)',
    exit: 65,
  },
  EMB_API_UNREACHABLE: {
    summary: 'the embers daemon could not be reached',
    hint: 'start it with `embers serve` on this node, or point EMBERS_API at the node that runs it',
    exit: 69,
  },
  EMB_NODE_BUSY: {
    summary: 'another embers daemon already serves this home',
    hint: 'stop it first, use its API (EMBERS_API), or serve another --home',
    exit: 75,
  },

  EMB_INTERNAL: {
    summary: 'an internal error',
    hint: 'this is a bug in embers: please report it with the details',
    exit: 70,
  },
} as const satisfies Catalogue;

/** The catalogue's type: per code, its spec and, for codes with a standard case, the message template. */
type Catalogue = {
  readonly [C in keyof ErrorDetailsByCode]: ErrorSpec & { readonly message?: (d: ErrorDetails<C>) => string };
};
/** ERRORS seen through its type, so that a code's template takes that code's details. */
const CATALOGUE: Catalogue = ERRORS;

/** Every code of the catalogue (ERRORS has exactly the codes of ErrorDetailsByCode). */
export type ErrorCode = keyof ErrorDetailsByCode;

/** Details any code may carry. */
interface CommonDetails {
  /** Set by the daemon's lifecycle engine on the error of a cold start that failed: the API
   * answers 502 whatever the code (api/errors.ts). */
  readonly startFailed?: boolean;
  /** The function whose request or start failed (added by the lifecycle engine to any error). */
  readonly function?: string;
  /** The snapshot (or instance) the failure concerns (added to any error of a snapshot's upload). */
  readonly id?: string;
  /** The tail of the VMM's output, added by the Firecracker driver to any error of a VM that failed to start or load. */
  readonly tail?: string;
}

type KeysOfEach<T> = T extends unknown ? keyof T : never;
/** Every detail field of any code. */
type DetailKey = KeysOfEach<ErrorDetailsByCode[ErrorCode]> | keyof CommonDetails;

/**
 * The details of code `C`. The fields of other codes are there as `undefined`, so that the
 * details of an error whose code is not known (a union) can still be read field by field;
 * narrow with `isEmbersError(err, code)` to read a code's own fields with their types.
 */
export type ErrorDetails<C extends ErrorCode = ErrorCode> = C extends ErrorCode
  ? ErrorDetailsByCode[C] &
      CommonDetails & {
        readonly [K in Exclude<DetailKey, keyof ErrorDetailsByCode[C] | keyof CommonDetails>]?: undefined;
      }
  : never;

export interface EmbersErrorOptions {
  cause?: unknown;
  /** Replaces the catalogue's hint when the failure knows better what to do. */
  hint?: string;
}

/**
 * The base class of every error embers reports. Generic over its code: `new EmbersError(code,
 * message, details)` is compile-checked against that code's details, and `isEmbersError(err,
 * code)` gives back typed details.
 */
export class EmbersError<C extends ErrorCode = ErrorCode> extends Error {
  override readonly name = 'EmbersError';
  readonly code: C;
  readonly hint: string;
  /** Structured context: the input that failed, paths, command output tails (typed per code). */
  readonly details: ErrorDetails<C>;

  constructor(code: C, message: string, details?: NoInfer<ErrorDetails<C>>, options?: EmbersErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options?.hint ?? ERRORS[code].hint;
    this.details = details ?? ({} as ErrorDetails<C>);
  }

  /** The standard case of `code`: its message comes from the catalogue's template. */
  static of<C extends ErrorCode>(
    code: C,
    details: NoInfer<ErrorDetails<C>>,
    options?: EmbersErrorOptions,
  ): EmbersError<C> {
    return new EmbersError(code, errorMessage(code, details), details, options);
  }

  get exitCode(): number {
    return ERRORS[this.code].exit;
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, hint: this.hint, details: this.details };
  }
}

/** The catalogue's message for `code` with these details: its template, else its summary. */
export function errorMessage<C extends ErrorCode>(code: C, details: ErrorDetails<C>): string {
  const spec = CATALOGUE[code];
  return spec.message?.(details) ?? spec.summary;
}

export function isEmbersError<C extends ErrorCode = ErrorCode>(err: unknown, code?: C): err is EmbersError<C> {
  return err instanceof EmbersError && (code === undefined || err.code === code);
}

/** Wraps an unknown thrown value as an EmbersError, keeping EmbersErrors as they are. */
export function asEmbersError(err: unknown, code: ErrorCode = 'EMB_INTERNAL', message?: string): EmbersError {
  if (err instanceof EmbersError) return err;
  const text = err instanceof Error ? err.message : String(err);
  return new EmbersError(code, message ? `${message}: ${text}` : text, {}, { cause: err });
}

/**
 * The shape of the `details` of each error code of the catalogue (src/errors.ts). Types only:
 * a code's entry lists the fields a failure of that code may carry, so that every
 * `new EmbersError(code, message, details)` is checked against it and code that branches
 * on a detail reads a typed field.
 */

/** Details of a code that carries none (beyond the fields any error may carry: CommonDetails in errors.ts). */
export type NoDetails = {};

/** What the S3 store says about a failed request (snapshot/s3-store.ts). */
export interface S3RequestDetails {
  readonly endpoint?: string;
  readonly bucket?: string;
  readonly request?: string;
  readonly status?: number | null;
  readonly serviceCode?: string;
}

/** A host command that failed (util/exec.ts), also carried by the errors that wrap one. */
export interface HostCommandDetails {
  readonly cmd?: string;
  readonly args?: readonly string[];
  readonly exit?: number | null;
  /** The tail of the command's stderr. */
  readonly stderr?: string;
}

/** A registry request that failed (image/registry/http.ts). */
export interface RegistryRequestDetails {
  readonly registry?: string;
  readonly repository?: string;
  readonly username?: string;
  readonly digest?: string;
  readonly url?: string;
  readonly status?: number;
  /** The error code in the registry's answer (OCI distribution: MANIFEST_UNKNOWN, DENIED…). */
  readonly registryCode?: string;
}

/** Why Firecracker cannot run here (vmm/select.ts). */
export interface FirecrackerHostDetails {
  readonly binary?: string;
  readonly binaryFound?: boolean;
  readonly hardwareKvm?: boolean;
  readonly kvm?: string;
  readonly accel?: string;
}

/** A snapshot's data format against a Firecracker binary's (vmm/firecracker/version.ts). */
export interface SnapshotVersionDetails {
  readonly binary?: string;
  readonly binaryVersion?: string;
  readonly source?: string;
  readonly snapshotVersion?: string;
  readonly binarySnapshotVersion?: string;
}

/**
 * The shape of each code's `details`: every `new EmbersError(code, message, details)` is
 * checked against its code's entry, and code that branches on a detail reads a typed field
 * (after `isEmbersError(err, code)`), never a cast. Fields are context for people and logs;
 * the few that steer control flow say so.
 */
export interface ErrorDetailsByCode {
  EMB_USAGE: { readonly argv?: string[]; readonly option?: string };
  EMB_CONFIG_INVALID: {
    readonly accel?: 'auto' | 'kvm' | 'tcg';
    readonly attempts?: number;
    readonly authFile?: string;
    readonly bucket?: string;
    readonly clones?: number;
    readonly concurrency?: number;
    readonly count?: number;
    readonly cpuModel?: string;
    readonly deviceDiscovery?: string;
    readonly endpoint?: string;
    readonly entry?: string;
    readonly field?: string;
    readonly host?: string;
    readonly id?: string;
    readonly image?: string;
    readonly kind?: 'debian' | 'firecracker-config';
    readonly length?: number;
    readonly listen?: string;
    readonly name?: string;
    readonly net?: unknown;
    readonly option?: string;
    readonly param?: string;
    readonly partSizeBytes?: number;
    readonly path?: string;
    readonly peer?: string;
    readonly peers?: readonly string[];
    readonly prefetch?: unknown;
    readonly prefix?: string;
    readonly room?: number;
    readonly snapshots?: unknown;
    readonly stallTimeoutMs?: number;
    readonly target?: string;
    readonly timeoutMs?: number;
    readonly url?: string;
    readonly value?: unknown;
    readonly vm?: string;
    readonly vmm?: 'auto' | 'qemu' | 'firecracker';
  };
  EMB_NOT_ROOT: NoDetails;
  EMB_HOST_TOOL_MISSING: {
    readonly cmd?: string;
    readonly debianPackage?: string;
    readonly header?: string;
    readonly program?: string;
  };
  EMB_HOST_COMMAND_FAILED: HostCommandDetails;
  EMB_GUEST_KERNEL_MISSING: {
    readonly attempts?: unknown;
    readonly baseInitrd?: string;
    readonly elf?: unknown;
    readonly path?: string;
    readonly vmlinuzPath?: string;
  };
  EMB_GUEST_BUILD_FAILED: HostCommandDetails & {
    readonly pkg?: string;
    readonly pkgs?: readonly unknown[];
    readonly policy?: string;
    readonly meta?: string;
    readonly metaVersion?: string;
    readonly depends?: string;
    readonly files?: readonly string[];
    readonly makefile?: string;
    readonly ko?: string;
    readonly dir?: string;
    readonly file?: string;
    readonly kernelVersion?: string;
    readonly missing?: string[];
    readonly moduleDirs?: string[];
    readonly output?: string;
    readonly overridesPath?: string;
    readonly path?: string;
    readonly root?: string;
    readonly srcParent?: string;
    readonly tarball?: string;
    readonly vmlinuz?: string;
  };
  EMB_GUEST_RUN_CONFIG_INVALID: {
    readonly argv?: readonly unknown[];
    readonly arg?: string;
    readonly env?: unknown;
    readonly workingDir?: string;
    readonly user?: string;
    readonly hostname?: string;
    readonly line?: string;
    readonly value?: string;
    readonly version?: number;
  };
  EMB_IMAGE_NOT_FOUND: {
    readonly digest?: string;
    readonly instance?: string;
    readonly key?: string;
    readonly manifestDigest?: string;
    readonly path?: string;
    readonly ref?: string;
    readonly reference?: string;
    readonly registry?: string;
    readonly registryCode?: string;
    readonly repository?: string;
    readonly status?: number;
    readonly tag?: string;
    readonly tags?: string[];
    readonly where?: string;
  };
  EMB_IMAGE_MANIFEST_INVALID: { readonly digest?: string; readonly path?: string };
  EMB_IMAGE_DIGEST_MISMATCH: {
    readonly actual?: string;
    readonly diffId?: string;
    readonly digest?: string;
    readonly expectedSize?: number;
    readonly layer?: string;
    readonly location?: string;
    readonly name?: string;
    readonly offset?: number;
    readonly reference?: string;
    readonly registry?: string;
    readonly repository?: string;
    readonly size?: number;
    readonly status?: number;
  };
  EMB_IMAGE_LAYER_UNSAFE: NoDetails;
  EMB_IMAGE_LAYER_INVALID: { readonly exit?: number; readonly layer?: string };
  EMB_IMAGE_BLOB_MISSING: {
    readonly digest?: string;
    readonly location?: string;
    readonly manifestDigest?: string;
    readonly name?: string;
    readonly reference?: string;
    readonly registry?: string;
    readonly repository?: string;
    readonly status?: number;
  };
  EMB_IMAGE_LAYER_UNSUPPORTED: {
    readonly digest?: unknown;
    readonly layer?: string;
    readonly mediaType?: string;
    readonly where?: string;
  };
  EMB_IMAGE_PLATFORM_MISSING: {
    readonly architecture?: unknown;
    readonly digest?: string;
    readonly os?: unknown;
    readonly platforms?: unknown;
    readonly where?: string;
  };
  EMB_IMAGE_FLATTEN_FAILED: HostCommandDetails & {
    readonly bytesRead?: number;
    readonly imagePath?: string;
    readonly length?: number;
    readonly manifestDigest?: string;
    readonly missing?: string[];
    readonly position?: number;
  };
  EMB_IMAGE_REFERENCE_INVALID: { readonly reference?: string };
  EMB_IMAGE_CACHE_BUSY: { readonly lock?: string; readonly pid?: number; readonly pins?: string[] };
  EMB_REGISTRY_UNREACHABLE: {
    readonly endpoint?: string;
    readonly errno?: string;
    /** false when retrying cannot help (e.g. the registry's name does not resolve): registry/http.ts does not retry it. */
    readonly transient?: boolean;
    readonly url?: string;
    /** A blob download that broke: its digest, the bytes received and the size wanted. */
    readonly digest?: string;
    readonly got?: number;
    readonly want?: number;
  };
  EMB_REGISTRY_UNAVAILABLE: RegistryRequestDetails & { readonly retryAfterMs?: number };
  EMB_REGISTRY_AUTH: RegistryRequestDetails & { readonly realm?: string; readonly scope?: string };
  EMB_REGISTRY_TLS: {
    readonly endpoint?: string;
    readonly errno?: string;
    readonly location?: string;
    readonly realm?: string;
    readonly registry?: string;
    readonly url?: string;
  };
  EMB_REGISTRY_REQUEST_FAILED: RegistryRequestDetails & {
    readonly challenge?: unknown;
    readonly contentRange?: string;
    readonly maxBytes?: number;
    readonly realm?: string;
    readonly start?: number;
  };
  EMB_DISK_CLONE_FAILED: { readonly source?: string; readonly target?: string };
  EMB_NO_SPACE: {
    readonly cause?: string;
    readonly freeBytes?: number;
    readonly needBytes?: number;
    readonly path?: string;
    readonly totalBytes?: number;
  };
  EMB_NET_SETUP_FAILED: { readonly slot?: unknown };
  EMB_NET_EXHAUSTED: { readonly node?: number; readonly registry?: string };
  EMB_VMM_NOT_FOUND: SnapshotVersionDetails &
    FirecrackerHostDetails & { readonly cmd?: string; readonly stdout?: string };
  EMB_VMM_START_FAILED: {
    readonly args?: string[];
    readonly cmd?: string;
    readonly command?: string;
    readonly exitCode?: number | null;
    readonly log?: string;
    readonly stderr?: string;
    readonly tail?: string;
  };
  EMB_VMM_COMMAND_FAILED: {
    readonly command?: string;
    readonly file?: string;
    readonly log?: string;
    readonly migrate?: unknown;
    readonly path?: string;
    readonly qmpError?: unknown;
    readonly socket?: string;
    readonly state?: 'Not started' | 'Running';
    readonly vm?: string;
  };
  EMB_VMM_TIMEOUT: {
    readonly command?: string;
    readonly event?: string;
    readonly log?: string;
    readonly method?: string;
    readonly migrate?: unknown;
    readonly path?: string;
    readonly pid?: number;
    readonly socket?: string;
    readonly timeoutMs?: number;
  };
  EMB_VMM_API_FAULT: {
    readonly faultMessage?: string;
    readonly method?: string;
    readonly path?: string;
    readonly socket?: string;
    readonly statusCode?: number;
  };
  EMB_VMM_API_UNREACHABLE: {
    readonly errno?: string;
    readonly method?: string;
    readonly path?: string;
    readonly socket?: string;
  };
  EMB_VMM_KVM_UNAVAILABLE: FirecrackerHostDetails;
  EMB_VMM_CLEANUP_FAILED: { readonly leaked?: string[]; readonly steps?: unknown; readonly vm?: string };
  EMB_GUEST_AGENT_UNREACHABLE: {
    readonly channel?: 'virtio-serial' | 'vsock';
    readonly name?: string;
    readonly socket?: string;
  };
  EMB_GUEST_AGENT_FAILED: { readonly length?: number; readonly reason?: string; readonly type?: number };
  EMB_RESTORE_HOOK_FAILED: {
    readonly code?: number;
    readonly hook?: string;
    readonly instance?: string;
    readonly output?: string;
    readonly state?: unknown;
    readonly timeoutMs?: number;
  };
  EMB_INSTANCE_NOT_FOUND: { readonly name: string };
  EMB_INSTANCE_EXISTS: { readonly name: string };
  EMB_INSTANCE_NOT_READY: { readonly ip?: string; readonly port?: number; readonly timeoutMs?: number };
  EMB_INSTANCE_INVOKE_FAILED: { readonly id?: string; readonly instance?: string; readonly name?: string };
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
  EMB_INSTANCE_BUSY: { readonly lock?: string; readonly name?: string; readonly pid?: number };
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
  EMB_FUNCTION_NOT_FOUND: { readonly function: string };
  EMB_FUNCTION_SPEC_INVALID: {
    readonly field?: string;
    readonly value?: unknown;
    readonly name?: unknown;
    readonly hostCpus?: number;
    readonly hostMemoryMiB?: number;
  };
  EMB_FUNCTION_QUEUE_FULL: {
    readonly function?: string;
    readonly queued?: number;
    readonly retryAfterSeconds?: number;
  };
  EMB_FUNCTION_TIMEOUT: { readonly function?: string; readonly requestTimeoutSeconds?: number };
  EMB_FUNCTION_DRAINING: { readonly function?: string };
  EMB_API_AUTH: NoDetails;
  EMB_API_ROUTE_NOT_FOUND: NoDetails;
  EMB_API_BODY_TOO_LARGE: { readonly limit?: number };
  EMB_API_UNREACHABLE: { readonly api?: string };
  EMB_NODE_BUSY: { readonly home?: string; readonly lock?: string };
  EMB_INTERNAL: {
    readonly candidates?: string[];
    readonly dir?: string;
    readonly field?: string;
    readonly file?: string;
    readonly method?: string;
    readonly name?: string;
    readonly offset?: number;
    readonly op?: unknown;
    readonly params?: unknown;
    readonly path?: string;
    readonly socket?: string;
    readonly status?: number;
    readonly value?: number;
    readonly vm?: string;
  };
}

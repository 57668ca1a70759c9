/** The VM area's error details (see vm.ts): per code of the guest kit, networking, the VMM, the guest agent and instances, the shape of its details. */
import type { HostCommandDetails, SnapshotVersionDetails } from './shared.js';

/** Why Firecracker cannot run here (vmm/select.ts). */
export interface FirecrackerHostDetails {
  readonly binary?: string;
  readonly binaryFound?: boolean;
  readonly hardwareKvm?: boolean;
  readonly kvm?: string;
  readonly accel?: string;
  /** What the host lacks ("no hardware-backed KVM (…)"). */
  readonly missing?: readonly string[];
}

/** What a guest kit build step found wrong (EMB_GUEST_BUILD_FAILED). */
export type GuestBuildProblem =
  | 'package-unknown'
  | 'depends-missing'
  | 'kernel-package-unknown'
  | 'download-failed'
  | 'deb-missing'
  | 'kernel-version-unknown'
  | 'vmlinuz-missing'
  | 'modules-not-found'
  | 'module-not-elf'
  | 'duplicate-module'
  | 'busybox-not-static'
  | 'source-tarball-missing'
  | 'source-folder-missing'
  | 'config-overrides-dropped'
  | 'headers-unknown'
  | 'makefile-unexpected'
  | 'module-without-cmdline'
  | 'kit-invalid'
  | 'step-failed';

/** What is wrong with a run configuration (EMB_GUEST_RUN_CONFIG_INVALID). */
export type RunConfigProblem =
  | 'no-command'
  | 'argument-not-string'
  | 'argument-nul'
  | 'env-not-key-value'
  | 'env-nul'
  | 'working-dir-not-absolute'
  | 'user-format'
  | 'user-id-range'
  | 'hostname'
  | 'exec-conf-escape'
  | 'exec-conf-line'
  | 'exec-conf-version';

/** Which hypervisor command or exchange failed (EMB_VMM_COMMAND_FAILED). */
export type VmmCommandProblem =
  | 'qmp-connect'
  | 'qmp-refused'
  | 'qmp-broken'
  | 'not-paused'
  | 'migration'
  | 'uffd-no-counters'
  | 'uffd-no-ready-file'
  | 'chunk-order'
  | 'page-server-gone'
  | 'page-server-unreachable'
  | 'download-cancelled'
  | 'early-restore-abandoned';

/** What the hypervisor did not do in time (EMB_VMM_TIMEOUT). */
export type VmmTimeoutProblem =
  | 'path'
  | 'kill'
  | 'qmp-connect'
  | 'qmp-command'
  | 'qmp-event'
  | 'migration'
  | 'api-ready'
  | 'api-call'
  | 'uffd-exit'
  | 'page-server-socket';

/** Why the guest agent's answer was refused (EMB_GUEST_AGENT_FAILED). */
export type GuestAgentProblem = 'frame-length' | 'short-answer' | 'run-state' | 'refused' | 'unexpected-type';

export interface VmErrorDetails {
  EMB_GUEST_KERNEL_MISSING: {
    readonly attempts?: unknown;
    /** Set when the base initramfs is missing (the kernel is then fine). */
    readonly baseInitrd?: string;
    readonly elf?: unknown;
    /** A file that is not an x86-64 ELF vmlinux. */
    readonly path?: string;
    /** A vmlinuz holding no ELF vmlinux. */
    readonly vmlinuzPath?: string;
  };
  EMB_GUEST_BUILD_FAILED: HostCommandDetails & {
    readonly problem: GuestBuildProblem;
    /** The error text of the step that failed ('step-failed'). */
    readonly reason?: string;
    readonly pkg?: string;
    readonly pkgs?: readonly { readonly name: string; readonly version: string }[];
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
    readonly packageVersion?: string;
    readonly missing?: readonly string[];
    readonly moduleDirs?: readonly string[];
    readonly modules?: readonly string[];
    readonly output?: string;
    readonly overridesPath?: string;
    readonly path?: string;
    readonly root?: string;
    readonly srcParent?: string;
    readonly tarball?: string;
    readonly vmlinuz?: string;
  };
  EMB_GUEST_RUN_CONFIG_INVALID: {
    readonly problem: RunConfigProblem;
    readonly argv?: readonly unknown[];
    readonly arg?: string;
    readonly env?: unknown;
    readonly workingDir?: string;
    readonly user?: string;
    /** The uid or gid of `user` that is out of range. */
    readonly id?: string;
    readonly hostname?: string;
    readonly line?: string;
    readonly value?: string;
    /** The character after a backslash in an exec.conf value. */
    readonly escape?: string;
    readonly version?: number;
  };
  EMB_NET_SETUP_FAILED: { readonly netns: string; readonly reason: string; readonly slot?: unknown };
  EMB_NET_EXHAUSTED: {
    /** Set when the node has no free slot (else: the machine has no free node index). */
    readonly node?: number;
    /** The registry of node indexes, when they are all taken. */
    readonly registry?: string;
    /** How many slots (or node indexes) there are. */
    readonly limit: number;
  };
  EMB_VMM_NOT_FOUND: SnapshotVersionDetails &
    FirecrackerHostDetails & {
      readonly problem: 'spawn' | 'binary' | 'version-output' | 'snapshot-format' | 'host';
      readonly cmd?: string;
      /** The hypervisor whose binary is missing ('binary'). */
      readonly vmm?: 'QEMU' | 'Firecracker';
      /** The version option whose output was not understood ('version-output'). */
      readonly option?: '--version' | '--snapshot-version';
      readonly stdout?: string;
    };
  EMB_VMM_START_FAILED: {
    /** What was started ("Firecracker for fn-1"). */
    readonly what?: string;
    readonly args?: string[];
    readonly cmd?: string;
    readonly command?: string;
    readonly exitCode?: number | null;
    readonly log?: string;
    /** Why the process could not be spawned. */
    readonly reason?: string;
    readonly stderr?: string;
    readonly tail?: string;
  };
  EMB_VMM_COMMAND_FAILED: {
    readonly problem: VmmCommandProblem;
    readonly command?: string;
    readonly file?: string;
    readonly log?: string;
    readonly memoryFile?: string;
    readonly migrate?: { readonly status?: string; readonly 'error-desc'?: string };
    readonly path?: string;
    readonly qmpError?: { readonly class?: string; readonly desc?: string };
    readonly reason?: string;
    readonly socket?: string;
    readonly state?: string;
    readonly vm?: string;
    readonly chunks?: number;
    readonly verified?: number;
    readonly output?: string;
  };
  EMB_VMM_TIMEOUT: {
    readonly problem: VmmTimeoutProblem;
    readonly what?: string;
    readonly command?: string;
    readonly event?: string;
    readonly log?: string;
    readonly memoryFile?: string;
    readonly method?: string;
    readonly migrate?: unknown;
    readonly path?: string;
    readonly pid?: number;
    readonly socket?: string;
    readonly timeoutMs?: number;
  };
  EMB_VMM_API_FAULT: {
    readonly faultMessage: string;
    readonly method: string;
    readonly path: string;
    readonly socket?: string;
    readonly statusCode: number;
  };
  EMB_VMM_API_UNREACHABLE: {
    /** Whether the request failed ('request': the socket could not be reached or broke) or its answer broke ('response'). */
    readonly stage: 'request' | 'response';
    readonly reason: string;
    readonly errno?: string;
    readonly method: string;
    readonly path: string;
    readonly socket: string;
  };
  EMB_VMM_KVM_UNAVAILABLE: FirecrackerHostDetails;
  EMB_VMM_CLEANUP_FAILED: { readonly leaked: readonly string[]; readonly steps?: unknown; readonly vm: string };
  EMB_GUEST_AGENT_UNREACHABLE: {
    readonly channel?: 'virtio-serial' | 'vsock';
    /** The instance that has no agent channel at all (no socket then). */
    readonly name?: string;
    readonly socket?: string;
    readonly reason?: string;
  };
  EMB_GUEST_AGENT_FAILED: {
    readonly problem: GuestAgentProblem;
    /** The request ("HELLO", "the command") or answer ("EXIT") concerned. */
    readonly what?: string;
    readonly length?: number;
    /** The length the answer should have had ("5", "at least 17", "1..65536"). */
    readonly expected?: string;
    readonly reason?: string;
    readonly type?: number;
    readonly state?: number;
  };
  EMB_RESTORE_HOOK_FAILED: {
    readonly code: number;
    readonly hook: string;
    readonly instance: string;
    readonly output: string;
    readonly state: 'none' | 'exited' | 'signaled' | 'timeout' | 'not-started';
    readonly timeoutMs: number;
  };
  EMB_INSTANCE_NOT_FOUND: { readonly name: string };
  EMB_INSTANCE_EXISTS: { readonly name: string };
  EMB_INSTANCE_NOT_READY: {
    readonly ip: string;
    readonly port: number;
    readonly timeoutMs?: number;
    readonly lastError?: string;
    /** Set when the VMM process exited before the function answered: its kind and the console's tail. */
    readonly vmm?: string;
    readonly consoleTail?: string;
  };
  EMB_INSTANCE_INVOKE_FAILED: {
    readonly name: string;
    readonly reason: string;
    /** The snapshot a recording clone was restored from (its first request failed). */
    readonly id?: string;
    readonly ip?: string;
    readonly port?: number;
    readonly path?: string;
  };
  EMB_INSTANCE_BUSY: { readonly lock?: string; readonly name?: string; readonly pid?: number };
}

/** Errors of the guest kit, networking, the VMM, the guest agent and instances: the shape of each code's details and its catalogue entry (see shared.ts). */
import type { AreaCatalogue, HostCommandDetails, SnapshotVersionDetails } from './shared.js';

/** Why Firecracker cannot run here (vmm/select.ts). */
export interface FirecrackerHostDetails {
  readonly binary?: string;
  readonly binaryFound?: boolean;
  readonly hardwareKvm?: boolean;
  readonly kvm?: string;
  readonly accel?: string;
}

export interface VmErrorDetails {
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
  EMB_INSTANCE_BUSY: { readonly lock?: string; readonly name?: string; readonly pid?: number };
}

export const VM_ERRORS = {
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
  EMB_INSTANCE_BUSY: {
    summary: 'another process is snapshotting this instance',
    message: (d) => `instance ${d.name} is being snapshotted by another process (pid ${d.pid})`,
    hint: 'wait for that `embers snapshot create` to finish (its pid is in the details), then retry; a snapshot whose process died is taken over automatically',
    exit: 75,
  },
} as const satisfies AreaCatalogue<VmErrorDetails>;

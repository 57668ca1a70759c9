/** Errors of the guest kit, networking, the VMM, the guest agent and instances: each code's catalogue entry and message template (see shared.ts); the shape of each code's details is in vm-details.ts. */
import type { AreaCatalogue, CommonDetails } from './shared.js';
import type { FirecrackerHostDetails, VmErrorDetails } from './vm-details.js';

export type {
  FirecrackerHostDetails,
  GuestAgentProblem,
  GuestBuildProblem,
  RunConfigProblem,
  VmErrorDetails,
  VmmCommandProblem,
  VmmTimeoutProblem,
} from './vm-details.js';

export const VM_ERRORS = {
  // guest kit
  EMB_GUEST_KERNEL_MISSING: {
    summary: 'the guest kernel is missing or not an ELF vmlinux',
    message: (d) =>
      d.baseInitrd !== undefined
        ? `base initramfs ${d.baseInitrd} is missing`
        : d.vmlinuzPath !== undefined
          ? `no ELF vmlinux found inside ${d.vmlinuzPath}`
          : `${d.path} is not an x86-64 ELF vmlinux`,
    hint: 'run `embers guest build` to (re)build the guest kit (`embers guest build-kernel` for --guest-kernel firecracker-config)',
    exit: 66,
  },
  EMB_GUEST_BUILD_FAILED: {
    summary: 'building the guest kit (kernel, initramfs) failed',
    message: (d) => guestBuildMessage(d),
    hint: 'check that Debian packages can be downloaded (`apt-get update`), then run `embers guest build` again',
    exit: 70,
  },
  EMB_GUEST_RUN_CONFIG_INVALID: {
    summary:
      'the run configuration of a function (argv, env, user, working dir, hostname) cannot be passed to the guest',
    message: (d) => runConfigMessage(d),
    hint: 'check the image config (Entrypoint, Cmd, Env, User, WorkingDir) and the overrides given on the command line',
    exit: 65,
  },
  // network
  EMB_NET_SETUP_FAILED: {
    summary: 'creating a network slot (netns, tap, veth, nftables) failed',
    message: (d) => `could not create network slot ${d.netns}: ${d.reason}`,
    hint: 'check that iproute2 and nftables are installed and that the kernel has tun, veth and nf_tables',
    exit: 70,
  },
  EMB_NET_EXHAUSTED: {
    summary: 'no free network slot is left on this node',
    message: (d) =>
      d.node !== undefined
        ? `node ${d.node} has no free network slot (${d.limit} in use)`
        : `all ${d.limit} node indexes of this machine are in use by other embers homes`,
    hint: 'stop instances you no longer need (`embers ps` lists them, `embers stop` stops them)',
    exit: 75,
  },
  // hypervisor
  EMB_VMM_NOT_FOUND: {
    summary: 'the hypervisor binary is not installed',
    message: (d) => vmmNotFoundMessage(d),
    hint: 'install qemu-system-x86 (Debian) or set the firecracker binary path',
    exit: 69,
  },
  EMB_VMM_START_FAILED: {
    summary: 'the hypervisor process exited while starting',
    message: (d) =>
      d.reason !== undefined
        ? `could not start ${d.cmd}: ${d.reason}`
        : d.command !== undefined
          ? `${d.what} ${exitedHow(d.exitCode)} before its API was ready:\n${d.tail ?? ''}`
          : `${d.what} exited before it was ready: ${lastChars((d.tail ?? '').trim(), 800)}`,
    hint: 'see the tail of its output in the error details',
    exit: 70,
  },
  EMB_VMM_COMMAND_FAILED: {
    summary: 'the hypervisor refused a command',
    message: (d) => vmmCommandMessage(d),
    hint: 'see the details; the VM may be in the wrong state for this operation',
    exit: 70,
  },
  EMB_VMM_TIMEOUT: {
    summary: 'the hypervisor did not answer in time',
    message: (d) => vmmTimeoutMessage(d),
    hint: 'the host may be overloaded; retry, or raise the timeout',
    exit: 75,
  },
  EMB_VMM_API_FAULT: {
    summary: 'the hypervisor API refused a request (Firecracker answered with a fault_message)',
    message: (d) => `Firecracker refused ${d.method} ${d.path} (HTTP ${d.statusCode}): ${d.faultMessage}`,
    hint: 'see method, path and fault_message in the details; the VM may be in the wrong state for this call',
    exit: 70,
  },
  EMB_VMM_API_UNREACHABLE: {
    summary: 'the hypervisor API socket could not be reached, or the connection broke before an answer',
    message: (d) =>
      d.stage === 'response'
        ? `Firecracker API connection broke during ${d.method} ${d.path}: ${d.reason}`
        : `Firecracker API ${d.socket} failed on ${d.method} ${d.path}: ${d.errno ?? ''} ${d.reason}`.replace(
            /\s+/g,
            ' ',
          ),
    hint: 'the VMM process may have exited: see the VMM log named in the details',
    exit: 70,
  },
  EMB_VMM_KVM_UNAVAILABLE: {
    summary: 'the hypervisor needs hardware-backed KVM, which this host lacks',
    message: (d) => firecrackerHostMessage(d),
    hint: 'run on a host whose CPU has vmx/svm with /dev/kvm from kvm_intel or kvm_amd, or use the QEMU driver (--vmm qemu)',
    exit: 69,
  },
  EMB_VMM_CLEANUP_FAILED: {
    summary: 'stopping a VM left resources behind',
    message: (d) => `stopping ${d.vm} left ${d.leaked.join(', ')}`,
    hint: 'the details list the steps that failed and the paths leaked; remove them by hand',
    exit: 70,
  },
  // guest agent
  EMB_GUEST_AGENT_UNREACHABLE: {
    summary: 'the guest agent did not answer on its channel (virtio-serial or vsock) in time',
    message: (d) =>
      d.socket === undefined
        ? `instance ${d.name} has no guest agent channel (it was started before embers had one, or restored from such a snapshot)`
        : `the guest agent at ${d.socket} (${d.channel}) did not answer: ${d.reason}`,
    hint: 'check the guest console with `embers logs <instance>` for "embers-agent:" lines; an instance booted from a kit without the agent has none',
    exit: 69,
  },
  EMB_GUEST_AGENT_FAILED: {
    summary: 'the guest agent refused or failed a request (clock, entropy, exec)',
    message: (d) => guestAgentMessage(d),
    hint: "the error message gives the agent's reason; check the guest console with `embers logs <instance>`",
    exit: 70,
  },
  EMB_RESTORE_HOOK_FAILED: {
    summary: "the function's restore hook failed, timed out or could not start, so the restored clone was stopped",
    message: (d) =>
      `the restore hook ${d.hook} of clone ${d.instance} ${hookHow(d)}: the clone was stopped${d.output ? `\n${d.output.trimEnd()}` : ''}`,
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
    message: (d) =>
      d.vmm !== undefined
        ? `the VM stopped before the function answered: the ${d.vmm} process exited; console tail:\n${d.consoleTail ?? ''}`
        : `the function did not answer on ${d.ip}:${d.port} within ${d.timeoutMs} ms (last error: ${d.lastError ?? ''})`,
    hint: 'check the guest console with `embers logs <instance>`; raise --ready-timeout if the function starts slowly',
    exit: 75,
  },
  EMB_INSTANCE_INVOKE_FAILED: {
    summary: 'the request to the function failed',
    message: (d) =>
      d.id !== undefined
        ? `the first request to ${d.name}, restored from ${d.id}, failed: ${d.reason}`
        : d.ip !== undefined
          ? `request to ${d.name} (${d.ip}:${d.port}${d.path ?? '/'}) failed: ${d.reason}`
          : `request to instance ${d.name} failed: ${d.reason}`,
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

type Details<C extends keyof VmErrorDetails> = VmErrorDetails[C] & CommonDetails;

/** The last `n` characters of `text`, marked with "…" when cut. */
function lastChars(text: string, n: number): string {
  return text.length > n ? `…${text.slice(-n)}` : text;
}

function exitedHow(code: number | null | undefined): string {
  return code === undefined ? 'exited' : code === null ? 'was killed' : `exited with code ${code}`;
}

function hookHow(d: Details<'EMB_RESTORE_HOOK_FAILED'>): string {
  switch (d.state) {
    case 'exited':
      return `exited with status ${d.code}`;
    case 'signaled':
      return `was killed by signal ${d.code}`;
    case 'timeout':
      return `did not finish in ${d.timeoutMs} ms (killed)`;
    default:
      return `could not start (errno ${d.code})`;
  }
}

function guestBuildMessage(d: Details<'EMB_GUEST_BUILD_FAILED'>): string {
  const pkgs = (d.pkgs ?? []).map((p) => `${p.name}=${p.version}`).join(' ');
  switch (d.problem) {
    case 'package-unknown':
      return `apt knows no installable version of ${d.pkg}`;
    case 'depends-missing':
      return `${d.meta} ${d.metaVersion} has no Depends field`;
    case 'kernel-package-unknown':
      return `cannot find the versioned kernel package in the dependencies of ${d.meta} ${d.metaVersion}: ${d.depends}`;
    case 'download-failed':
      return `downloading ${pkgs} failed`;
    case 'deb-missing':
      return `apt-get download did not produce a .deb for ${d.pkg}`;
    case 'kernel-version-unknown':
      return `cannot tell the kernel version of ${d.pkg}: lib/modules holds ${d.moduleDirs?.join(', ') || 'nothing'}`;
    case 'vmlinuz-missing':
      return `${d.pkg} has no boot/vmlinuz-${d.kernelVersion}`;
    case 'modules-not-found':
      return `modprobe found none of the modules ${d.modules?.join(' ')} in ${d.root}`;
    case 'module-not-elf':
      return `module ${d.path} is not an ELF object after decompression`;
    case 'duplicate-module':
      return `two modules named ${d.file}`;
    case 'busybox-not-static':
      return `${d.path} is not a static x86-64 busybox`;
    case 'source-tarball-missing':
      return `no source tarball in ${d.srcParent}`;
    case 'source-folder-missing':
      return `the source tarball ${d.tarball} has no linux-source-* folder`;
    case 'config-overrides-dropped':
      return `make olddefconfig dropped embers' kernel config overrides: ${d.missing?.join(', ')} (a dependency is off in the base config)`;
    case 'headers-unknown':
      return `cannot tell the headers packages of kernel ${d.kernelVersion} (expected <x.y.z>-<abi>-amd64)`;
    case 'makefile-unexpected':
      return `${d.makefile} does not include /usr/src/…-common/Makefile as expected`;
    case 'module-without-cmdline':
      return `${d.ko} was built without the device= parameter`;
    case 'kit-invalid':
      return `${d.dir} exists but holds no valid kit: remove it and build again`;
    case 'step-failed':
      return `building the guest kit failed: ${d.reason}`;
  }
}

function runConfigMessage(d: Details<'EMB_GUEST_RUN_CONFIG_INVALID'>): string {
  const q = (v: unknown) => JSON.stringify(v);
  switch (d.problem) {
    case 'no-command':
      return 'the function has no command: argv is empty (the image has neither Entrypoint nor Cmd?)';
    case 'argument-not-string':
      return 'argv holds a non-string';
    case 'argument-nul':
      return `argument ${q(d.arg)} contains a NUL byte`;
    case 'env-not-key-value':
      return `environment entry ${q(d.env)} is not KEY=VALUE`;
    case 'env-nul':
      return `environment entry ${q(d.env)} contains a NUL byte`;
    case 'working-dir-not-absolute':
      return `working directory ${q(d.workingDir)} must be an absolute path`;
    case 'user-format':
      return `user ${q(d.user)} must be "", "name", "uid", "uid:gid" or "name:group"`;
    case 'user-id-range':
      return `user ${q(d.user)}: id ${d.id} is out of range`;
    case 'hostname':
      return `hostname ${q(d.hostname)} is not a valid host name (letters, digits, '-', '.', at most 64)`;
    case 'exec-conf-escape':
      return `exec.conf: bad escape "\\${d.escape ?? ''}"`;
    case 'exec-conf-line':
      return `exec.conf: line without key=value: ${q(d.line)}`;
    case 'exec-conf-version':
      return `exec.conf: unsupported version ${String(d.version)}`;
  }
}

function firecrackerHostMessage(d: FirecrackerHostDetails): string {
  return `Firecracker was requested but this host has ${d.missing?.join(' and ')}`;
}

function vmmNotFoundMessage(d: Details<'EMB_VMM_NOT_FOUND'>): string {
  switch (d.problem) {
    case 'spawn':
      return `${d.cmd} is not installed`;
    case 'binary':
      return `${d.vmm} binary ${d.binary} not found`;
    case 'version-output':
      return d.option === '--snapshot-version'
        ? `${d.binary} --snapshot-version printed "${d.stdout?.trim()}", not a version: is it Firecracker ≥ 1.0?`
        : `${d.binary} --version printed "${d.stdout?.trim()}", not "Firecracker vX.Y.Z": is it Firecracker?`;
    case 'snapshot-format':
      return `${d.binary ?? 'firecracker'}${d.binaryVersion ? ` v${d.binaryVersion}` : ''} reports snapshot format "${d.binarySnapshotVersion}", not MAJOR.MINOR.PATCH`;
    case 'host':
      return firecrackerHostMessage(d);
  }
}

function vmmCommandMessage(d: Details<'EMB_VMM_COMMAND_FAILED'>): string {
  switch (d.problem) {
    case 'qmp-connect':
      return `cannot connect to QMP socket ${d.path}: ${d.reason}`;
    case 'qmp-refused':
      return `QEMU refused ${d.command}: ${d.qmpError?.desc ?? 'unknown error'} (${d.qmpError?.class ?? 'Error'})`;
    case 'qmp-broken':
      return `QMP ${d.command} failed: ${d.reason}`;
    case 'not-paused':
      return `VM ${d.vm} must be paused before a snapshot${d.state !== undefined ? ` (Firecracker reports "${d.state}")` : ''}`;
    case 'migration':
      return `QEMU migration ${d.migrate?.status}: ${d.migrate?.['error-desc'] ?? 'no reason given'}`;
    case 'uffd-no-counters':
      return `uffd-handler for ${d.memoryFile} wrote no counters: ${d.output ?? ''}`;
    case 'uffd-no-ready-file':
      return 'uffd-handler was started without a ready file: pass readyPath to wait for it';
    case 'chunk-order':
      return `the fetch order of ${d.file} must name each of its ${d.chunks} chunks once`;
    case 'page-server-gone':
      return `the page server for ${d.file} went away after verifying ${d.verified} of ${d.chunks} chunks`;
    case 'page-server-unreachable':
      return `cannot reach the page server's control socket ${d.path}: ${d.reason}`;
    case 'download-cancelled':
      return `the download of ${d.file} was cancelled`;
    case 'early-restore-abandoned':
      return `the early restore of ${d.id} was abandoned before its page server started`;
  }
}

function vmmTimeoutMessage(d: Details<'EMB_VMM_TIMEOUT'>): string {
  switch (d.problem) {
    case 'path':
      return `${d.what} did not create ${d.path} within ${d.timeoutMs} ms`;
    case 'kill':
      return `process ${d.pid} did not exit after SIGKILL`;
    case 'qmp-connect':
      return `QMP socket ${d.path} did not accept a connection in ${d.timeoutMs} ms`;
    case 'qmp-command':
      return `QMP command ${d.command} got no answer in ${d.timeoutMs} ms`;
    case 'qmp-event':
      return `QMP event ${d.event} did not arrive in ${d.timeoutMs} ms`;
    case 'migration':
      return `QEMU migration did not complete in ${d.timeoutMs} ms`;
    case 'api-ready':
      return `${d.what} created ${d.socket} but its API did not answer within ${d.timeoutMs} ms`;
    case 'api-call':
      return `Firecracker did not answer ${d.method} ${d.path} within ${d.timeoutMs} ms`;
    case 'uffd-exit':
      return `uffd-handler ${d.pid} for ${d.memoryFile} did not exit within ${d.timeoutMs} ms`;
    case 'page-server-socket':
      return `the page server for ${d.id} did not open its control socket ${d.path}`;
  }
}

function guestAgentMessage(d: Details<'EMB_GUEST_AGENT_FAILED'>): string {
  switch (d.problem) {
    case 'frame-length':
      return `the guest agent sent a frame of length ${d.length} (${d.expected} expected): the channel is out of step`;
    case 'short-answer':
      return `the guest agent's ${d.what} answer is ${d.length} bytes (${d.expected} expected)`;
    case 'run-state':
      return `the guest agent reported an unknown run state ${d.state}`;
    case 'refused':
      return `the guest agent refused ${d.what}: ${d.reason}`;
    case 'unexpected-type':
      return `the guest agent answered ${d.what} with message type 0x${(d.type ?? 0).toString(16)}`;
  }
}

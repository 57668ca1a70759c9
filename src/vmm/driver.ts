/**
 * The one hypervisor interface. Nothing above vmm/ knows which VMM runs; nothing in vmm/
 * knows about functions, images or stores. A VM handle is plain JSON, so a VM outlives the
 * process that started it and any later `embers` process can drive it.
 */
import type { GuestCpu } from './host-cpu.js';

export type VmmKind = 'qemu' | 'firecracker';
export type Accelerator = 'kvm' | 'tcg';
/**
 * How the guest finds its virtio-mmio devices: 'acpi' (the VMM's ACPI tables; Firecracker's
 * default, QEMU `-M microvm,acpi=on`) or 'cmdline' (`virtio_mmio.device=…` words the VMM adds
 * to the kernel command line when ACPI is off: Firecracker with `acpi=off`, QEMU
 * `-M microvm,acpi=off`). Either way there is no PCI.
 */
export type DeviceDiscovery = 'acpi' | 'cmdline';
/**
 * How a VMM reaches a VM's disk, which decides the drive path its snapshots record: 'plain'
 * (the path as given, QEMU, which re-points it on restore), or one of Firecracker's
 * DriveLayoutKind (a fixed path in a private mount namespace, or inside the jailer's chroot).
 */
export type DriveLayout = 'plain' | DriveLayoutKind;

export interface VmNetwork {
  /** The netns the VMM process runs in. */
  netns: string;
  /** Tap device inside that netns. */
  tapName: string;
  /** The guest NIC's MAC (same in every slot). */
  guestMac: string;
}

export interface VmSpec {
  /** Unique name, used in process titles. */
  name: string;
  /** Private runtime dir of this VM: sockets, logs, memory file. Created by the caller. */
  dir: string;
  kernelPath: string;
  initrdPath: string;
  cmdline: string;
  /** The VM's writable disk (raw). */
  diskPath: string;
  vcpus: number;
  memoryMiB: number;
  network: VmNetwork;
}

export interface VmHandle {
  kind: VmmKind;
  name: string;
  pid: number;
  dir: string;
  accelerator: Accelerator;
  /** Control socket (QMP or Firecracker API). */
  controlSocket: string;
  /** Guest serial console log. */
  consoleLog: string;
  /** VMM's own stdout/stderr log. */
  vmmLog: string;
  /** Guest RAM file of this VM (for snapshots). */
  memoryFile: string;
  /** How its guest finds its devices (absent in handles written before it was recorded: 'acpi'). */
  deviceDiscovery?: DeviceDiscovery;
  spec: VmSpec;
  /** Firecracker only: how every clone is made to find its own disk at the drive path a
   * snapshot records (see DriveLayoutKind). A snapshot of this VM records a drive path of this
   * kind and restores only into a VM of the same kind: record it in the manifest. */
  driveLayout?: DriveLayoutKind;
  /** Firecracker only: the VM has a vsock device (its snapshots then have one too). */
  vsock?: boolean;
  /** Where the host reaches the guest agent (src/guest/agent.ts); absent: the VM has no agent channel. */
  agent?: AgentChannelRef;
}

/** The host end of a VM's guest agent channel: a Unix socket (QEMU's virtio-serial chardev, or Firecracker's vsock). */
export interface AgentChannelRef {
  kind: 'virtio-serial' | 'vsock';
  socket: string;
}

/**
 * Firecracker records each drive's path in its snapshot and a load reopens exactly that
 * path, so embers gives every VM one fixed drive path that is its own disk:
 * - `mount-namespace`: `<fixedDir>/rootfs.ext4` bound to the VM's disk in a private mount
 *   namespace of its Firecracker process;
 * - `jail`: `/rootfs.ext4` inside the jailer's chroot, a hard link to the VM's disk.
 * A snapshot taken in one kind records a path that means nothing in the other.
 */
export type DriveLayoutKind = 'mount-namespace' | 'jail';
export type { GuestCpu };

export type VmState = 'running' | 'paused' | 'stopped' | 'unknown';

/** The files of a VMM snapshot (device/CPU state and guest memory). */
export interface VmSnapshotFiles {
  stateFile: string;
  memoryFile: string;
  /** Firecracker only: the drive layout the state file's drive path belongs to (record it in the manifest). */
  driveLayout?: DriveLayoutKind;
  /** Firecracker only: the snapshotted VM had a vsock device (record it in the manifest). */
  vsock?: boolean;
  /** The snapshotted VM had a guest agent channel (record it in the manifest: a restore needs the same devices). */
  agent?: boolean;
}

export interface VmTimings {
  /** ms from process spawn until the control socket answered. */
  spawnMs: number;
  /** ms spent in the VMM's own boot or state load calls. */
  loadMs: number;
}

/** A working set (REAP, WS-FORMAT.md): its page ranges in first-touch order, and its pages' bytes with their sha256. */
export interface PageServerWorkingSet {
  rangesPath: string;
  /** Absent: the pages are read from the memory file. */
  pagesPath?: string;
  /** The pages file's sha256: the page server checks it before serving any page of it. */
  pagesSha256?: string;
}

/** Guest memory served by a userfaultfd page server (native/uffd-handler.c) instead of mapped from the memory file. */
export interface PageServerOptions {
  /** The built page server (vmm/firecracker/uffd-handler.ts ensureUffdHandler). */
  binary: string;
  /** Copied into guest memory before the VM resumes (prefetch); the rest is served fault by fault. */
  workingSet?: PageServerWorkingSet;
  /** How long to wait for the working set to be in before resuming, in ms. @default 60000 */
  readyTimeoutMs?: number;
  /** The memory file is still arriving: its chunk list (one sha256 per line), the chunk size, and the control
   * socket the downloader (memory/chunks.ts feedChunks) connects to. Pages are served only from verified chunks. */
  arriving?: { chunkListPath: string; chunkSize: number; controlPath: string };
  /** Record mode (no working set given): every page's first fault is logged, and the ranges in first-touch order
   * are written to this path (WS-FORMAT) when the VM's process exits. */
  recordPath?: string;
}

/** Options every driver's restore takes; drivers may take more. */
export interface RestoreOptions {
  /** Serve guest memory through a page server (Firecracker's `Uffd` backend); a driver without one (QEMU) refuses it. @default none */
  pageServer?: PageServerOptions;
  /** Resume the VM once loaded. @default true */
  resume?: boolean;
  /** The tap name recorded in the snapshot (drivers that record it re-point it when the slot's differs). */
  snapshotTapName?: string;
  /** The snapshot's drive layout (VmSnapshotFiles.driveLayout, from the manifest): Firecracker
   * refuses a restore into the other layout before anything starts. @default unknown: not checked */
  snapshotDriveLayout?: DriveLayoutKind;
  /** Whether the snapshot has a vsock device (VmSnapshotFiles.vsock, from the manifest):
   * Firecracker re-points it only then. @default whether the driver gives VMs a vsock */
  snapshotHasVsock?: boolean;
  /** The device discovery the snapshot was made with: the restored machine must have the same. @default the driver's */
  deviceDiscovery?: DeviceDiscovery;
  /** Whether the snapshot's VM had the guest agent channel (VmSnapshotFiles.agent, from the manifest): QEMU adds its
   * virtio-serial device only then. @default whether the driver gives VMs one */
  snapshotHasAgent?: boolean;
}

export interface HypervisorDriver {
  readonly kind: VmmKind;
  /** Extra guest kernel arguments this VMM needs (e.g. how the guest should halt). */
  readonly guestKernelArgs: readonly string[];
  /** How its guests find their devices (recorded in snapshots); undefined if the driver does not say. */
  readonly deviceDiscovery?: DeviceDiscovery;
  /** How it reaches a VM's disk (recorded in snapshots); undefined if the driver does not say. */
  readonly driveLayout?: DriveLayout;
  /** The CPU its guests see; a driver without it presents the host's CPU. */
  guestCpu?(): Promise<GuestCpu>;
  /** What accelerator this driver will use on this host, and why. */
  accelerator(): Promise<{ accelerator: Accelerator; reason: string }>;
  version(): Promise<string>;
  /** The snapshot data format this VMM writes; recorded in manifests. */
  snapshotFormat(): Promise<string>;
  /** Refuses (before anything starts) a snapshot whose recorded format this VMM cannot load. */
  checkSnapshotFormat(recorded: string, source?: string): Promise<void>;
  boot(spec: VmSpec): Promise<{ vm: VmHandle; timings: VmTimings }>;
  pause(vm: VmHandle): Promise<void>;
  resume(vm: VmHandle): Promise<void>;
  /** Writes state + memory into `outDir` (the VM must be paused). */
  snapshot(vm: VmHandle, outDir: string): Promise<VmSnapshotFiles>;
  /** Starts a new VM from snapshot files; its memory file is mapped, not copied, where the VMM allows. */
  restore(spec: VmSpec, files: VmSnapshotFiles, opts?: RestoreOptions): Promise<{ vm: VmHandle; timings: VmTimings }>;
  /** Stops the VM and waits for its process to exit; escalates, never de-escalates. */
  stop(vm: VmHandle): Promise<void>;
  status(vm: VmHandle): Promise<VmState>;
}

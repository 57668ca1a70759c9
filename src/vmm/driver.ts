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
 * (the path as given, QEMU), 'mount-namespace' (a fixed path bound in a private mount
 * namespace) or 'jail' (a path inside the jailer's chroot).
 */
export type DriveLayout = 'plain' | 'mount-namespace' | 'jail';

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
}

export type { GuestCpu };

export type VmState = 'running' | 'paused' | 'stopped' | 'unknown';

/** The files of a VMM snapshot (device/CPU state and guest memory). */
export interface VmSnapshotFiles {
  stateFile: string;
  memoryFile: string;
}

export interface VmTimings {
  /** ms from process spawn until the control socket answered. */
  spawnMs: number;
  /** ms spent in the VMM's own boot or state load calls. */
  loadMs: number;
}

/** Options every driver's restore takes; drivers may take more. */
export interface RestoreOptions {
  /** Resume the VM once loaded. @default true */
  resume?: boolean;
  /** The tap name recorded in the snapshot (drivers that record it re-point it when the slot's differs). */
  snapshotTapName?: string;
  /** The device discovery the snapshot was made with: the restored machine must have the same. @default the driver's */
  deviceDiscovery?: DeviceDiscovery;
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

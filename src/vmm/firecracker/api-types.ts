// GENERATED FILE: do not edit. Regenerate with `npm run gen:firecracker`.
// Source: src/vmm/firecracker/firecracker-api.yaml, Firecracker API 1.16.1 (Swagger 2.0).
// test/unit/firecracker-types.test.ts fails when this file drifts from the spec.
/* eslint-disable */

/** The API version of the spec these types were generated from. */
export const FIRECRACKER_API_VERSION = "1.16.1";

/** Balloon device descriptor. */
export interface Balloon {
  /** Target balloon size in MiB. */
  amount_mib: number;
  /** Whether the balloon should deflate when the guest has memory pressure. */
  deflate_on_oom: boolean;
  /** Interval in seconds between refreshing statistics. A non-zero value will enable the statistics. Defaults to 0. */
  stats_polling_interval_s?: number;
  /** Whether the free page hinting feature is enabled. */
  free_page_hinting?: boolean;
  /** Whether the free page reporting feature is enabled. */
  free_page_reporting?: boolean;
}

/** Balloon device descriptor. */
export interface BalloonUpdate {
  /** Target balloon size in MiB. */
  amount_mib: number;
}

/** Describes the balloon device statistics. */
export interface BalloonStats {
  /** Target number of pages the device aims to hold. */
  target_pages: number;
  /** Actual number of pages the device is holding. */
  actual_pages: number;
  /** Target amount of memory (in MiB) the device aims to hold. */
  target_mib: number;
  /** Actual amount of memory (in MiB) the device is holding. */
  actual_mib: number;
  /**
   * The amount of memory that has been swapped in (in bytes).
   * @format int64
   */
  swap_in?: number;
  /**
   * The amount of memory that has been swapped out to disk (in bytes).
   * @format int64
   */
  swap_out?: number;
  /**
   * The number of major page faults that have occurred.
   * @format int64
   */
  major_faults?: number;
  /**
   * The number of minor page faults that have occurred.
   * @format int64
   */
  minor_faults?: number;
  /**
   * The amount of memory not being used for any purpose (in bytes).
   * @format int64
   */
  free_memory?: number;
  /**
   * The total amount of memory available (in bytes).
   * @format int64
   */
  total_memory?: number;
  /**
   * An estimate of how much memory is available (in bytes) for starting new applications, without pushing the system to swap.
   * @format int64
   */
  available_memory?: number;
  /**
   * The amount of memory, in bytes, that can be quickly reclaimed without additional I/O. Typically these pages are used for caching files from disk.
   * @format int64
   */
  disk_caches?: number;
  /**
   * The number of successful hugetlb page allocations in the guest.
   * @format int64
   */
  hugetlb_allocations?: number;
  /**
   * The number of failed hugetlb page allocations in the guest.
   * @format int64
   */
  hugetlb_failures?: number;
  /**
   * OOM killer invocations, indicating critical memory pressure.
   * @format int64
   */
  oom_kill?: number;
  /**
   * Counter of Allocation enter a slow path to gain more memory page. The reclaim/scan metrics can reveal what is actually happening.
   * @format int64
   */
  alloc_stall?: number;
  /**
   * Amount of memory scanned asynchronously.
   * @format int64
   */
  async_scan?: number;
  /**
   * Amount of memory scanned directly.
   * @format int64
   */
  direct_scan?: number;
  /**
   * Amount of memory reclaimed asynchronously.
   * @format int64
   */
  async_reclaim?: number;
  /**
   * Amount of memory reclaimed directly.
   * @format int64
   */
  direct_reclaim?: number;
}

/** Command used to start a free page hinting run. */
export interface BalloonStartCmd {
  /** If Firecracker should automatically acknowledge when the guest submits a done cmd. */
  acknowledge_on_stop?: boolean;
}

/** Describes the free page hinting status. */
export interface BalloonHintingStatus {
  /** The last command issued by the host. */
  host_cmd: number;
  /** The last command provided by the guest. */
  guest_cmd?: number;
}

/** Update the statistics polling interval, with the first statistics update scheduled immediately. Statistics cannot be turned on/off after boot. */
export interface BalloonStatsUpdate {
  /** Interval in seconds between refreshing statistics. */
  stats_polling_interval_s: number;
}

/** Boot source descriptor. */
export interface BootSource {
  /** Kernel boot arguments */
  boot_args?: string;
  /** Host level path to the initrd image used to boot the guest */
  initrd_path?: string;
  /** Host level path to the kernel image used to boot the guest */
  kernel_image_path: string;
}

/**
 * The CPU Template defines a set of flags to be disabled from the microvm so that the features exposed to the guest are the same as in the selected instance type. This parameter has been deprecated and it will be removed in future Firecracker release.
 * @default "None"
 */
export type CpuTemplate = "C3" | "T2" | "T2S" | "T2CL" | "T2A" | "V1N1" | "None";

/** The CPU configuration template defines a set of bit maps as modifiers of flags accessed by register to be disabled/enabled for the microvm. */
export interface CpuConfig {
  /** A collection of KVM capabilities to be added or removed (both x86_64 and aarch64) */
  kvm_capabilities?: string[];
  /** A collection of CPUID leaf modifiers (x86_64 only) */
  cpuid_modifiers?: CpuidLeafModifier[];
  /** A collection of model specific register modifiers (x86_64 only) */
  msr_modifiers?: MsrModifier[];
  /** A collection of register modifiers (aarch64 only) */
  reg_modifiers?: ArmRegisterModifier[];
  /** A collection of vCPU features to be modified (aarch64 only) */
  vcpu_features?: VcpuFeatures[];
}

/** Modifier for a CPUID leaf and subleaf (x86_64) */
export interface CpuidLeafModifier {
  /** CPUID leaf index as hex, binary, or decimal string (e.g., "0x0", "0b0", "0")) */
  leaf: string;
  /** CPUID subleaf index as hex, binary, or decimal string (e.g., "0x0", "0b0", "0") */
  subleaf: string;
  /**
   * KVM feature flags for this leaf-subleaf
   * @format int32
   */
  flags: number;
  /** Register modifiers for this CPUID leaf */
  modifiers: CpuidRegisterModifier[];
}

/** Modifier for a specific CPUID register within a leaf (x86_64) */
export interface CpuidRegisterModifier {
  /** Target CPUID register name */
  register: "eax" | "ebx" | "ecx" | "edx";
  /** 32-bit bitmap string defining which bits to modify. Format is "0b" followed by 32 characters where '0' = clear bit, '1' = set bit, 'x' = don't modify. Example "0b00000000000000000000000000000001" or "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxx0001" */
  bitmap: string;
}

/** Modifier for a model specific register (x86_64) */
export interface MsrModifier {
  /** 32-bit MSR address as hex, binary, or decimal string (e.g., "0x10a", "0b100001010", "266") */
  addr: string;
  /** 64-bit bitmap string defining which bits to modify. Format is "0b" followed by 64 characters where '0' = clear bit, '1' = set bit, 'x' = don't modify. Underscores can be used for readability. Example "0b0000000000000000000000000000000000000000000000000000000000000001" */
  bitmap: string;
}

/** Modifier for an ARM register (aarch64) */
export interface ArmRegisterModifier {
  /** 64-bit register address as hex, binary, or decimal string (e.g., "0x0", "0b0", "0") */
  addr: string;
  /** 128-bit bitmap string defining which bits to modify. Format is "0b" followed by up to 128 characters where '0' = clear bit, '1' = set bit, 'x' = don't modify. Underscores can be used for readability. Example "0b0000000000000000000000000000000000000000000000000000000000000001" */
  bitmap: string;
}

/** vCPU feature modifier (aarch64) */
export interface VcpuFeatures {
  /**
   * Index in the kvm_vcpu_init.features array
   * @format int32
   */
  index: number;
  /** 32-bit bitmap string defining which bits to modify. Format is "0b" followed by 32 characters where '0' = clear bit, '1' = set bit, 'x' = don't modify. Example "0b00000000000000000000000001100000" */
  bitmap: string;
}

export interface Drive {
  drive_id: string;
  /** Represents the unique id of the boot partition of this device. It is optional and it will be taken into account only if the is_root_device field is true. */
  partuuid?: string;
  is_root_device: boolean;
  /**
   * Represents the caching strategy for the block device.
   * @default "Unsafe"
   */
  cache_type?: "Unsafe" | "Writeback";
  /** Is block read only. This field is required for virtio-block config and should be omitted for vhost-user-block configuration. */
  is_read_only?: boolean;
  /** Host level path for the guest drive. This field is required for virtio-block config and should be omitted for vhost-user-block configuration. */
  path_on_host?: string;
  rate_limiter?: RateLimiter;
  /**
   * Type of the IO engine used by the device. "Async" is supported on host kernels newer than 5.10.51. This field is optional for virtio-block config and should be omitted for vhost-user-block configuration.
   * @default "Sync"
   */
  io_engine?: "Sync" | "Async";
  /** Path to the socket of vhost-user-block backend. This field is required for vhost-user-block config should be omitted for virtio-block configuration. */
  socket?: string;
}

export interface Pmem {
  /** Identificator for this device. */
  id: string;
  /** Host level path for the virtio-pmem device to use as a backing file. */
  path_on_host: string;
  /** Flag to make this device be the root device for VM boot. Setting this flag will fail if there is another device configured to be a root device already. */
  root_device?: boolean;
  /** Flag to map backing file in read-only mode. */
  read_only?: boolean;
  rate_limiter?: RateLimiter;
}

export interface Error {
  /**
   * A description of the error condition
   * @readonly
   */
  fault_message?: string;
}

export interface FullVmConfiguration {
  balloon?: Balloon;
  /** Configurations for all block devices. */
  drives?: Drive[];
  "boot-source"?: BootSource;
  "cpu-config"?: CpuConfig;
  logger?: Logger;
  "machine-config"?: MachineConfiguration;
  metrics?: Metrics;
  "memory-hotplug"?: MemoryHotplugConfig;
  "mmds-config"?: MmdsConfig;
  /** Configurations for all net devices. */
  "network-interfaces"?: NetworkInterface[];
  /** Configurations for all pmem devices. */
  pmem?: Pmem[];
  vsock?: Vsock;
  entropy?: EntropyDevice;
}

/** Variant wrapper containing the real action. */
export interface InstanceActionInfo {
  /** Enumeration indicating what type of action is contained in the payload */
  action_type: "FlushMetrics" | "InstanceStart" | "SendCtrlAltDel";
}

/** Describes MicroVM instance information. */
export interface InstanceInfo {
  /** Application name. */
  app_name: string;
  /** MicroVM / instance ID. */
  id: string;
  /** The current detailed state (Not started, Running, Paused) of the Firecracker instance. This value is read-only for the control-plane. */
  state: "Not started" | "Running" | "Paused";
  /** MicroVM hypervisor build version. */
  vmm_version: string;
}

/** Describes the configuration option for the logging capability. */
export interface Logger {
  /**
   * Set the level. The possible values are case-insensitive.
   * @default "Info"
   */
  level?: "Error" | "Warning" | "Info" | "Debug" | "Trace" | "Off";
  /** Path to the named pipe or file for the human readable log output. */
  log_path?: string;
  /**
   * Whether or not to output the level in the logs.
   * @default false
   */
  show_level?: boolean;
  /**
   * Whether or not to include the file path and line number of the log's origin.
   * @default false
   */
  show_log_origin?: boolean;
  /** The module path to filter log messages by. */
  module?: string;
}

/** Describes the number of vCPUs, memory size, SMT capabilities, huge page configuration and the CPU template. */
export interface MachineConfiguration {
  cpu_template?: CpuTemplate;
  /**
   * Flag for enabling/disabling simultaneous multithreading. Can be enabled only on x86.
   * @default false
   */
  smt?: boolean;
  /** Memory size of VM */
  mem_size_mib: number;
  /**
   * Enable dirty page tracking. If this is enabled, then incremental guest memory snapshots can be created. These belong to diff snapshots, which contain, besides the microVM state, only the memory dirtied since a previous snapshot. Full snapshots each contain a full copy of the guest memory.
   * @default false
   */
  track_dirty_pages?: boolean;
  /**
   * Number of vCPUs (either 1 or an even number)
   * @minimum 1
   * @maximum 32
   */
  vcpu_count: number;
  /** Which huge pages configuration (if any) should be used to back guest memory. */
  huge_pages?: "None" | "2M";
}

export interface MemoryBackend {
  backend_type: "File" | "Uffd";
  /** Based on 'backend_type' it is either 1) Path to the file that contains the guest memory to be loaded 2) Path to the UDS where a process is listening for a UFFD initialization control payload and open file descriptor that it can use to serve this process's guest memory page faults */
  backend_path: string;
}

/** Describes the configuration option for the metrics capability. */
export interface Metrics {
  /** Path to the named pipe or file where the JSON-formatted metrics are flushed. */
  metrics_path: string;
}

/** Defines the MMDS configuration. */
export interface MmdsConfig {
  /**
   * Enumeration indicating the MMDS version to be configured.
   * @default "V1"
   */
  version?: "V1" | "V2";
  /** List of the network interface IDs capable of forwarding packets to the MMDS. Network interface IDs mentioned must be valid at the time of this request. The net device model will reply to HTTP GET requests sent to the MMDS address via the interfaces mentioned. In this case, both ARP requests and TCP segments heading to `ipv4_address` are intercepted by the device model, and do not reach the associated TAP device. */
  network_interfaces: string[];
  /**
   * A valid IPv4 link-local address.
   * @default "169.254.169.254"
   */
  ipv4_address?: string;
  /**
   * MMDS operates compatibly with EC2 IMDS (i.e. responds "text/plain" content regardless of Accept header in requests).
   * @default false
   */
  imds_compat?: boolean;
}

/** Describes the contents of MMDS in JSON format. */
export type MmdsContentsObject = Record<string, unknown>;

/** Defines a network interface. */
export interface NetworkInterface {
  guest_mac?: string;
  /** Host level path for the guest network interface */
  host_dev_name: string;
  iface_id: string;
  /**
   * MTU to advertise to the guest via VIRTIO_NET_F_MTU. When set, a compatible guest driver will configure the interface with this MTU. When absent, VIRTIO_NET_F_MTU is not advertised and the guest uses its default MTU.
   * @minimum 68
   * @maximum 65535
   */
  mtu?: number;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

export interface PartialDrive {
  drive_id: string;
  /** Host level path for the guest drive. This field is optional for virtio-block config and should be omitted for vhost-user-block configuration. */
  path_on_host?: string;
  rate_limiter?: RateLimiter;
}

/** Defines a partial network interface structure, used to update the rate limiters for that interface, after microvm start. */
export interface PartialNetworkInterface {
  iface_id: string;
  rx_rate_limiter?: RateLimiter;
  tx_rate_limiter?: RateLimiter;
}

/** Defines a partial pmem device structure, used to update the rate limiter for that device, after microvm start. */
export interface PartialPmem {
  id: string;
  rate_limiter?: RateLimiter;
}

/** Defines an IO rate limiter with independent bytes/s and ops/s limits. Limits are defined by configuring each of the _bandwidth_ and _ops_ token buckets. This field is optional for virtio-block config and should be omitted for vhost-user-block configuration. */
export interface RateLimiter {
  /** Token bucket with bytes as tokens */
  bandwidth?: TokenBucket;
  /** Token bucket with operations as tokens */
  ops?: TokenBucket;
}

export interface SnapshotCreateParams {
  /** Path to the file that will contain the guest memory. */
  mem_file_path: string;
  /** Path to the file that will contain the microVM state. */
  snapshot_path: string;
  /** Type of snapshot to create. It is optional and by default, a full snapshot is created. */
  snapshot_type?: "Full" | "Diff";
}

/** Allows for changing the backing TAP device of a network interface during snapshot restore. */
export interface NetworkOverride {
  /** The name of the interface to modify */
  iface_id: string;
  /** The new host device of the interface */
  host_dev_name: string;
}

/** Allows for changing the backing Unix Domain Socket of a vsock device during snapshot restore. */
export interface VsockOverride {
  /** The new path for the backing Unix Domain Socket. */
  uds_path: string;
}

/** Defines the configuration used for handling snapshot resume. Exactly one of the two `mem_*` fields must be present in the body of the request. */
export interface SnapshotLoadParams {
  /** (Deprecated) Enable dirty page tracking to improve space efficiency of diff snapshots */
  enable_diff_snapshots?: boolean;
  /** Enable dirty page tracking to improve space efficiency of diff snapshots */
  track_dirty_pages?: boolean;
  /** Path to the file that contains the guest memory to be loaded. It is only allowed if `mem_backend` is not present. This parameter has been deprecated and it will be removed in future Firecracker release. */
  mem_file_path?: string;
  /** Configuration for the backend that handles memory load. If this field is specified, `mem_file_path` is forbidden. Either `mem_backend` or `mem_file_path` must be present at a time. */
  mem_backend?: MemoryBackend;
  /** Path to the file that contains the microVM state to be loaded. */
  snapshot_path: string;
  /** When set to true, the vm is also resumed if the snapshot load is successful. */
  resume_vm?: boolean;
  /** Network host device names to override */
  network_overrides?: NetworkOverride[];
  /** Overrides the vsock device's UDS path on snapshot restore. This is useful for restoring a snapshot with a different socket path than the one used when the snapshot was created. For example, when the original socket path is no longer available or when deploying to a different environment. */
  vsock_override?: VsockOverride;
  /** [x86_64 only] When set to true, passes KVM_CLOCK_REALTIME to KVM_SET_CLOCK on restore, advancing kvmclock by the wall-clock time elapsed since the snapshot was taken. When false (default), kvmclock resumes from where it was at snapshot time. This option may be extended to other clock sources and CPU architectures in the future. */
  clock_realtime?: boolean;
}

/** Defines a token bucket with a maximum capacity (size), an initial burst size (one_time_burst) and an interval for refilling purposes (refill_time). The refill-rate is derived from size and refill_time, and it is the constant rate at which the tokens replenish. The refill process only starts happening after the initial burst budget is consumed. Consumption from the token bucket is unbounded in speed which allows for bursts bound in size by the amount of tokens available. Once the token bucket is empty, consumption speed is bound by the refill_rate. */
export interface TokenBucket {
  /**
   * The initial size of a token bucket.
   * @minimum 0
   * @format int64
   */
  one_time_burst?: number;
  /**
   * The amount of milliseconds it takes for the bucket to refill.
   * @minimum 0
   * @format int64
   */
  refill_time: number;
  /**
   * The total number of tokens this bucket can hold.
   * @minimum 0
   * @format int64
   */
  size: number;
}

/** Defines the microVM running state. It is especially useful in the snapshotting context. */
export interface Vm {
  state: "Paused" | "Resumed";
}

/** Defines an entropy device. */
export interface EntropyDevice {
  rate_limiter?: RateLimiter;
}

/** The configuration of the serial device */
export interface SerialDevice {
  /** Path to a file or named pipe on the host to which serial output should be written. */
  serial_out_path?: string;
  /** Optional token bucket for rate limiting serial console output bandwidth. When present, guest writes to the serial port that exceed the configured rate are silently dropped and counted in the `uart.rate_limiter_dropped_bytes` metric. When absent (the default), serial output is not rate-limited. */
  rate_limiter?: TokenBucket;
}

/** The configuration of the hotpluggable memory device (virtio-mem) */
export interface MemoryHotplugConfig {
  /** Total size of the hotpluggable memory in MiB. */
  total_size_mib?: number;
  /**
   * Slot size for the hotpluggable memory in MiB. This will determine the granularity of hot-plug memory from the host. Refer to the device documentation on how to tune this value.
   * @minimum 128
   * @default 128
   */
  slot_size_mib?: number;
  /**
   * (Logical) Block size for the hotpluggable memory in MiB. This will determine the logical granularity of hot-plug memory for the guest. Refer to the device documentation on how to tune this value.
   * @minimum 2
   * @default 2
   */
  block_size_mib?: number;
}

/** An update to the size of the hotpluggable memory region. */
export interface MemoryHotplugSizeUpdate {
  /** New target region size. */
  requested_size_mib?: number;
}

/** The status of the hotpluggable memory device (virtio-mem) */
export interface MemoryHotplugStatus {
  /** Total size of the hotpluggable memory in MiB. */
  total_size_mib?: number;
  /** Slot size for the hotpluggable memory in MiB. */
  slot_size_mib?: number;
  /** (Logical) Block size for the hotpluggable memory in MiB. */
  block_size_mib?: number;
  /** Plugged size for the hotpluggable memory in MiB. */
  plugged_size_mib?: number;
  /** Requested size for the hotpluggable memory in MiB. */
  requested_size_mib?: number;
}

/** Describes the Firecracker version. */
export interface FirecrackerVersion {
  /** Firecracker build version. */
  firecracker_version: string;
}

/** Defines a vsock device, backed by a set of Unix Domain Sockets, on the host side. For host-initiated connections, Firecracker will be listening on the Unix socket identified by the path `uds_path`. Firecracker will create this socket, bind and listen on it. Host-initiated connections will be performed by connection to this socket and issuing a connection forwarding request to the desired guest-side vsock port (i.e. `CONNECT 52\n`, to connect to port 52). For guest-initiated connections, Firecracker will expect host software to be bound and listening on Unix sockets at `uds_path_<PORT>`. E.g. "/path/to/host_vsock.sock_52" for port number 52. */
export interface Vsock {
  /**
   * Guest Vsock CID
   * @minimum 3
   */
  guest_cid: number;
  /** Path to UNIX domain socket, used to proxy vsock connections. */
  uds_path: string;
  /** This parameter has been deprecated and it will be removed in future Firecracker release. */
  vsock_id?: string;
}

/** Every operation of the API, keyed by "METHOD /path/{param}". */
export interface FirecrackerOperations {
  /** Returns general information about an instance. (describeInstance) */
  "GET /": {
    operationId: "describeInstance";
    params: Record<string, never>;
    body: undefined;
    response: InstanceInfo;
  };
  /** Creates a synchronous action. (createSyncAction) */
  "PUT /actions": {
    operationId: "createSyncAction";
    params: Record<string, never>;
    body: InstanceActionInfo;
    response: void;
  };
  /** Returns the current balloon device configuration. (describeBalloonConfig) */
  "GET /balloon": {
    operationId: "describeBalloonConfig";
    params: Record<string, never>;
    body: undefined;
    response: Balloon;
  };
  /** Creates or updates a balloon device. (putBalloon) */
  "PUT /balloon": {
    operationId: "putBalloon";
    params: Record<string, never>;
    body: Balloon;
    response: void;
  };
  /** Updates a balloon device. (patchBalloon) */
  "PATCH /balloon": {
    operationId: "patchBalloon";
    params: Record<string, never>;
    body: BalloonUpdate;
    response: void;
  };
  /** Returns the latest balloon device statistics, only if enabled pre-boot. (describeBalloonStats) */
  "GET /balloon/statistics": {
    operationId: "describeBalloonStats";
    params: Record<string, never>;
    body: undefined;
    response: BalloonStats;
  };
  /** Updates a balloon device statistics polling interval. (patchBalloonStatsInterval) */
  "PATCH /balloon/statistics": {
    operationId: "patchBalloonStatsInterval";
    params: Record<string, never>;
    body: BalloonStatsUpdate;
    response: void;
  };
  /** Starts a free page hinting run only if enabled pre-boot. (startBalloonHinting) */
  "PATCH /balloon/hinting/start": {
    operationId: "startBalloonHinting";
    params: Record<string, never>;
    body: BalloonStartCmd | undefined;
    response: void;
  };
  /** Returns the balloon hinting statistics, only if enabled pre-boot. (describeBalloonHinting) */
  "GET /balloon/hinting/status": {
    operationId: "describeBalloonHinting";
    params: Record<string, never>;
    body: undefined;
    response: BalloonHintingStatus;
  };
  /** Stops a free page hinting run only if enabled pre-boot. (stopBalloonHinting) */
  "PATCH /balloon/hinting/stop": {
    operationId: "stopBalloonHinting";
    params: Record<string, never>;
    body: undefined;
    response: void;
  };
  /** Creates or updates the boot source. Pre-boot only. (putGuestBootSource) */
  "PUT /boot-source": {
    operationId: "putGuestBootSource";
    params: Record<string, never>;
    body: BootSource;
    response: void;
  };
  /** Configures CPU features flags for the vCPUs of the guest VM. Pre-boot only. (putCpuConfiguration) */
  "PUT /cpu-config": {
    operationId: "putCpuConfiguration";
    params: Record<string, never>;
    body: CpuConfig | undefined;
    response: void;
  };
  /** Creates or updates a drive. Pre-boot only. (putGuestDriveByID) */
  "PUT /drives/{drive_id}": {
    operationId: "putGuestDriveByID";
    params: { drive_id: string };
    body: Drive;
    response: void;
  };
  /** Updates the properties of a drive. Post-boot only. (patchGuestDriveByID) */
  "PATCH /drives/{drive_id}": {
    operationId: "patchGuestDriveByID";
    params: { drive_id: string };
    body: PartialDrive;
    response: void;
  };
  /** Creates or updates a pmem device. Pre-boot only. (putGuestPmemByID) */
  "PUT /pmem/{id}": {
    operationId: "putGuestPmemByID";
    params: { id: string };
    body: Pmem;
    response: void;
  };
  /** Updates the rate limiter of a pmem device. Post-boot only. (patchGuestPmemByID) */
  "PATCH /pmem/{id}": {
    operationId: "patchGuestPmemByID";
    params: { id: string };
    body: PartialPmem;
    response: void;
  };
  /** Initializes the logger by specifying a named pipe or a file for the logs output. (putLogger) */
  "PUT /logger": {
    operationId: "putLogger";
    params: Record<string, never>;
    body: Logger;
    response: void;
  };
  /** Gets the machine configuration of the VM. (getMachineConfiguration) */
  "GET /machine-config": {
    operationId: "getMachineConfiguration";
    params: Record<string, never>;
    body: undefined;
    response: MachineConfiguration;
  };
  /** Updates the Machine Configuration of the VM. Pre-boot only. (putMachineConfiguration) */
  "PUT /machine-config": {
    operationId: "putMachineConfiguration";
    params: Record<string, never>;
    body: MachineConfiguration | undefined;
    response: void;
  };
  /** Partially updates the Machine Configuration of the VM. Pre-boot only. (patchMachineConfiguration) */
  "PATCH /machine-config": {
    operationId: "patchMachineConfiguration";
    params: Record<string, never>;
    body: MachineConfiguration | undefined;
    response: void;
  };
  /** Initializes the metrics system by specifying a named pipe or a file for the metrics output. (putMetrics) */
  "PUT /metrics": {
    operationId: "putMetrics";
    params: Record<string, never>;
    body: Metrics;
    response: void;
  };
  /** Get the MMDS data store. (getMmds) */
  "GET /mmds": {
    operationId: "getMmds";
    params: Record<string, never>;
    body: undefined;
    response: Record<string, unknown>;
  };
  /** Creates a MMDS (Microvm Metadata Service) data store. (putMmds) */
  "PUT /mmds": {
    operationId: "putMmds";
    params: Record<string, never>;
    body: MmdsContentsObject | undefined;
    response: void;
  };
  /** Updates the MMDS data store. (patchMmds) */
  "PATCH /mmds": {
    operationId: "patchMmds";
    params: Record<string, never>;
    body: MmdsContentsObject | undefined;
    response: void;
  };
  /** Set MMDS configuration. Pre-boot only. (putMmdsConfig) */
  "PUT /mmds/config": {
    operationId: "putMmdsConfig";
    params: Record<string, never>;
    body: MmdsConfig;
    response: void;
  };
  /** Creates an entropy device. Pre-boot only. (putEntropyDevice) */
  "PUT /entropy": {
    operationId: "putEntropyDevice";
    params: Record<string, never>;
    body: EntropyDevice;
    response: void;
  };
  /** Configures the serial console (putSerialDevice) */
  "PUT /serial": {
    operationId: "putSerialDevice";
    params: Record<string, never>;
    body: SerialDevice;
    response: void;
  };
  /** Retrieves the status of the hotpluggable memory (getMemoryHotplug) */
  "GET /hotplug/memory": {
    operationId: "getMemoryHotplug";
    params: Record<string, never>;
    body: undefined;
    response: MemoryHotplugStatus;
  };
  /** Configures the hotpluggable memory (putMemoryHotplug) */
  "PUT /hotplug/memory": {
    operationId: "putMemoryHotplug";
    params: Record<string, never>;
    body: MemoryHotplugConfig;
    response: void;
  };
  /** Updates the size of the hotpluggable memory region (patchMemoryHotplug) */
  "PATCH /hotplug/memory": {
    operationId: "patchMemoryHotplug";
    params: Record<string, never>;
    body: MemoryHotplugSizeUpdate;
    response: void;
  };
  /** Creates a network interface. Pre-boot only. (putGuestNetworkInterfaceByID) */
  "PUT /network-interfaces/{iface_id}": {
    operationId: "putGuestNetworkInterfaceByID";
    params: { iface_id: string };
    body: NetworkInterface;
    response: void;
  };
  /** Updates the rate limiters applied to a network interface. Post-boot only. (patchGuestNetworkInterfaceByID) */
  "PATCH /network-interfaces/{iface_id}": {
    operationId: "patchGuestNetworkInterfaceByID";
    params: { iface_id: string };
    body: PartialNetworkInterface;
    response: void;
  };
  /** Creates a full or diff snapshot. Post-boot only. (createSnapshot) */
  "PUT /snapshot/create": {
    operationId: "createSnapshot";
    params: Record<string, never>;
    body: SnapshotCreateParams;
    response: void;
  };
  /** Loads a snapshot. Pre-boot only. (loadSnapshot) */
  "PUT /snapshot/load": {
    operationId: "loadSnapshot";
    params: Record<string, never>;
    body: SnapshotLoadParams;
    response: void;
  };
  /** Gets the Firecracker version. (getFirecrackerVersion) */
  "GET /version": {
    operationId: "getFirecrackerVersion";
    params: Record<string, never>;
    body: undefined;
    response: FirecrackerVersion;
  };
  /** Updates the microVM state. (patchVm) */
  "PATCH /vm": {
    operationId: "patchVm";
    params: Record<string, never>;
    body: Vm;
    response: void;
  };
  /** Gets the full VM configuration. (getExportVmConfig) */
  "GET /vm/config": {
    operationId: "getExportVmConfig";
    params: Record<string, never>;
    body: undefined;
    response: FullVmConfiguration;
  };
  /** Creates/updates a vsock device. Pre-boot only. (putGuestVsock) */
  "PUT /vsock": {
    operationId: "putGuestVsock";
    params: Record<string, never>;
    body: Vsock;
    response: void;
  };
}

export type FirecrackerOperationKey = keyof FirecrackerOperations;

/** What the client needs at run time to build each request. */
export interface FirecrackerOperationInfo {
  method: 'GET' | 'PUT' | 'PATCH' | 'POST' | 'DELETE';
  path: string;
  operationId: string;
  pathParams: readonly string[];
  /** Whether the operation takes a JSON body: 'required', 'optional' or 'none'. */
  body: 'required' | 'optional' | 'none';
}

export const FIRECRACKER_OPERATIONS: { readonly [K in FirecrackerOperationKey]: FirecrackerOperationInfo } = {
  "GET /": { method: "GET", path: "/", operationId: "describeInstance", pathParams: [], body: "none" },
  "PUT /actions": { method: "PUT", path: "/actions", operationId: "createSyncAction", pathParams: [], body: "required" },
  "GET /balloon": { method: "GET", path: "/balloon", operationId: "describeBalloonConfig", pathParams: [], body: "none" },
  "PUT /balloon": { method: "PUT", path: "/balloon", operationId: "putBalloon", pathParams: [], body: "required" },
  "PATCH /balloon": { method: "PATCH", path: "/balloon", operationId: "patchBalloon", pathParams: [], body: "required" },
  "GET /balloon/statistics": { method: "GET", path: "/balloon/statistics", operationId: "describeBalloonStats", pathParams: [], body: "none" },
  "PATCH /balloon/statistics": { method: "PATCH", path: "/balloon/statistics", operationId: "patchBalloonStatsInterval", pathParams: [], body: "required" },
  "PATCH /balloon/hinting/start": { method: "PATCH", path: "/balloon/hinting/start", operationId: "startBalloonHinting", pathParams: [], body: "optional" },
  "GET /balloon/hinting/status": { method: "GET", path: "/balloon/hinting/status", operationId: "describeBalloonHinting", pathParams: [], body: "none" },
  "PATCH /balloon/hinting/stop": { method: "PATCH", path: "/balloon/hinting/stop", operationId: "stopBalloonHinting", pathParams: [], body: "none" },
  "PUT /boot-source": { method: "PUT", path: "/boot-source", operationId: "putGuestBootSource", pathParams: [], body: "required" },
  "PUT /cpu-config": { method: "PUT", path: "/cpu-config", operationId: "putCpuConfiguration", pathParams: [], body: "optional" },
  "PUT /drives/{drive_id}": { method: "PUT", path: "/drives/{drive_id}", operationId: "putGuestDriveByID", pathParams: ["drive_id"], body: "required" },
  "PATCH /drives/{drive_id}": { method: "PATCH", path: "/drives/{drive_id}", operationId: "patchGuestDriveByID", pathParams: ["drive_id"], body: "required" },
  "PUT /pmem/{id}": { method: "PUT", path: "/pmem/{id}", operationId: "putGuestPmemByID", pathParams: ["id"], body: "required" },
  "PATCH /pmem/{id}": { method: "PATCH", path: "/pmem/{id}", operationId: "patchGuestPmemByID", pathParams: ["id"], body: "required" },
  "PUT /logger": { method: "PUT", path: "/logger", operationId: "putLogger", pathParams: [], body: "required" },
  "GET /machine-config": { method: "GET", path: "/machine-config", operationId: "getMachineConfiguration", pathParams: [], body: "none" },
  "PUT /machine-config": { method: "PUT", path: "/machine-config", operationId: "putMachineConfiguration", pathParams: [], body: "optional" },
  "PATCH /machine-config": { method: "PATCH", path: "/machine-config", operationId: "patchMachineConfiguration", pathParams: [], body: "optional" },
  "PUT /metrics": { method: "PUT", path: "/metrics", operationId: "putMetrics", pathParams: [], body: "required" },
  "GET /mmds": { method: "GET", path: "/mmds", operationId: "getMmds", pathParams: [], body: "none" },
  "PUT /mmds": { method: "PUT", path: "/mmds", operationId: "putMmds", pathParams: [], body: "optional" },
  "PATCH /mmds": { method: "PATCH", path: "/mmds", operationId: "patchMmds", pathParams: [], body: "optional" },
  "PUT /mmds/config": { method: "PUT", path: "/mmds/config", operationId: "putMmdsConfig", pathParams: [], body: "required" },
  "PUT /entropy": { method: "PUT", path: "/entropy", operationId: "putEntropyDevice", pathParams: [], body: "required" },
  "PUT /serial": { method: "PUT", path: "/serial", operationId: "putSerialDevice", pathParams: [], body: "required" },
  "GET /hotplug/memory": { method: "GET", path: "/hotplug/memory", operationId: "getMemoryHotplug", pathParams: [], body: "none" },
  "PUT /hotplug/memory": { method: "PUT", path: "/hotplug/memory", operationId: "putMemoryHotplug", pathParams: [], body: "required" },
  "PATCH /hotplug/memory": { method: "PATCH", path: "/hotplug/memory", operationId: "patchMemoryHotplug", pathParams: [], body: "required" },
  "PUT /network-interfaces/{iface_id}": { method: "PUT", path: "/network-interfaces/{iface_id}", operationId: "putGuestNetworkInterfaceByID", pathParams: ["iface_id"], body: "required" },
  "PATCH /network-interfaces/{iface_id}": { method: "PATCH", path: "/network-interfaces/{iface_id}", operationId: "patchGuestNetworkInterfaceByID", pathParams: ["iface_id"], body: "required" },
  "PUT /snapshot/create": { method: "PUT", path: "/snapshot/create", operationId: "createSnapshot", pathParams: [], body: "required" },
  "PUT /snapshot/load": { method: "PUT", path: "/snapshot/load", operationId: "loadSnapshot", pathParams: [], body: "required" },
  "GET /version": { method: "GET", path: "/version", operationId: "getFirecrackerVersion", pathParams: [], body: "none" },
  "PATCH /vm": { method: "PATCH", path: "/vm", operationId: "patchVm", pathParams: [], body: "required" },
  "GET /vm/config": { method: "GET", path: "/vm/config", operationId: "getExportVmConfig", pathParams: [], body: "none" },
  "PUT /vsock": { method: "PUT", path: "/vsock", operationId: "putGuestVsock", pathParams: [], body: "required" },
};

import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveConfig, type Config, type ConfigOptions } from '../config.js';
import { agentExec, type ExecOptions } from '../guest/agent.js';
import type { ExitStatus } from '../guest/agent-protocol.js';
import { EmbersError } from '../errors.js';
import { run, which } from '../util/exec.js';
import type { GuestKit } from '../guest/kit.js';
import { ImageStore } from '../image/store.js';
import { SlotPool } from '../net/pool.js';
import type { DeviceDiscovery, HypervisorDriver } from '../vmm/driver.js';
import { firecrackerBinaryOf, probeFirecrackers, selectDriver } from '../vmm/select.js';
import { pidAlive, pidCmdline, terminate } from '../vmm/process.js';
import { InstanceStore, validateInstanceName, type InstanceRecord } from './instances.js';
import { validateFunctionSpec, type FunctionSpec } from './function-spec.js';
import { GuestKits } from './guest-kits.js';
import { Launcher } from './launcher.js';
import { PoolRefill } from './pool-refill.js';
import { RemoteSnapshots, type RemoteOptions } from './remote.js';
import { SnapshotService } from './snapshots.js';
import { httpRequest, type InvokeRequest, type InvokeResponse } from './invoke.js';
import { roundMs } from '../util/format.js';

export type { FunctionSpec } from './function-spec.js';

export interface NodeOptions extends ConfigOptions, RemoteOptions {
  /** Which VMM: 'auto' prefers Firecracker where its binary and hardware KVM exist. @default 'auto' */
  vmm?: 'auto' | 'qemu' | 'firecracker';
  /** The Firecracker binary. @default EMBERS_FIRECRACKER_BIN, else `firecracker` on PATH */
  firecrackerBin?: string;
  /** Free network slots kept ready. @default 10 */
  netPoolSize?: number;
  /** The guest kernel: Debian's packaged kernel, or one built with Firecracker's guest config
   * (`embers guest build-kernel`). @default 'debian' */
  guestKernel?: GuestKit['kind'];
  /**
   * The CPU model QEMU guests see (`-cpu`); snapshots restore only under the same model. See
   * QemuDriverOptions.cpuModel for the policy. @default 'host' under KVM, 'max' under TCG
   */
  qemuCpuModel?: string;
  /**
   * How QEMU guests find their devices: 'acpi' (`-M microvm,acpi=on`) or 'cmdline'
   * (`acpi=off`: no ACPI, no RTC, `virtio_mmio.device=…` on the kernel command line, as
   * Firecracker without ACPI). Restores follow the snapshot's. @default 'acpi'
   */
  deviceDiscovery?: DeviceDiscovery;
  /** Give QEMU guests the guest agent's channel (restore fix-ups, `embers exec`). Off only to
   * make VMs like those of embers before the agent (tests of old snapshots). @default true */
  guestAgent?: boolean;
  /** Progress lines (image pulls, kit builds). */
  onProgress?: (msg: string) => void;
}

export interface RunOptions {
  /** Instance name. @default fn-<random> */
  name?: string;
  /** Ready timeout in ms. @default config.readyTimeoutMs */
  readyTimeoutMs?: number;
}

export type InstanceStatus = 'running' | 'paused' | 'exited' | 'unknown';

export interface InstanceSummary {
  name: string;
  status: InstanceStatus;
  cloneIp: string;
  port: number;
  image: string;
  origin: string;
  createdAt: string;
}

/** Host programs embers runs, with the Debian package that has each. */
const HOST_TOOLS: Record<string, string> = {
  'qemu-system-x86_64': 'qemu-system-x86',
  ip: 'iproute2',
  nft: 'nftables',
  'mkfs.ext4': 'e2fsprogs',
  debugfs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  rsync: 'rsync',
  cp: 'coreutils',
  unshare: 'util-linux',
  mount: 'mount',
  losetup: 'mount',
};

/**
 * One embers node: its home, images, network slots and instances. Every resource a step
 * creates is owned by the instance (released by `stop`) or, while the step runs, by a
 * Cleanup that releases it on failure; `open()` reconciles leftovers of a crash.
 */
export class EmbersNode {
  readonly config: Config;
  readonly images: ImageStore;
  readonly pool: SlotPool;
  readonly instances: InstanceStore;
  readonly snapshots: SnapshotService;
  readonly remote: RemoteSnapshots;
  /** The hypervisor driver this node uses (chosen in `open`). */
  readonly driver: HypervisorDriver;
  /** Why this node's VMM was chosen. */
  readonly driverReason: string;
  private readonly kits: GuestKits;
  private readonly refill: PoolRefill;
  private readonly launcher: Launcher;

  private constructor(
    private readonly opts: NodeOptions,
    config: Config,
    chosen: { driver: HypervisorDriver; reason: string },
  ) {
    this.config = config;
    this.driver = chosen.driver;
    this.driverReason = chosen.reason;
    const onProgress = opts.onProgress; // the caller's sink, handed straight to the services
    this.images = new ImageStore(config.paths.images, config.paths.tmp);
    this.pool = new SlotPool({ dir: config.paths.net, home: config.home, poolSize: opts.netPoolSize });
    this.instances = new InstanceStore(config.paths.instances);
    this.remote = new RemoteSnapshots(opts);
    this.kits = new GuestKits({
      cacheDir: config.paths.guestCache,
      defaultKind: opts.guestKernel ?? 'debian',
      onProgress,
    });
    this.refill = new PoolRefill(this.pool, onProgress);
    this.launcher = new Launcher({
      driver: this.driver,
      pool: this.pool,
      instances: this.instances,
      kits: this.kits,
      refill: this.refill,
      readyTimeoutMs: config.readyTimeoutMs,
      warn: (msg) => onProgress?.(msg),
    });
    this.snapshots = new SnapshotService({
      snapshotsDir: config.paths.snapshots,
      restoreDir: join(config.home, 'restore'),
      tmpDir: config.paths.tmp,
      instances: this.instances,
      images: this.images,
      driver: this.driver,
      kits: this.kits,
      launcher: this.launcher,
      remote: this.remote,
      cacheDir: config.cacheDir,
      onProgress,
    });
  }

  static async open(opts: NodeOptions = {}): Promise<EmbersNode> {
    if (process.getuid?.() !== 0) throw EmbersError.of('EMB_NOT_ROOT', {});
    const config = resolveConfig(opts);
    const fc = config.firecracker;
    const chosen = await selectDriver({
      vmm: opts.vmm,
      firecrackerBin: opts.firecrackerBin,
      accel: config.accel,
      qemu: { cpuModel: opts.qemuCpuModel, deviceDiscovery: opts.deviceDiscovery, agent: opts.guestAgent },
      firecracker: { jailer: fc.jailer, vsockCid: fc.vsockCid, diffSnapshots: fc.diffSnapshots },
    });
    const node = new EmbersNode(opts, config, chosen);
    for (const dir of Object.values(node.config.paths)) await mkdir(dir, { recursive: true });
    await node.reconcile();
    return node;
  }

  progressLine(msg: string): void {
    this.opts.onProgress?.(msg);
  }

  /** The guest kernel and initramfs (built once, then cached outside the home). */
  async guestKit(kind: GuestKit['kind'] = this.kits.defaultKind): Promise<GuestKit> {
    return this.kits.get(kind);
  }

  /** What this host offers: accelerator and why, hypervisors, host tools. */
  async doctor(): Promise<Record<string, unknown>> {
    const accel = await this.driver.accelerator();
    const tools: Record<string, string> = {};
    for (const [tool, pkg] of Object.entries(HOST_TOOLS))
      tools[tool] = (await which(tool)) ?? `missing (apt-get install ${pkg})`;
    let vmmVersion: string;
    try {
      vmmVersion = await this.driver.version();
    } catch (err) {
      vmmVersion = `unavailable: ${(err as Error).message}`;
    }
    return {
      home: this.config.home,
      accelerator: accel.accelerator,
      acceleratorReason: accel.reason,
      vmm: this.driver.kind,
      vmmReason: this.driverReason,
      vmmVersion,
      firecracker: await probeFirecrackers({
        firecrackerBin: this.opts.firecrackerBin,
        usedBinary: await firecrackerBinaryOf(this.driver),
        vmm: this.opts.vmm,
        accel: this.config.accel,
      }),
      network: await this.pool.stats(),
      tools,
    };
  }

  /** Boots a function microVM and waits until it answers on its port. */
  async run(fn: FunctionSpec, opts: RunOptions = {}): Promise<InstanceRecord> {
    const name = opts.name ?? `fn-${randomBytes(3).toString('hex')}`;
    validateInstanceName(name);
    validateFunctionSpec(fn);
    const t0 = performance.now();
    const image = await this.images.ensure(fn.image, { onProgress: (m) => this.progressLine(m) });
    const imageMs = roundMs(performance.now() - t0);
    const record = await this.launcher.launch({
      kind: 'boot',
      name,
      fn,
      image,
      startedAt: t0,
      readyTimeoutMs: opts.readyTimeoutMs,
    });
    record.timings.phases = { imageMs, ...record.timings.phases };
    return record;
  }

  /** One HTTP request to an instance's function. */
  async invoke(name: string, req: InvokeRequest = {}): Promise<InvokeResponse> {
    const rec = await this.instances.get(name);
    try {
      return await httpRequest(rec.cloneIp, rec.function.port, req);
    } catch (err) {
      throw EmbersError.of('EMB_INSTANCE_INVOKE_FAILED', {
        name,
        ip: rec.cloneIp,
        port: rec.function.port,
        path: req.path ?? '/',
        reason: (err as Error).message,
      });
    }
  }

  async list(): Promise<InstanceSummary[]> {
    const out: InstanceSummary[] = [];
    for (const { record } of await this.instances.scan()) {
      if (!record) continue;
      const state = await this.driver.status(record.vm);
      out.push({
        name: record.name,
        status: state === 'stopped' ? 'exited' : state,
        cloneIp: record.cloneIp,
        port: record.function.port,
        image: record.image.reference,
        origin: record.origin,
        createdAt: record.createdAt,
      });
    }
    return out;
  }

  async logs(name: string): Promise<string> {
    const rec = await this.instances.get(name);
    return readFile(rec.vm.consoleLog, 'utf8').catch(() => '');
  }

  /**
   * Runs a command in an instance's guest through the guest agent: in the function's root (or
   * the kit's with `kitRoot`), no shell unless `shell` (then argv[0] is a script for the kit's
   * busybox sh). Output is streamed to the callbacks; the agent kills the command's process
   * group at `timeoutMs` (state 'timeout').
   */
  async exec(name: string, opts: ExecOptions): Promise<ExitStatus> {
    const rec = await this.instances.get(name);
    if (!rec.vm.agent) {
      throw EmbersError.of(
        'EMB_GUEST_AGENT_UNREACHABLE',
        { name },
        {
          hint: 'start a new instance (embers run) or restore from a snapshot made since; `embers logs` shows the console',
        },
      );
    }
    return agentExec(rec.vm.agent, opts);
  }

  /** Stops the VM and releases everything the instance owns: process, slot, disk, files. */
  async stop(name: string): Promise<void> {
    await this.launcher.stop(name);
  }

  /** Stops every instance, concurrently. */
  async stopAll(): Promise<string[]> {
    const names = (await this.instances.scan()).filter((e) => e.record).map((e) => e.name);
    const results = await Promise.allSettled(names.map((name) => this.stop(name)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return names;
  }

  /** Tops the slot pool up in the background, off the start path. */
  scheduleRefill(): void {
    this.refill.schedule();
  }

  /** Waits for background work (pool refills) to finish. */
  async settle(): Promise<void> {
    await this.refill.settle();
  }

  /** Manifest digests that instances and snapshots of this node still need (for image rm/gc). */
  async imageDigestsInUse(): Promise<string[]> {
    const digests = new Set<string>();
    for (const { record } of await this.instances.scan()) if (record) digests.add(record.image.manifestDigest);
    for (const m of await this.snapshots.store.list()) digests.add(m.image.manifestDigest);
    return [...digests];
  }

  /** Tears the slot pool down if no instance (running or being created) is left. */
  async downIfIdle(): Promise<boolean> {
    await this.settle();
    if ((await this.instances.scan()).length > 0) return false;
    await this.pool.teardown();
    return true;
  }

  /** Stops every instance, tears the slot pool down and gives the node's index back; returns the names stopped. */
  async down(): Promise<string[]> {
    await this.settle();
    const stopped = await this.stopAll();
    await this.pool.teardown();
    return stopped;
  }

  /**
   * Repairs what a crash left: instance dirs without a record whose creating process is gone
   * (their VMM, if any, is killed and their slot released), temp files of dead processes,
   * slot leases nobody holds, and netns/veths that no slot record explains.
   */
  async reconcile(): Promise<void> {
    const live = new Set<string>();
    for (const { name, record } of await this.instances.scan()) {
      if (record) {
        live.add(name);
        continue;
      }
      if (await this.instances.beingCreatedElsewhere(name)) {
        live.add(name); // still being created by another embers process
        continue;
      }
      await killProcessesMentioning(this.instances.dirOf(name));
      await this.instances.remove(name);
    }
    // a snapshot killed midway may have left its VM paused: it runs again
    for (const name of await this.instances.abandonedSnapshots()) {
      if (live.has(name)) {
        const rec = await this.instances.get(name);
        if ((await this.driver.status(rec.vm).catch(() => 'unknown')) === 'paused')
          await this.driver.resume(rec.vm).catch(() => undefined);
      }
      await this.instances.clearAbandonedSnapshot(name);
    }
    await this.pool.reconcile(live);
    await this.images.reconcile();
    await this.snapshots.reconcile();
    await reconcileTmp(this.config.paths.tmp);
  }
}

/**
 * Work files in the home's tmp dir are named `<what>-<pid>-…` by the process that owns them;
 * those of dead processes go, after unmounting anything a crash left mounted inside them
 * (the rsync disk diff loop-mounts disks there).
 */
async function reconcileTmp(tmp: string): Promise<void> {
  for (const name of await readdir(tmp).catch(() => [] as string[])) {
    const pid = Number(/^[a-z-]+?-(\d+)-/.exec(name)?.[1]);
    if (!pid || (await pidAlive(pid))) continue;
    const path = join(tmp, name);
    const mounts = (await readFile('/proc/mounts', 'utf8'))
      .split('\n')
      .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
      .filter((m): m is string => !!m && m.startsWith(`${path}/`))
      .sort((a, b) => b.length - a.length); // innermost first
    for (const m of mounts) await run('umount', [m]).catch(() => run('umount', ['-l', m]));
    await rm(path, { recursive: true, force: true });
  }
}

/** Kills every process whose command line mentions `path` (a VMM left by a crashed run). */
async function killProcessesMentioning(path: string): Promise<void> {
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const cmd = await pidCmdline(pid);
    if (cmd?.some((a) => a.includes(`${path}/`))) await terminate(pid).catch(() => undefined);
  }
}

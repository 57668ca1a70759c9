import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveConfig, type Config, type ConfigOptions } from '../config.js';
import { EmbersError } from '../errors.js';
import { withCleanup } from '../util/cleanup.js';
import { run, which } from '../util/exec.js';
import { cloneDisk, type CloneMethod } from '../disk/clone.js';
import { ensureGuestKit, type GuestKit } from '../guest/kit.js';
import { kernelCmdline } from '../guest/kernel-cmdline.js';
import { buildInstanceInitrd } from '../guest/run-config.js';
import { ImageStore } from '../image/store.js';
import type { FlattenedImage } from '../image/types.js';
import { GUEST_NET } from '../net/addressing.js';
import { SlotPool } from '../net/pool.js';
import type { DeviceDiscovery, HypervisorDriver, VmHandle, VmSpec, VmTimings } from '../vmm/driver.js';
import { selectDriver } from '../vmm/select.js';
import { pidAlive, pidCmdline, terminate } from '../vmm/process.js';
import { InstanceStore, validateInstanceName, type FunctionSpec, type InstanceRecord } from './instances.js';
import { RemoteSnapshots, type RemoteOptions } from './remote.js';
import { SnapshotService } from './snapshots.js';
import { httpRequest, waitUntilServing, type InvokeRequest, type InvokeResponse } from './invoke.js';
import { phaseTimer, roundMs } from '../util/format.js';

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
  /** Progress lines (image pulls, kit builds). */
  onProgress?: (msg: string) => void;
}

export interface RunOptions {
  /** Instance name. @default fn-<random> */
  name?: string;
  /** Ready timeout in ms. @default config.readyTimeoutMs */
  readyTimeoutMs?: number;
}

/** What differs between a boot and a restore (see `EmbersNode.launch`). */
export interface LaunchPlan {
  name: string;
  fn: FunctionSpec;
  image: InstanceRecord['image'];
  /** 'boot' or the snapshot id. */
  origin: string;
  /** The disk the instance's own disk is cloned from: the rootfs, or a snapshot's restored disk. */
  baseDisk: string;
  /** How the instance's disk relates to the rootfs, given how it was cloned from baseDisk. */
  diskMethod: (cloned: CloneMethod) => CloneMethod;
  /** performance.now() when the start was asked for: readyMs counts from there. */
  startedAt: number;
  readyTimeoutMs?: number;
  /** The initramfs for this instance (a boot builds one with its run config). */
  initrd: (dir: string) => Promise<string>;
  /** Starts the VMM: boot, or load a snapshot. */
  start: (spec: VmSpec) => Promise<{ vm: VmHandle; timings: VmTimings }>;
  /** The guest kit. @default this node's (--guest-kernel) */
  kit?: GuestKit;
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
  /** Why this node's VMM was chosen. */
  driverReason = '';
  private driverRef: HypervisorDriver | undefined;
  private refilling: Promise<void> | undefined;
  private refillAgain = false;
  private readonly kits = new Map<GuestKit['kind'], GuestKit>();

  private constructor(private readonly opts: NodeOptions) {
    this.config = resolveConfig(opts);
    this.images = new ImageStore(this.config.paths.images, this.config.paths.tmp);
    this.pool = new SlotPool({ dir: this.config.paths.net, home: this.config.home, poolSize: opts.netPoolSize });
    this.instances = new InstanceStore(this.config.paths.instances);
    this.remote = new RemoteSnapshots(opts);
    this.snapshots = new SnapshotService(this);
  }

  /** The hypervisor driver this node uses (chosen in `open`). */
  get driver(): HypervisorDriver {
    if (!this.driverRef) throw new EmbersError('EMB_INTERNAL', 'the node has no driver yet: use EmbersNode.open()');
    return this.driverRef;
  }

  static async open(opts: NodeOptions = {}): Promise<EmbersNode> {
    if (process.getuid?.() !== 0) throw new EmbersError('EMB_NOT_ROOT', 'embers must run as root (network namespaces, tap devices, mounts)');
    const node = new EmbersNode(opts);
    const chosen = await selectDriver({
      vmm: opts.vmm,
      firecrackerBin: opts.firecrackerBin,
      accel: node.config.accel,
      qemu: { cpuModel: opts.qemuCpuModel, deviceDiscovery: opts.deviceDiscovery },
    });
    node.driverRef = chosen.driver;
    node.driverReason = chosen.reason;
    for (const dir of Object.values(node.config.paths)) await mkdir(dir, { recursive: true });
    await node.reconcile();
    return node;
  }

  progressLine(msg: string): void {
    this.opts.onProgress?.(msg);
  }

  /** The guest kernel and initramfs (built once, then cached outside the home). */
  async guestKit(kind: GuestKit['kind'] = this.opts.guestKernel ?? 'debian'): Promise<GuestKit> {
    let kit = this.kits.get(kind);
    if (!kit) {
      kit = await ensureGuestKit({ cacheDir: this.config.paths.guestCache, kind, onProgress: (m) => this.progressLine(m) });
      this.kits.set(kind, kit);
    }
    return kit;
  }

  /** What this host offers: accelerator and why, hypervisors, host tools. */
  async doctor(): Promise<Record<string, unknown>> {
    const accel = await this.driver.accelerator();
    const tools: Record<string, string> = {};
    for (const [tool, pkg] of Object.entries(HOST_TOOLS)) tools[tool] = (await which(tool)) ?? `missing (apt-get install ${pkg})`;
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
      network: await this.pool.stats(),
      tools,
    };
  }

  /** Boots a function microVM and waits until it answers on its port. */
  async run(fn: FunctionSpec, opts: RunOptions = {}): Promise<InstanceRecord> {
    const name = opts.name ?? `fn-${randomBytes(3).toString('hex')}`;
    validateInstanceName(name);
    const t0 = performance.now();
    const image = await this.images.ensure(fn.image, { onProgress: (m) => this.progressLine(m) });
    const imageMs = roundMs(performance.now() - t0);
    const kit = await this.guestKit();
    const record = await this.launch({
      name,
      fn,
      image: { reference: image.reference, manifestDigest: image.manifestDigest, rootfsSha256: image.rootfsSha256 },
      origin: 'boot',
      baseDisk: image.rootfsPath,
      diskMethod: (method) => method,
      startedAt: t0,
      readyTimeoutMs: opts.readyTimeoutMs,
      initrd: async (dir) => {
        const initrdPath = join(dir, 'initrd.img');
        await buildInstanceInitrd(kit.initrdPath, runConfigFor(image, fn, name), initrdPath);
        return initrdPath;
      },
      start: (spec) => this.driver.boot(spec),
    });
    record.timings.phases = { imageMs, ...record.timings.phases };
    return record;
  }

  /**
   * The steps every instance start shares, boot or restore: reserve the name, lease a network
   * slot, clone the disk, start the VMM in the slot, wait until the function answers, record
   * the instance. Everything is owned by a Cleanup until the record is saved, so a failure at
   * any step leaves nothing behind.
   */
  async launch(plan: LaunchPlan): Promise<InstanceRecord> {
    const kit = plan.kit ?? (await this.guestKit());
    const { phases, mark } = phaseTimer();
    return withCleanup(async (cleanup) => {
      const dir = await this.instances.reserve(plan.name);
      cleanup.add(`remove ${dir}`, () => this.instances.remove(plan.name));

      let t = performance.now();
      const lease = await this.pool.acquire(plan.name);
      cleanup.add(`release slot ${lease.slot.netns}`, () => this.pool.release(lease));
      mark('slotMs', t);

      t = performance.now();
      const diskPath = join(dir, 'disk.img');
      const diskMethod = plan.diskMethod(await cloneDisk(plan.baseDisk, diskPath));
      mark('diskMs', t);

      t = performance.now();
      const initrdPath = await plan.initrd(dir);
      mark('initrdMs', t);

      const spec: VmSpec = {
        name: plan.name,
        dir,
        kernelPath: kit.kernelPath,
        initrdPath,
        cmdline: kernelCmdline({ guestIp: GUEST_NET.guestIp, prefixLen: GUEST_NET.prefixLen, gatewayIp: GUEST_NET.gatewayIp }, [
          ...this.driver.guestKernelArgs,
        ]),
        diskPath,
        vcpus: plan.fn.vcpus,
        memoryMiB: plan.fn.memoryMiB,
        network: { netns: lease.slot.netns, tapName: GUEST_NET.tapName, guestMac: GUEST_NET.guestMac },
      };
      t = performance.now();
      const { vm, timings } = await plan.start(spec);
      cleanup.add(`stop VM ${plan.name}`, () => this.driver.stop(vm));
      mark('vmmMs', t);
      phases.vmmSpawnMs = roundMs(timings.spawnMs);
      phases.vmmLoadMs = roundMs(timings.loadMs);

      t = performance.now();
      await waitUntilServing(lease.slot.cloneIp, plan.fn.port, {
        timeoutMs: plan.readyTimeoutMs ?? this.config.readyTimeoutMs,
        died: async () =>
          (await pidAlive(vm.pid)) ? undefined : `the ${this.driver.kind} process exited; console tail:\n${await this.consoleTail(vm.consoleLog)}`,
      });
      mark('toReadyMs', t);

      const record: InstanceRecord = {
        name: plan.name,
        createdAt: new Date().toISOString(),
        function: plan.fn,
        image: plan.image,
        slot: lease.slot,
        cloneIp: lease.slot.cloneIp,
        diskPath,
        diskMethod,
        vm,
        kit: { kind: kit.kind, kernelVersion: kit.kernelVersion, cacheKey: kit.cacheKey },
        origin: plan.origin,
        timings: { phases, readyMs: roundMs(performance.now() - plan.startedAt) },
      };
      await this.instances.complete(record);
      this.scheduleRefill();
      return record;
    });
  }

  /** One HTTP request to an instance's function. */
  async invoke(name: string, req: InvokeRequest = {}): Promise<InvokeResponse> {
    const rec = await this.instances.get(name);
    try {
      return await httpRequest(rec.cloneIp, rec.function.port, req);
    } catch (err) {
      throw new EmbersError(
        'EMB_INSTANCE_INVOKE_FAILED',
        `request to ${name} (${rec.cloneIp}:${rec.function.port}${req.path ?? '/'}) failed: ${(err as Error).message}`,
        {
          name,
        },
      );
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

  /** Stops the VM and releases everything the instance owns: process, slot, disk, files. */
  async stop(name: string): Promise<void> {
    const rec = await this.instances.get(name);
    await this.driver.stop(rec.vm);
    await this.pool.release({ slot: rec.slot, owner: name });
    await this.instances.remove(name);
  }

  /** Stops every instance, concurrently. */
  async stopAll(): Promise<string[]> {
    const names = (await this.instances.scan()).filter((e) => e.record).map((e) => e.name);
    const results = await Promise.allSettled(names.map((name) => this.stop(name)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    return names;
  }

  /**
   * Tops the slot pool up in the background, off the start path (after a boot or restore took
   * slots from it). One refill runs at a time; a request during one runs another after it.
   */
  scheduleRefill(): void {
    if (this.refilling) {
      this.refillAgain = true;
      return;
    }
    this.refilling = (async () => {
      do {
        this.refillAgain = false;
        await this.pool.fill().catch((err: Error) => this.progressLine(`network pool refill failed: ${err.message}`));
      } while (this.refillAgain);
    })().finally(() => (this.refilling = undefined));
  }

  /** Waits for background work (pool refills) to finish. */
  async settle(): Promise<void> {
    while (this.refilling) await this.refilling;
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
    await this.pool.reconcile(live);
    await this.images.reconcile();
    await this.snapshots.reconcile();
    await reconcileTmp(this.config.paths.tmp);
  }

  private async consoleTail(path: string): Promise<string> {
    const text = await readFile(path, 'utf8').catch(() => '');
    return text.split('\n').slice(-25).join('\n');
  }
}

/** The guest's run config: the image's entrypoint/cmd/env/user/workdir with the function's overrides. */
function runConfigFor(image: FlattenedImage, fn: FunctionSpec, hostname: string) {
  const env = new Map<string, string>();
  for (const kv of [...image.config.env, ...fn.env]) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv);
  }
  const argv = fn.entrypoint ? [...fn.entrypoint, ...(fn.cmd ?? [])] : [...image.config.entrypoint, ...(fn.cmd ?? image.config.cmd)];
  if (argv.length === 0) {
    throw new EmbersError('EMB_CONFIG_INVALID', `image ${image.reference} has no entrypoint or cmd, and none was given`, { image: image.reference });
  }
  return { argv, env: [...env.values()], workingDir: image.config.workingDir || '/', user: image.config.user, hostname };
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

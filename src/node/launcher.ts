import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { withCleanup } from '../util/cleanup.js';
import { cloneDisk, type CloneMethod } from '../disk/clone.js';
import type { GuestKit } from '../guest/kit.js';
import { kernelCmdline } from '../guest/kernel-cmdline.js';
import { GUEST_NET } from '../net/addressing.js';
import type { SlotPool } from '../net/pool.js';
import type { HypervisorDriver, VmHandle, VmSpec, VmTimings } from '../vmm/driver.js';
import { pidAlive } from '../vmm/process.js';
import type { FunctionSpec } from './function-spec.js';
import type { GuestKits } from './guest-kits.js';
import type { InstanceRecord, InstanceStore } from './instances.js';
import { waitUntilServing } from './invoke.js';
import type { PoolRefill } from './pool-refill.js';
import { phaseTimer, roundMs } from '../util/format.js';

/** What differs between a boot and a restore (see `Launcher.launch`). */
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
  /** The guest kit. @default the node's (--guest-kernel) */
  kit?: GuestKit;
}

export interface LauncherDeps {
  driver: HypervisorDriver;
  pool: SlotPool;
  instances: InstanceStore;
  kits: GuestKits;
  refill: PoolRefill;
  /** How long a start waits for the function to answer, unless the request says. */
  readyTimeoutMs: number;
}

/**
 * Starts and stops instances. Every instance start, boot or restore, takes the same steps:
 * reserve the name, lease a network slot, clone the disk, start the VMM in the slot, wait
 * until the function answers, record the instance. Everything is owned by a Cleanup until
 * the record is saved, so a failure at any step leaves nothing behind.
 */
export class Launcher {
  constructor(private readonly deps: LauncherDeps) {}

  async launch(plan: LaunchPlan): Promise<InstanceRecord> {
    const { driver, pool, instances } = this.deps;
    const kit = plan.kit ?? (await this.deps.kits.get());
    const { phases, mark } = phaseTimer();
    return withCleanup(async (cleanup) => {
      const dir = await instances.reserve(plan.name);
      cleanup.add(`remove ${dir}`, () => instances.remove(plan.name));

      let t = performance.now();
      const lease = await pool.acquire(plan.name);
      cleanup.add(`release slot ${lease.slot.netns}`, () => pool.release(lease));
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
        cmdline: kernelCmdline({ guestIp: GUEST_NET.guestIp, prefixLen: GUEST_NET.prefixLen, gatewayIp: GUEST_NET.gatewayIp }, [...driver.guestKernelArgs]),
        diskPath,
        vcpus: plan.fn.vcpus,
        memoryMiB: plan.fn.memoryMiB,
        network: { netns: lease.slot.netns, tapName: GUEST_NET.tapName, guestMac: GUEST_NET.guestMac },
      };
      t = performance.now();
      const { vm, timings } = await plan.start(spec);
      cleanup.add(`stop VM ${plan.name}`, () => driver.stop(vm));
      mark('vmmMs', t);
      phases.vmmSpawnMs = roundMs(timings.spawnMs);
      phases.vmmLoadMs = roundMs(timings.loadMs);

      t = performance.now();
      await waitUntilServing(lease.slot.cloneIp, plan.fn.port, {
        timeoutMs: plan.readyTimeoutMs ?? this.deps.readyTimeoutMs,
        died: async () => ((await pidAlive(vm.pid)) ? undefined : `the ${driver.kind} process exited; console tail:\n${await consoleTail(vm.consoleLog)}`),
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
      await instances.complete(record);
      this.deps.refill.schedule();
      return record;
    });
  }

  /** Stops the VM and releases everything the instance owns: process, slot, disk, files. */
  async stop(name: string): Promise<void> {
    const rec = await this.deps.instances.get(name);
    await this.deps.driver.stop(rec.vm);
    await this.deps.pool.release({ slot: rec.slot, owner: name });
    await this.deps.instances.remove(name);
  }
}

async function consoleTail(path: string): Promise<string> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text.split('\n').slice(-25).join('\n');
}

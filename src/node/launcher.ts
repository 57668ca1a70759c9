import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { agentFixup } from '../guest/agent.js';
import { EmbersError } from '../errors.js';
import { withCleanup } from '../util/cleanup.js';
import { cloneDisk, type CloneMethod } from '../disk/clone.js';
import type { GuestKitKind } from '../guest/kit.js';
import { buildInstanceInitrd } from '../guest/run-config.js';
import type { FlattenedImage } from '../image/types.js';
import { kernelCmdline } from '../guest/kernel-cmdline.js';
import { GUEST_NET } from '../net/addressing.js';
import type { SlotPool } from '../net/pool.js';
import { SNAPSHOT_FILES, type SnapshotManifest } from '../snapshot/manifest.js';
import type { HypervisorDriver, PageServerOptions, VmHandle, VmSpec } from '../vmm/driver.js';
import {
  DEFAULT_RESTORE_HOOK_TIMEOUT_MS,
  functionOfSnapshot,
  runConfigFor,
  type FunctionSpec,
} from './function-spec.js';
import type { GuestKits } from './guest-kits.js';
import type { InstanceRecord, InstanceStore, RestoreFixup } from './instances.js';
import { waitUntilServing } from './invoke.js';
import type { PoolRefill } from './pool-refill.js';
import { phaseTimer, roundMs } from '../util/format.js';
import { crashPoint } from '../util/crash-point.js';
import { FilePageCache } from '../memory/page-cache.js';
import type { PageRange } from '../memory/working-set.js';

interface LaunchCommon {
  /** The instance's name. */
  name: string;
  /** performance.now() when the start was asked for: readyMs counts from there. */
  startedAt: number;
  /** @default the node's readyTimeoutMs */
  readyTimeoutMs?: number;
}

/** Boot a function from its flattened image: the rootfs is the disk's base, the image config and spec make the run config. */
export interface BootLaunch extends LaunchCommon {
  kind: 'boot';
  fn: FunctionSpec;
  image: FlattenedImage;
}

/** Restore a clone of a snapshot: its restored disk is the disk's base, the VMM loads its state and memory. */
export interface RestoreLaunch extends LaunchCommon {
  kind: 'restore';
  snapshot: SnapshotManifest;
  /** The snapshot's bundle dir (its state and memory files). */
  bundleDir: string;
  /** The snapshot's disk, materialised and checked (rootfs + delta), and how it was made from the rootfs. */
  disk: { path: string; method: CloneMethod };
  /** No restore fix-ups (benchmarks of their cost only). @default false */
  skipFixups?: boolean;
  /**
   * The snapshot's working set (REAP), verified, in before the VM resumes. 'page-cache': made
   * resident in the memory file's page cache (QEMU maps that file), read while the VMM starts
   * and loads its state, waited for before resume. 'page-server': the driver's page server
   * (Firecracker's `Uffd` backend) copies it into guest memory before the driver resumes the
   * VM, and serves the rest fault by fault. Absent: the VM faults its memory in page by page.
   */
  prefetch?: PrefetchLaunch;
}

/** How a restore gets its working set in: see RestoreLaunch.prefetch. */
export type PrefetchLaunch =
  | { via: 'page-cache'; tool: string; ranges: PageRange[] }
  | { via: 'page-server'; pageServer: PageServerOptions };

/** One instance start, as data: `Launcher.launch` interprets it. */
export type LaunchRequest = BootLaunch | RestoreLaunch;

export interface LauncherDeps {
  driver: HypervisorDriver;
  pool: SlotPool;
  instances: InstanceStore;
  kits: GuestKits;
  refill: PoolRefill;
  /** How long a start waits for the function to answer, unless the request says. */
  readyTimeoutMs: number;
  /** Where warnings go (e.g. a clone restored without the guest agent's fix-ups). */
  warn?: (msg: string) => void;
}

/**
 * Starts and stops instances. Every instance start, boot or restore, takes the same steps:
 * reserve the name, lease a network slot, clone the disk, start the VMM in the slot, wait
 * until the function answers, record the instance. Everything is owned by a Cleanup until
 * the record is saved, so a failure at any step leaves nothing behind.
 */
export class Launcher {
  constructor(private readonly deps: LauncherDeps) {}

  async launch(req: LaunchRequest): Promise<InstanceRecord> {
    const { driver, pool, instances } = this.deps;
    // a clone runs the kernel its snapshot's memory holds, with the function it was made of
    const kit = await this.deps.kits.get(req.kind === 'restore' ? kitKindOf(req.snapshot) : undefined);
    const fn = req.kind === 'boot' ? req.fn : functionOfSnapshot(req.snapshot);
    const { phases, mark } = phaseTimer();
    // the working set is read from the start, overlapping everything up to the resume
    const prefetching =
      req.kind === 'restore' && req.prefetch?.via === 'page-cache'
        ? prefetchWorkingSet(req.bundleDir, req.prefetch)
        : undefined;
    return withCleanup(async (cleanup) => {
      if (prefetching) cleanup.add('finish the working-set prefetch', () => prefetching.then(() => undefined));
      const dir = await instances.reserve(req.name);
      cleanup.add(`remove ${dir}`, () => instances.remove(req.name));

      let t = performance.now();
      const lease = await pool.acquire(req.name);
      cleanup.add(`release slot ${lease.slot.netns}`, () => pool.release(lease));
      mark('slotMs', t);

      t = performance.now();
      const diskPath = join(dir, 'disk.img');
      const cloned = await cloneDisk(req.kind === 'boot' ? req.image.rootfsPath : req.disk.path, diskPath);
      // a clone descends from the rootfs by reflink only if every step was a reflink
      const diskMethod: CloneMethod =
        req.kind === 'boot'
          ? cloned
          : cloned === 'reflink' && req.disk.method === 'reflink'
            ? 'reflink'
            : 'sparse-copy';
      mark('diskMs', t);

      t = performance.now();
      let initrdPath = kit.initrdPath; // a clone's memory already holds its init and run config
      if (req.kind === 'boot') {
        initrdPath = join(dir, 'initrd.img');
        await buildInstanceInitrd(kit.initrdPath, runConfigFor(req.image, req.fn, req.name), initrdPath);
      }
      mark('initrdMs', t);

      const spec: VmSpec = {
        name: req.name,
        dir,
        kernelPath: kit.kernelPath,
        initrdPath,
        cmdline: kernelCmdline(
          { guestIp: GUEST_NET.guestIp, prefixLen: GUEST_NET.prefixLen, gatewayIp: GUEST_NET.gatewayIp },
          [...driver.guestKernelArgs],
        ),
        diskPath,
        vcpus: fn.vcpus,
        memoryMiB: fn.memoryMiB,
        network: { netns: lease.slot.netns, tapName: GUEST_NET.tapName, guestMac: GUEST_NET.guestMac },
      };
      t = performance.now();
      const { vm, timings } =
        req.kind === 'boot'
          ? await driver.boot(spec)
          : await driver.restore(
              spec,
              {
                stateFile: join(req.bundleDir, SNAPSHOT_FILES.state),
                memoryFile: join(req.bundleDir, SNAPSHOT_FILES.memory),
              },
              {
                snapshotTapName: req.snapshot.guestNetwork.tapName,
                // the machine the snapshot was made on: manifests without these were all ACPI
                deviceDiscovery: req.snapshot.vmm.deviceDiscovery ?? 'acpi',
                snapshotDriveLayout:
                  req.snapshot.vmm.driveLayout === 'plain' ? undefined : req.snapshot.vmm.driveLayout,
                snapshotHasVsock: req.snapshot.vmm.vsock,
                // snapshots older than the agent have no agent channel: the restored machine must not either
                snapshotHasAgent: req.snapshot.vmm.agent ?? false,
                resume: prefetching ? false : undefined,
                pageServer: req.prefetch?.via === 'page-server' ? req.prefetch.pageServer : undefined,
              },
            );
      cleanup.add(`stop VM ${req.name}`, () => driver.stop(vm));
      await crashPoint('instance.launch.after-vmm-start');
      mark('vmmMs', t);
      phases.vmmSpawnMs = roundMs(timings.spawnMs);
      phases.vmmLoadMs = roundMs(timings.loadMs);
      if (prefetching) {
        t = performance.now();
        const done = await prefetching;
        if ('error' in done) throw done.error;
        mark('prefetchWaitMs', t); // how long the loaded VM waited for the working set
        phases.prefetchMs = roundMs(done.ms); // how long reading the working set took, overlapped
        t = performance.now();
        await driver.resume(vm);
        mark('resumeMs', t);
      }

      // before the clone is reported ready or gets traffic: the guest's clock, RNG and restore hook
      let fixup: RestoreFixup | undefined;
      if (req.kind === 'restore' && !req.skipFixups) {
        t = performance.now();
        fixup = await restoreFixups(vm, fn, req.snapshot, this.deps.warn);
        mark('fixupMs', t);
      }

      t = performance.now();
      await waitUntilServing(lease.slot.cloneIp, fn.port, {
        timeoutMs: req.readyTimeoutMs ?? this.deps.readyTimeoutMs,
        vm: { pid: vm.pid, consoleLog: vm.consoleLog, kind: driver.kind },
      });
      mark('toReadyMs', t);

      const record: InstanceRecord = {
        name: req.name,
        createdAt: new Date().toISOString(),
        function: fn,
        image:
          req.kind === 'boot'
            ? imageOf(
                req.image.reference,
                req.image.manifestDigest,
                req.image.rootfsSha256,
                req.image.config.restoreHook,
              )
            : imageOf(
                req.snapshot.image.reference,
                req.snapshot.image.manifestDigest,
                req.snapshot.image.rootfsSha256,
                req.snapshot.image.restoreHook,
              ),
        slot: lease.slot,
        cloneIp: lease.slot.cloneIp,
        diskPath,
        diskMethod,
        vm,
        kit: { kind: kit.kind, kernelVersion: kit.kernelVersion, cacheKey: kit.cacheKey },
        origin: req.kind === 'boot' ? 'boot' : req.snapshot.id,
        timings: { phases, readyMs: roundMs(performance.now() - req.startedAt) },
        ...(fixup ? { fixup } : {}),
      };
      await instances.complete(record);
      this.deps.refill.schedule();
      return record;
    });
  }

  /** Refuses, before anything is taken, `count` starts at once that this node's network slots cannot hold. */
  async checkRoom(count: number): Promise<void> {
    if (!Number.isInteger(count) || count < 1) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        { option: '--count', value: count, expected: 'a whole number ≥ 1' },
        { hint: 'pass --count 1 or more' },
      );
    }
    const room = await this.deps.pool.room();
    if (count > room) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        {
          option: '--count',
          value: count,
          problem: `instances cannot start at once: this node has network slots (clone IPs) for ${room} more`,
          room,
        },
        { hint: `pass --count ${room} or less, or stop instances you no longer need (\`embers ps\` lists them)` },
      );
    }
  }

  /** Stops the VM and releases everything the instance owns: process, slot, disk, files. */
  async stop(name: string): Promise<void> {
    const rec = await this.deps.instances.get(name);
    await this.deps.driver.stop(rec.vm);
    await this.deps.pool.release({ slot: rec.slot, owner: name });
    await this.deps.instances.remove(name);
  }
}

function imageOf(
  reference: string,
  manifestDigest: string,
  rootfsSha256: string,
  restoreHook?: { path: string; timeoutMs?: number },
): InstanceRecord['image'] {
  return { reference, manifestDigest, rootfsSha256, ...(restoreHook ? { restoreHook } : {}) };
}

/** Host entropy handed to every clone's kernel RNG. */
const FIXUP_ENTROPY_BYTES = 64;

/**
 * The restore fix-ups, through the guest agent: the wall clock from the host, fresh entropy
 * (and a CRNG reseed), then the function's restore hook. A snapshot made before the agent
 * existed restores without them, with a warning; a hook that fails fails the restore.
 */
async function restoreFixups(
  vm: VmHandle,
  fn: FunctionSpec,
  snapshot: SnapshotManifest,
  warn?: (msg: string) => void,
): Promise<RestoreFixup> {
  // the function spec's hook, else the one the image declares in its labels
  const declared = fn.restoreHook ?? snapshot.image.restoreHook;
  if (!snapshot.vmm.agent || !vm.agent) {
    warn?.(
      `warning: snapshot ${snapshot.id} has no guest agent (made before embers had one): clone ${vm.name} keeps the snapshot's clock and RNG state` +
        `${declared ? ` and its restore hook ${declared.path} does not run` : ''}; create a new snapshot to get restore fix-ups`,
    );
    return { agent: false };
  }
  const hook = declared
    ? { path: declared.path, timeoutMs: declared.timeoutMs ?? DEFAULT_RESTORE_HOOK_TIMEOUT_MS }
    : undefined;
  const r = await agentFixup(vm.agent, { entropy: randomBytes(FIXUP_ENTROPY_BYTES), hook });
  if (hook && !(r.hook.state === 'exited' && r.hook.code === 0)) {
    throw EmbersError.of('EMB_RESTORE_HOOK_FAILED', {
      instance: vm.name,
      hook: hook.path,
      state: r.hook.state,
      code: r.hook.code,
      output: r.hook.output,
      timeoutMs: hook.timeoutMs,
    });
  }
  return {
    agent: true,
    clockStepMs: Number(r.clockStepNs / 1000n) / 1000,
    entropyBytes: r.entropyAdded ? FIXUP_ENTROPY_BYTES : 0,
    crngReseeded: r.crngReseeded,
    ...(hook ? { hook: { path: hook.path, state: r.hook.state, code: r.hook.code } } : {}),
  };
}

/** The guest kit a snapshot's memory was made with. */
export function kitKindOf(m: SnapshotManifest): GuestKitKind {
  return m.guestKit.kind === 'firecracker-config' ? 'firecracker-config' : 'debian';
}

/** Reads a working set into the memory file's page cache; never rejects (the error is returned, so a failure elsewhere leaves no unhandled rejection). */
async function prefetchWorkingSet(
  bundleDir: string,
  prefetch: { tool: string; ranges: PageRange[] },
): Promise<{ ms: number; bytes: number } | { error: unknown }> {
  const t0 = performance.now();
  try {
    const bytes = await new FilePageCache(prefetch.tool, join(bundleDir, SNAPSHOT_FILES.memory)).prefetch(
      prefetch.ranges,
    );
    return { ms: performance.now() - t0, bytes };
  } catch (error) {
    return { error };
  }
}

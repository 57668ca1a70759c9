import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../../errors.js';
import { detectAccelerator } from '../accel.js';
import type {
  Accelerator,
  DriveLayoutKind,
  HypervisorDriver,
  VmHandle,
  VmSnapshotFiles,
  VmSpec,
  VmState,
  VmTimings,
} from '../driver.js';
import { pidCommandMentions, terminate } from '../process.js';
import type { SnapshotLoadParams } from './api-types.js';
import { FirecrackerBinary } from './binary.js';
import { FirecrackerClient } from './client.js';
import { firecrackerId, vmLayout, type VmLayout } from './layout.js';
import {
  resolveFirecrackerOptions,
  type FirecrackerDriverOptions,
  type FirecrackerPageServer,
  type FirecrackerRestoreOptions,
  type FirecrackerSnapshotFiles,
  type FirecrackerSnapshotOptions,
  type ResolvedFirecrackerOptions,
} from './options.js';
import { failureTail, startFirecracker, stopFirecracker, type RunningFirecracker, type StopStep } from './process.js';
import { startUffdHandler, type UffdHandler } from './uffd-handler.js';
import { checkSnapshotFormat, readSnapshotFormatVersion } from './version.js';

export type {
  FirecrackerDriverOptions,
  FirecrackerPageServer,
  FirecrackerRestoreOptions,
  FirecrackerSnapshotFiles,
  FirecrackerSnapshotOptions,
} from './options.js';

/** The guest NIC and drive ids: one of each per VM, as in the QEMU driver. */
export const IFACE_ID = 'eth0';
export const DRIVE_ID = 'vda';

/** The same error with the tail of the VMM's output added (an error's details are never changed after the fact). */
function withTail(err: EmbersError, tail: string): EmbersError {
  return err.within(undefined, { tail }, { cause: err.cause });
}

/**
 * The Firecracker driver: one Firecracker process per VM, configured over its REST API
 * (types generated from the vendored spec), in the slot's netns and a private mount
 * namespace (or the jailer). Guest RAM is anonymous after a boot; snapshots are Firecracker
 * snapshots (state file + memory file); restores load them into a fresh process.
 */
export class FirecrackerDriver implements HypervisorDriver {
  readonly kind = 'firecracker' as const;
  /** Firecracker exits when the guest reboots (i8042 reset): the guest halts that way. */
  readonly guestKernelArgs: readonly string[] = ['embers.halt=reboot'];
  readonly options: ResolvedFirecrackerOptions;
  private readonly bin: FirecrackerBinary;

  constructor(opts: FirecrackerDriverOptions = {}) {
    this.options = resolveFirecrackerOptions(opts);
    this.bin = new FirecrackerBinary(this.options.binary);
  }

  /** The drive layout of every VM of this driver: the jail when the jailer is configured. */
  get driveLayout(): DriveLayoutKind {
    return this.options.jailer ? 'jail' : 'mount-namespace';
  }

  /** Firecracker runs only on KVM; the reason says whether this host's KVM is hardware-backed. */
  async accelerator(): Promise<{ accelerator: Accelerator; reason: string }> {
    const probe = await detectAccelerator('auto');
    return {
      accelerator: 'kvm',
      reason: probe.accelerator === 'kvm' ? probe.reason : `Firecracker needs hardware-backed KVM, but ${probe.reason}`,
    };
  }

  /** The binary this driver runs (resolved on PATH when given as a name). */
  binary(): Promise<string> {
    return this.bin.resolve();
  }

  /** The binary's version, "1.16.1" (`firecracker --version`). */
  async version(): Promise<string> {
    return (await this.bin.readVersions()).binary;
  }

  /** The snapshot data format this binary writes and loads, "8.0.0" (`--snapshot-version`). Record it in snapshot manifests. */
  async snapshotVersion(): Promise<string> {
    return (await this.bin.readVersions()).snapshot;
  }

  /**
   * Refuses (EMB_SNAPSHOT_VERSION_MISMATCH, naming both) a snapshot whose recorded data
   * format version this binary cannot load. For the orchestrator, before it fetches or
   * prepares anything; `restore` checks the state file's own header again.
   */
  async snapshotFormat(): Promise<string> {
    return this.snapshotVersion();
  }

  async checkSnapshotFormat(recorded: string, source?: string): Promise<void> {
    return this.checkSnapshotVersion(recorded, source);
  }

  async checkSnapshotVersion(recordedSnapshotVersion: string, source?: string): Promise<void> {
    const v = await this.bin.readVersions();
    checkSnapshotFormat(recordedSnapshotVersion, v.snapshot, {
      binary: await this.bin.resolve(),
      binaryVersion: v.binary,
      source,
    });
  }

  /** Boots a VM: `configure`, then InstanceStart. */
  async boot(spec: VmSpec): Promise<{ vm: VmHandle; timings: VmTimings }> {
    const configured = await this.configure(spec);
    const t1 = performance.now();
    await this.instanceStart(configured.vm);
    return {
      vm: configured.vm,
      timings: { spawnMs: configured.timings.spawnMs, loadMs: configured.timings.loadMs + performance.now() - t1 },
    };
  }

  /**
   * Starts this VM's Firecracker (in its netns and mount namespace, or jailed) and sends the
   * whole boot configuration (logger, metrics, machine, kernel, drive, NIC, vsock), but not
   * InstanceStart: the process holds the VM's disk and tap open, the guest is not started.
   */
  async configure(spec: VmSpec): Promise<{ vm: VmHandle; timings: VmTimings }> {
    const o = this.options;
    const layout = this.layoutFor(spec, await this.bin.resolve());
    const vm = this.handle(spec, layout, '', o.vsockCid !== undefined);
    return this.launch(vm, layout, 'boot', async (fc) => {
      await configureLogging(fc, layout, o);
      await fc.client.call('PUT /machine-config', {
        body: { vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMiB, smt: false, track_dirty_pages: o.diffSnapshots },
      });
      await fc.client.call('PUT /boot-source', {
        body: { kernel_image_path: layout.fc.kernel, initrd_path: layout.fc.initrd, boot_args: spec.cmdline },
      });
      // The guest init mounts /dev/vda itself (no root= on the command line, as with QEMU).
      await fc.client.call('PUT /drives/{drive_id}', {
        params: { drive_id: DRIVE_ID },
        body: {
          drive_id: DRIVE_ID,
          path_on_host: layout.fc.drive,
          is_root_device: false,
          is_read_only: false,
          cache_type: 'Writeback',
        },
      });
      await fc.client.call('PUT /network-interfaces/{iface_id}', {
        params: { iface_id: IFACE_ID },
        body: { iface_id: IFACE_ID, host_dev_name: spec.network.tapName, guest_mac: spec.network.guestMac },
      });
      if (o.vsockCid !== undefined)
        await fc.client.call('PUT /vsock', { body: { guest_cid: o.vsockCid, uds_path: layout.fc.vsock } });
    });
  }

  /** Starts the guest of a `configure`d VM. On failure the process is stopped and its files removed. */
  async instanceStart(vm: VmHandle): Promise<void> {
    const layout = this.layoutFor(vm.spec);
    try {
      await this.client(vm).call('PUT /actions', { body: { action_type: 'InstanceStart' } });
    } catch (err) {
      await terminate(vm.pid, 1000).catch(() => undefined);
      await removeVmFiles(layout, vm.controlSocket);
      if (isEmbersError(err) && err.details.tail === undefined) throw withTail(err, await failureTail(layout.launch));
      throw err;
    }
  }

  /** Loads a snapshot into a fresh Firecracker process (only the logger and metrics are configured before the load). */
  async restore(
    spec: VmSpec,
    files: VmSnapshotFiles,
    opts: FirecrackerRestoreOptions = {},
  ): Promise<{ vm: VmHandle; timings: VmTimings }> {
    const o = this.options;
    // Refuse a format this binary cannot load before any process starts: a failed load is fatal to it.
    await this.checkSnapshotVersion(await readSnapshotFormatVersion(files.stateFile), files.stateFile);
    const layout = this.layoutFor(spec, await this.bin.resolve());
    if (opts.snapshotDriveLayout !== undefined && opts.snapshotDriveLayout !== layout.kind) {
      throw EmbersError.of(
        'EMB_SNAPSHOT_INCOMPATIBLE',
        {
          problem: 'drive-layout',
          stateFile: files.stateFile,
          snapshotDriveLayout: opts.snapshotDriveLayout,
          driveLayout: layout.kind,
          vm: spec.name,
        },
        {
          hint:
            opts.snapshotDriveLayout === 'jail'
              ? 'configure the jailer to restore this snapshot'
              : 'restore this snapshot without the jailer',
        },
      );
    }
    const hasVsock = opts.snapshotHasVsock ?? o.vsockCid !== undefined;
    const pageServer = opts.pageServer ? await startPageServer(spec, files, opts.pageServer) : undefined;
    const backend = pageServer
      ? { type: 'Uffd' as const, socketPath: pageServer.socketPath }
      : (opts.memoryBackend ?? { type: 'File' as const });
    const vm = this.handle(spec, layout, backend.type === 'File' ? files.memoryFile : '', hasVsock);
    const resume = opts.resume !== false;
    try {
      return await this.launch(vm, layout, 'restore', async (fc) => {
        await this.load(fc, spec, files, layout, opts, backend, hasVsock, pageServer ? false : resume);
        if (pageServer) {
          // REAP's order: the working set is in (or, lazily, the handshake done) before the guest runs.
          await pageServer.ready(opts.pageServer!.readyTimeoutMs ?? 60_000);
          if (resume) await fc.client.call('PATCH /vm', { body: { state: 'Resumed' } });
        }
      });
    } catch (err) {
      await pageServer?.stop().catch(() => undefined);
      throw err;
    }
  }

  private async load(
    fc: RunningFirecracker,
    spec: VmSpec,
    files: VmSnapshotFiles,
    layout: VmLayout,
    opts: FirecrackerRestoreOptions,
    backend: { type: 'File' } | { type: 'Uffd'; socketPath: string },
    hasVsock: boolean,
    resume: boolean,
  ): Promise<void> {
    const o = this.options;
    await configureLogging(fc, layout, o);
    const exposed = await layout.exposeSnapshot(files, backend.type === 'Uffd' ? backend.socketPath : undefined);
    const body: SnapshotLoadParams = {
      snapshot_path: exposed.stateFile,
      mem_backend:
        backend.type === 'File'
          ? { backend_type: 'File', backend_path: exposed.memoryFile }
          : { backend_type: 'Uffd', backend_path: exposed.uffdSocket! },
      resume_vm: resume,
    };
    if (opts.trackDirtyPages ?? o.diffSnapshots) body.track_dirty_pages = true;
    if (opts.snapshotTapName !== spec.network.tapName)
      body.network_overrides = [{ iface_id: IFACE_ID, host_dev_name: spec.network.tapName }];
    // Only a snapshot with a vsock device takes an override (Firecracker refuses one otherwise).
    if (hasVsock) body.vsock_override = { uds_path: layout.fc.vsock };
    // the guest's kvmclock moves on by the time the snapshot was stored; the agent then sets the wall clock
    if (o.clockRealtime) body.clock_realtime = true;
    try {
      await fc.client.call('PUT /snapshot/load', { body, timeoutMs: o.snapshotTimeoutMs });
    } catch (err) {
      // Firecracker treats a failed load as fatal: make sure the process is gone, then say why.
      await terminate(fc.pid, 1000).catch(() => undefined);
      const fault = isEmbersError(err, 'EMB_VMM_API_FAULT')
        ? (err.details.faultMessage ?? err.message)
        : isEmbersError(err)
          ? err.message
          : String(err);
      const t = await failureTail(layout.launch);
      throw EmbersError.of(
        'EMB_SNAPSHOT_LOAD_FAILED',
        {
          stateFile: files.stateFile,
          vm: spec.name,
          memoryBackend: backend,
          faultMessage: fault,
          method: 'PUT',
          path: '/snapshot/load',
          tail: t,
        },
        { cause: err },
      );
    }
  }

  async pause(vm: VmHandle): Promise<void> {
    await this.client(vm).call('PATCH /vm', { body: { state: 'Paused' } });
  }

  async resume(vm: VmHandle): Promise<void> {
    await this.client(vm).call('PATCH /vm', { body: { state: 'Resumed' } });
  }

  /**
   * Writes vmstate.bin + memory.bin into `outDir` (the VM must be paused). The result also
   * says which drive layout the state file's drive path belongs to and whether the VM has a
   * vsock device: a restore needs both (record them in the manifest).
   */
  async snapshot(
    vm: VmHandle,
    outDir: string,
    opts: FirecrackerSnapshotOptions = {},
  ): Promise<FirecrackerSnapshotFiles> {
    const type = opts.type ?? 'Full';
    if (type === 'Diff' && !this.options.diffSnapshots) {
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'diffSnapshots',
        value: false,
        problem: `leaves dirty page tracking off, and a Diff snapshot of ${vm.name} needs it: enable diffSnapshots in the Firecracker driver options (--fc-diff-snapshots)`,
      });
    }
    const api = this.client(vm);
    const info = await api.call('GET /', {});
    if (info.state !== 'Paused') {
      throw EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'not-paused', vm: vm.name, state: info.state });
    }
    const layout = this.layoutFor(vm.spec);
    const targets = layout.snapshotTargets(outDir);
    await api.call('PUT /snapshot/create', {
      body: { snapshot_type: type, snapshot_path: targets.stateFile, mem_file_path: targets.memoryFile },
      timeoutMs: this.options.snapshotTimeoutMs,
    });
    const files = await targets.collect();
    const vsock = vm.vsock ?? this.options.vsockCid !== undefined;
    return { ...files, driveLayout: layout.kind, vsock, agent: vsock };
  }

  async stop(vm: VmHandle): Promise<void> {
    await this.stopWithSteps(vm);
  }

  /** `stop`, returning the escalation steps it took. */
  async stopWithSteps(vm: VmHandle): Promise<StopStep[]> {
    const layout = this.layoutFor(vm.spec);
    const steps = (await this.isOurs(vm))
      ? await stopFirecracker(vm.pid, this.client(vm), {
          ctrlAltDelGraceMs: this.options.ctrlAltDelGraceMs,
          sigtermGraceMs: this.options.sigtermGraceMs,
        })
      : (['already-exited'] as StopStep[]);
    const leaked = await removeVmFiles(layout, vm.controlSocket);
    if (leaked.length > 0)
      throw EmbersError.of('EMB_VMM_CLEANUP_FAILED', {
        vm: vm.name,
        leaked,
        steps,
      });
    return steps;
  }

  async status(vm: VmHandle): Promise<VmState> {
    if (!(await this.isOurs(vm))) return 'stopped';
    try {
      const info = await this.client(vm).call('GET /', { timeoutMs: 3000 });
      return info.state === 'Running' ? 'running' : info.state === 'Paused' ? 'paused' : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  /** True if the handle's pid is alive and still this VM's Firecracker (pids are reused). */
  isOurs(vm: VmHandle): Promise<boolean> {
    return pidCommandMentions(vm.pid, firecrackerId(vm.spec));
  }

  /**
   * The VM's layout: paths as the host and as Firecracker see them, and its command line
   * (built with `binary`; stopping or inspecting a VM does not need the binary to exist).
   */
  layoutFor(spec: VmSpec, binary = this.options.binary): VmLayout {
    const o = this.options;
    return vmLayout(spec, { binary, netns: o.netns, mountNamespace: o.mountNamespace, jailer: o.jailer });
  }

  private handle(spec: VmSpec, layout: VmLayout, memoryFile: string, vsock: boolean): VmHandle {
    return {
      driveLayout: layout.kind,
      vsock,
      // the guest agent listens on vsock: reached through this VM's vsock socket (CONNECT <port>)
      ...(vsock ? { agent: { kind: 'vsock' as const, socket: layout.vsockHost } } : {}),
      kind: 'firecracker',
      name: spec.name,
      pid: 0,
      dir: spec.dir,
      accelerator: 'kvm',
      controlSocket: layout.launch.apiSocket,
      consoleLog: layout.launch.stdoutPath,
      vmmLog: layout.launch.stderrPath,
      memoryFile,
      spec,
    };
  }

  private async launch(
    vm: VmHandle,
    layout: VmLayout,
    mode: 'boot' | 'restore',
    configure: (fc: RunningFirecracker) => Promise<void>,
  ): Promise<{ vm: VmHandle; timings: VmTimings }> {
    await layout.prepare(mode);
    let fc: RunningFirecracker;
    try {
      fc = await startFirecracker(layout.launch, {
        startTimeoutMs: this.options.startTimeoutMs,
        apiTimeoutMs: this.options.apiTimeoutMs,
      });
    } catch (err) {
      await layout.cleanup();
      throw err;
    }
    vm.pid = fc.pid;
    try {
      const t1 = performance.now();
      await configure(fc);
      return { vm, timings: { spawnMs: fc.spawnMs, loadMs: performance.now() - t1 } };
    } catch (err) {
      await terminate(fc.pid, 1000).catch(() => undefined);
      await removeVmFiles(layout, layout.launch.apiSocket);
      if (isEmbersError(err) && err.code !== 'EMB_SNAPSHOT_LOAD_FAILED' && err.details.tail === undefined) {
        throw withTail(err, await failureTail(layout.launch));
      }
      throw err;
    }
  }

  private client(vm: VmHandle): FirecrackerClient {
    return new FirecrackerClient(vm.controlSocket, { timeoutMs: this.options.apiTimeoutMs });
  }
}

/** PUT /logger and /metrics: the only calls Firecracker accepts before a snapshot load. */
async function configureLogging(
  fc: RunningFirecracker,
  layout: VmLayout,
  o: ResolvedFirecrackerOptions,
): Promise<void> {
  await fc.client.call('PUT /logger', {
    body: { log_path: layout.fc.log, level: o.logLevel, show_level: true, show_log_origin: false },
  });
  await fc.client.call('PUT /metrics', { body: { metrics_path: layout.fc.metrics } });
}

/** Removes what a VM leaves on the host (API socket, vsock socket, the layout's own files); returns what could not be removed. */
async function removeVmFiles(layout: VmLayout, apiSocket: string): Promise<string[]> {
  await rm(apiSocket, { force: true });
  await rm(layout.vsockHost, { force: true });
  return layout.cleanup();
}

/** Starts the page server for a clone, in its directory (socket, counters, log), before Firecracker loads. */
async function startPageServer(spec: VmSpec, files: VmSnapshotFiles, p: FirecrackerPageServer): Promise<UffdHandler> {
  const mode = p.mode ?? (p.workingSet ? 'prefetch' : p.recordPath ? 'record' : 'lazy');
  return startUffdHandler({
    binary: p.binary,
    socketPath: join(spec.dir, 'uffd.sock'),
    memoryFile: files.memoryFile,
    statsPath: join(spec.dir, 'uffd-stats.json'),
    logPath: join(spec.dir, 'uffd.log'),
    readyPath: join(spec.dir, 'uffd.ready'),
    mode,
    workingSet: mode === 'prefetch' ? p.workingSet : undefined,
    recordPath: mode === 'record' ? p.recordPath : undefined,
    arriving: p.arriving,
  });
}

/**
 * Where one VM's files are, as the host sees them and as Firecracker sees them, and the
 * command line that starts its Firecracker. Two layouts (DriveLayoutKind), one per way of
 * running it:
 *
 * - `mount-namespace` (the default): host paths, except the drive, which is the fixed path
 *   bound to this VM's disk inside a private mount namespace.
 * - `jail`: the jailer's chroot; Firecracker sees IN_JAIL paths, files are linked in.
 *
 * There is no layout in which Firecracker sees the VM's disk at its own host path: a
 * snapshot records the drive path, and a clone restored from it would reopen the source
 * VM's disk (firecracker#4014). Both layouts give every VM the same drive path, which in
 * each VM's own view is its own disk.
 *
 * Optionally wrapped in `ip netns exec <slot netns>` (the jailer joins the netns itself).
 * Everything derives from the VmSpec and the driver options, so any later process can
 * rebuild a VM's layout from its handle.
 */
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { sha256 } from '../../util/fs.js';
import { EmbersError } from '../../errors.js';
import type { DriveLayoutKind, VmSnapshotFiles, VmSpec } from '../driver.js';
import {
  IN_JAIL,
  hostPathInJail,
  jailerCommand,
  moveOutOfJail,
  removeJail,
  stageIntoJail,
  touchInJail,
  type JailEntry,
  type JailerOptions,
  type JailPlan,
} from './jailer.js';
import { fixedDrivePath, prepareFixedDir, wrapInMountNamespace } from './mount-namespace.js';
import type { FirecrackerLaunch } from './process.js';

export interface LayoutOptions {
  binary: string;
  netns: boolean;
  /** The fixed dir of the mount-namespace layout (unused when `jailer` is set). */
  mountNamespace: false | { fixedDir: string };
  jailer: JailerOptions | undefined;
}

/** Paths as Firecracker sees them. */
export interface FirecrackerPaths {
  kernel: string;
  initrd: string;
  drive: string;
  log: string;
  metrics: string;
  vsock: string;
}

export interface VmLayout {
  kind: DriveLayoutKind;
  /** Firecracker's `--id`: [A-Za-z0-9-], at most 64 characters, unique per VM dir. */
  id: string;
  launch: FirecrackerLaunch;
  fc: FirecrackerPaths;
  /** Host path of the vsock socket. */
  vsockHost: string;
  /** Creates what Firecracker must find before it starts (log files, mount point, jail). */
  prepare(mode: 'boot' | 'restore'): Promise<void>;
  /** Paths for PUT /snapshot/create, and `collect` to put the files into `outDir`. */
  snapshotTargets(outDir: string): { stateFile: string; memoryFile: string; collect(): Promise<VmSnapshotFiles> };
  /** Makes snapshot files (and a uffd socket) visible to Firecracker; returns its paths. */
  exposeSnapshot(
    files: VmSnapshotFiles,
    uffdSocket?: string,
  ): Promise<{ stateFile: string; memoryFile: string; uffdSocket?: string }>;
  /** After the process is gone: removes what the layout created; returns paths it leaked. */
  cleanup(): Promise<string[]>;
}

export const HOST_FILES = {
  apiSocket: 'api.sock',
  console: 'console.log',
  stderr: 'vmm.log',
  log: 'firecracker.log',
  metrics: 'metrics.json',
  vsock: 'vsock.sock',
} as const;

export const STATE_FILE = 'vmstate.bin';
export const MEMORY_FILE = 'memory.bin';

/**
 * Firecracker's instance id for a VM: its name made safe, plus a hash of its dir (at most
 * 40 characters: it is part of the jail's socket path, which must fit a sockaddr_un).
 */
export function firecrackerId(spec: Pick<VmSpec, 'name' | 'dir'>): string {
  const safe = spec.name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 23) || 'vm';
  return `${safe}-${sha256(resolve(spec.dir)).slice(0, 16)}`;
}

export function vmLayout(spec: VmSpec, o: LayoutOptions): VmLayout {
  const id = firecrackerId(spec);
  const inDir = (name: string) => join(spec.dir, name);
  const what = `Firecracker for ${spec.name}`;
  if (o.jailer) return jailLayout(spec, o, o.jailer, id, what);

  const fixed = o.mountNamespace;
  if (!fixed) {
    throw EmbersError.of('EMB_INTERNAL', {
      during: what,
      problem: "neither the mount namespace nor the jailer is configured: a clone would reopen the source VM's disk",
      vm: spec.name,
    });
  }
  const fcArgs = ['--api-sock', inDir(HOST_FILES.apiSocket), '--id', id];
  let cmd: { command: string; args: string[] } = wrapInMountNamespace(o.binary, fcArgs, {
    fixedDir: fixed.fixedDir,
    diskPath: spec.diskPath,
  });
  if (o.netns) cmd = { command: 'ip', args: ['netns', 'exec', spec.network.netns, cmd.command, ...cmd.args] };
  return {
    kind: 'mount-namespace',
    id,
    launch: {
      what,
      ...cmd,
      apiSocket: inDir(HOST_FILES.apiSocket),
      stdoutPath: inDir(HOST_FILES.console),
      stderrPath: inDir(HOST_FILES.stderr),
      logPath: inDir(HOST_FILES.log),
      staleSockets: [inDir(HOST_FILES.vsock)],
    },
    fc: {
      kernel: spec.kernelPath,
      initrd: spec.initrdPath,
      drive: fixedDrivePath(fixed.fixedDir),
      log: inDir(HOST_FILES.log),
      metrics: inDir(HOST_FILES.metrics),
      vsock: inDir(HOST_FILES.vsock),
    },
    vsockHost: inDir(HOST_FILES.vsock),
    async prepare() {
      // Firecracker opens its log and metrics files, it does not create them.
      await writeFile(inDir(HOST_FILES.log), '', { flag: 'a' });
      await writeFile(inDir(HOST_FILES.metrics), '', { flag: 'a' });
      await prepareFixedDir(fixed.fixedDir);
    },
    snapshotTargets(outDir) {
      const files = { stateFile: join(outDir, STATE_FILE), memoryFile: join(outDir, MEMORY_FILE) };
      return { ...files, collect: async () => files };
    },
    async exposeSnapshot(files, uffdSocket) {
      return { stateFile: files.stateFile, memoryFile: files.memoryFile, uffdSocket };
    },
    async cleanup() {
      return [];
    },
  };
}

function jailLayout(spec: VmSpec, o: LayoutOptions, jailer: JailerOptions, id: string, what: string): VmLayout {
  const plan: JailPlan = jailerCommand(jailer, {
    id,
    firecrackerBin: o.binary,
    netns: o.netns ? spec.network.netns : undefined,
  });
  const host = (p: string) => hostPathInJail(plan, p);
  const cmd =
    o.netns && jailer.joinNetns === false
      ? { command: 'ip', args: ['netns', 'exec', spec.network.netns, plan.command, ...plan.args] }
      : { command: plan.command, args: plan.args };
  return {
    kind: 'jail',
    id,
    launch: {
      what,
      ...cmd,
      apiSocket: host(IN_JAIL.apiSocket),
      stdoutPath: join(spec.dir, HOST_FILES.console),
      stderrPath: join(spec.dir, HOST_FILES.stderr),
      logPath: host(IN_JAIL.log),
      staleSockets: [host(IN_JAIL.vsock)],
    },
    fc: {
      kernel: IN_JAIL.kernel,
      initrd: IN_JAIL.initrd,
      drive: IN_JAIL.rootfs,
      log: IN_JAIL.log,
      metrics: IN_JAIL.metrics,
      vsock: IN_JAIL.vsock,
    },
    vsockHost: host(IN_JAIL.vsock),
    async prepare(mode) {
      const entries: JailEntry[] = [{ host: spec.diskPath, inJail: IN_JAIL.rootfs, writable: true }];
      if (mode === 'boot') {
        entries.push(
          { host: spec.kernelPath, inJail: IN_JAIL.kernel, writable: false },
          { host: spec.initrdPath, inJail: IN_JAIL.initrd, writable: false },
        );
      }
      await stageIntoJail(plan, entries);
      await touchInJail(plan, [IN_JAIL.log, IN_JAIL.metrics]);
    },
    snapshotTargets(outDir) {
      const dest = { stateFile: join(outDir, STATE_FILE), memoryFile: join(outDir, MEMORY_FILE) };
      return {
        stateFile: IN_JAIL.snapshotState,
        memoryFile: IN_JAIL.snapshotMemory,
        collect: async () => {
          await moveOutOfJail(plan, IN_JAIL.snapshotState, dest.stateFile);
          await moveOutOfJail(plan, IN_JAIL.snapshotMemory, dest.memoryFile);
          return dest;
        },
      };
    },
    async exposeSnapshot(files, uffdSocket) {
      const entries: JailEntry[] = [
        { host: files.stateFile, inJail: IN_JAIL.snapshotState, writable: false },
        { host: files.memoryFile, inJail: IN_JAIL.snapshotMemory, writable: false },
      ];
      if (uffdSocket) entries.push({ host: uffdSocket, inJail: IN_JAIL.uffd, writable: true });
      await stageIntoJail(plan, entries);
      return {
        stateFile: IN_JAIL.snapshotState,
        memoryFile: IN_JAIL.snapshotMemory,
        uffdSocket: uffdSocket ? IN_JAIL.uffd : undefined,
      };
    },
    cleanup: () => removeJail(plan),
  };
}

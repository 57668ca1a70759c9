/**
 * The Firecracker driver's options, every one with its default, and the compiled form in
 * which nothing is undefined.
 */
import { release as osRelease } from 'node:os';
import { EmbersError } from '../../errors.js';
import { environment } from '../../config.js';
import type { Logger } from './api-types.js';
import type { DriveLayoutKind, PageServerOptions, RestoreOptions, VmSnapshotFiles } from '../driver.js';
import type { JailerOptions } from './jailer.js';
import type { UffdArrivingMemory, UffdHandlerMode } from './uffd-handler.js';
import { DEFAULT_FIXED_DIR } from './mount-namespace.js';

export interface FirecrackerDriverOptions {
  /** The firecracker binary (a path, or a name looked up on PATH).
   * @default EMBERS_FIRECRACKER_BIN ?? 'firecracker' */
  binary?: string;
  /** Run Firecracker inside the VM's netns (`ip netns exec <VmSpec.network.netns>`). Off only
   * to run a stand-in VMM directly in tests. @default true */
  netns?: boolean;
  /** The private mount namespace that makes every clone open its own disk at one fixed path
   * (see mount-namespace.ts). There is no way to turn it off except the jailer: without
   * either, a restored clone would reopen the snapshotted VM's disk.
   * @default { fixedDir: '/run/embers/fc' } */
  mountNamespace?: { fixedDir?: string };
  /** Start Firecracker through the jailer (chroot, uid/gid, cgroup v2); replaces the mount
   * namespace. @default undefined (no jailer) */
  jailer?: JailerOptions;
  /** Track dirty pages from boot (and after restores) so Diff snapshots can be taken.
   * @default false */
  diffSnapshots?: boolean;
  /** Give every VM a vsock device with this guest CID (host side: `<dir>/vsock.sock`).
   * @default undefined (no vsock) */
  vsockCid?: number;
  /** Pass `clock_realtime: true` on snapshot load: Firecracker advances kvmclock by the wall
   * time since the snapshot (KVM_CLOCK_REALTIME, x86_64 hosts with Linux 5.16 or later).
   * @default true where the host supports it (see hostSupportsClockRealtime) */
  clockRealtime?: boolean;
  /** Firecracker's log level. @default 'Info' */
  logLevel?: NonNullable<Logger['level']>;
  /** How long to wait for the API socket and its first answer, in ms. @default 10000 */
  startTimeoutMs?: number;
  /** Timeout of one API call, in ms. @default 10000 */
  apiTimeoutMs?: number;
  /** Timeout of PUT /snapshot/create and /snapshot/load, in ms. @default 120000 */
  snapshotTimeoutMs?: number;
  /** How long a running guest gets to reboot after SendCtrlAltDel, in ms. @default 3000 */
  ctrlAltDelGraceMs?: number;
  /** How long after SIGTERM before SIGKILL, in ms. @default 3000 */
  sigtermGraceMs?: number;
}

/** The options with every default applied. */
export interface ResolvedFirecrackerOptions {
  binary: string;
  netns: boolean;
  mountNamespace: false | { fixedDir: string };
  jailer: JailerOptions | undefined;
  diffSnapshots: boolean;
  vsockCid: number | undefined;
  clockRealtime: boolean;
  logLevel: NonNullable<Logger['level']>;
  startTimeoutMs: number;
  apiTimeoutMs: number;
  snapshotTimeoutMs: number;
  ctrlAltDelGraceMs: number;
  sigtermGraceMs: number;
}

/**
 * KVM_CLOCK_REALTIME (what `clock_realtime` asks Firecracker to pass to KVM_SET_CLOCK) came
 * with Linux 5.16, on x86_64 only.
 */
export function hostSupportsClockRealtime(release = osRelease(), arch = process.arch): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m || arch !== 'x64') return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 5 || (major === 5 && minor >= 16);
}

export function resolveFirecrackerOptions(opts: FirecrackerDriverOptions = {}): ResolvedFirecrackerOptions {
  if ((opts.mountNamespace as unknown) === false) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      {
        option: 'mountNamespace',
        value: false,
        problem:
          "is no longer supported: without the mount namespace (or the jailer) a restored clone reopens the snapshotted VM's own disk",
      },
      { hint: 'leave mountNamespace at its default, or configure the jailer' },
    );
  }
  const mountNs = opts.jailer ? false : { fixedDir: opts.mountNamespace?.fixedDir ?? DEFAULT_FIXED_DIR };
  return {
    binary: opts.binary ?? environment().firecracker.binary ?? 'firecracker',
    netns: opts.netns ?? true,
    mountNamespace: mountNs,
    jailer: opts.jailer,
    diffSnapshots: opts.diffSnapshots ?? false,
    vsockCid: opts.vsockCid,
    clockRealtime: opts.clockRealtime ?? hostSupportsClockRealtime(),
    logLevel: opts.logLevel ?? 'Info',
    startTimeoutMs: opts.startTimeoutMs ?? 10_000,
    apiTimeoutMs: opts.apiTimeoutMs ?? 10_000,
    snapshotTimeoutMs: opts.snapshotTimeoutMs ?? 120_000,
    ctrlAltDelGraceMs: opts.ctrlAltDelGraceMs ?? 3000,
    sigtermGraceMs: opts.sigtermGraceMs ?? 3000,
  };
}

export interface FirecrackerSnapshotOptions {
  /** Full: all guest memory. Diff: only pages dirtied since the last snapshot (needs
   * `diffSnapshots`); the memory file is sparse and must be layered on the previous one.
   * @default 'Full' */
  type?: 'Full' | 'Diff';
}

export interface FirecrackerPageServer extends PageServerOptions {
  /** @default 'prefetch' with a working set, 'record' with recordPath, else 'lazy' */
  mode?: UffdHandlerMode;
  /** record mode: where the working set's ranges go when the VM exits (or on SIGUSR1 to the page server). */
  recordPath?: string;
  /** The memory file is still arriving: its chunk list and the control socket a downloader (feedChunks) connects to. */
  arriving?: UffdArrivingMemory;
}

export interface FirecrackerRestoreOptions extends RestoreOptions {
  /** Resume the VM once loaded. @default true */
  resume?: boolean;
  /** How guest memory is served: mapped from the memory file (File), or by the page-fault
   * handler listening on `socketPath` (Uffd; the memory file is then not used by
   * Firecracker). @default { type: 'File' } */
  memoryBackend?: { type: 'File' } | { type: 'Uffd'; socketPath: string };
  /** Serve guest memory through the page server (native/uffd-handler.c) that the driver starts
   * for this clone, with a `Uffd` load: the way to restore a snapshot that has a working set
   * (prefetch: copied in before the VM resumes, REAP's order), whose memory file is still
   * arriving (each page only from a verified chunk), or to record a working set. Overrides
   * `memoryBackend`. The page server exits with the Firecracker process. @default none */
  pageServer?: FirecrackerPageServer;
  /** The tap the snapshot was taken with (the manifest's guestNetwork.tapName). A network
   * override is sent unless it is known to equal VmSpec.network.tapName. @default unknown */
  snapshotTapName?: string;
  /** Whether the snapshot has a vsock device (a snapshot of a VM booted with `vsockCid`, see
   * FirecrackerSnapshotFiles.vsock). Only then is `vsock_override` sent, re-pointing it at
   * this VM's socket; Firecracker refuses an override for a snapshot without vsock.
   * @default whether this driver gives VMs a vsock (`vsockCid` set) */
  snapshotHasVsock?: boolean;
  /** The drive layout the snapshot was taken with (FirecrackerSnapshotFiles.driveLayout, as
   * recorded in the manifest); a restore into the other layout is refused before any process
   * starts, since the recorded drive path means nothing there. @default unknown: not checked */
  snapshotDriveLayout?: DriveLayoutKind;
  /** Track dirty pages after the load (for a later Diff snapshot). @default `diffSnapshots` */
  trackDirtyPages?: boolean;
}

/** What a Firecracker snapshot produced, and what a restore of it must know (record both in the manifest). */
export interface FirecrackerSnapshotFiles extends VmSnapshotFiles {
  /** The kind of drive path the state file records (see DriveLayoutKind). */
  driveLayout: DriveLayoutKind;
  /** The snapshotted VM had a vsock device: restores must re-point it (`vsock_override`). */
  vsock: boolean;
}

import { join, resolve } from 'node:path';
import { EmbersError } from './errors.js';

/**
 * The one place for configuration. Every option has a documented default; `resolveConfig`
 * gives a compiled `Config` in which nothing is undefined.
 */
export interface ConfigOptions {
  /** The node's data directory: everything a node stores lives below it.
   * @default process.env.EMBERS_HOME ?? '/var/lib/embers' */
  home?: string;
  /** Build cache for the guest kit (kernel, initramfs), shared by all homes on a machine.
   * @default process.env.EMBERS_CACHE ?? '/var/cache/embers' */
  cacheDir?: string;
  /** Accelerator: 'auto' picks KVM when it is hardware-backed, TCG otherwise.
   * @default process.env.EMBERS_ACCEL ?? 'auto' */
  accel?: 'auto' | 'kvm' | 'tcg';
  /** How long `run` waits for the function to answer on its port, in ms.
   * @default 60000 */
  readyTimeoutMs?: number;
  /** Firecracker driver settings (used only when Firecracker is the VMM). @default see FirecrackerConfigOptions */
  firecracker?: FirecrackerConfigOptions;
}

/** How this node runs Firecracker. Each field also has an EMBERS_FC_* variable and a --fc-* flag. */
export interface FirecrackerConfigOptions {
  /** Run Firecracker through the jailer (chroot, uid/gid, cgroup v2) instead of the private
   * mount namespace. On when a uid is given (--fc-jailer-uid, EMBERS_FC_JAILER_UID).
   * @default undefined (no jailer) */
  jailer?: {
    /** The jailer binary. @default EMBERS_FC_JAILER_BIN ?? 'jailer' (on PATH) */
    binary?: string;
    /** The uid Firecracker runs as. (EMBERS_FC_JAILER_UID) */
    uid: number;
    /** The gid Firecracker runs as. @default EMBERS_FC_JAILER_GID ?? the uid */
    gid?: number;
    /** Where jails are made; on the filesystem of the home (disks are hard-linked in).
     * @default EMBERS_FC_CHROOT_BASE ?? '/srv/jailer' */
    chrootBaseDir?: string;
    /** cgroup v2 settings for each VM, e.g. { 'cpu.max': '50000 100000' }.
     * @default EMBERS_FC_CGROUPS ("key=value;key=value") ?? {} */
    cgroups?: Record<string, string>;
    /** The parent cgroup of the VMs' cgroups. @default EMBERS_FC_PARENT_CGROUP ?? the jailer's ('firecracker') */
    parentCgroup?: string;
  };
  /** Give every VM (and clone) a vsock device with this guest CID; each clone's host socket
   * is `<instance dir>/vsock.sock`. The guest agent (restore fix-ups, `embers exec`) is reached
   * over it. @default EMBERS_FC_VSOCK_CID ?? 3 */
  vsockCid?: number;
  /** Track dirty pages so Diff snapshots can be taken (costs some guest write speed).
   * @default EMBERS_FC_DIFF_SNAPSHOTS === '1' */
  diffSnapshots?: boolean;
}

/** FirecrackerConfigOptions with every default applied (`jailer` stays undefined when off). */
export interface FirecrackerConfig {
  jailer: { binary: string; uid: number; gid: number; chrootBaseDir: string; cgroups: Record<string, string>; parentCgroup?: string } | undefined;
  vsockCid: number | undefined;
  diffSnapshots: boolean;
}

export interface Config {
  home: string;
  cacheDir: string;
  accel: 'auto' | 'kvm' | 'tcg';
  readyTimeoutMs: number;
  firecracker: FirecrackerConfig;
  paths: {
    images: string;
    instances: string;
    snapshots: string;
    net: string;
    tmp: string;
    guestCache: string;
  };
}

/** Parses a duration such as "10s", "500ms", "2m" or a number of milliseconds. */
export function parseDurationMs(value: string | number, option = 'duration'): number {
  if (typeof value === 'number') return value;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(value.trim());
  if (!m) throw new EmbersError('EMB_CONFIG_INVALID', `${option}: "${value}" is not a duration (e.g. 500ms, 10s, 2m)`, { option, value });
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000);
}

export function resolveConfig(opts: ConfigOptions = {}): Config {
  const home = resolve(opts.home ?? process.env.EMBERS_HOME ?? '/var/lib/embers');
  const cacheDir = resolve(opts.cacheDir ?? process.env.EMBERS_CACHE ?? '/var/cache/embers');
  const accel = opts.accel ?? (process.env.EMBERS_ACCEL as Config['accel'] | undefined) ?? 'auto';
  if (!['auto', 'kvm', 'tcg'].includes(accel)) {
    throw new EmbersError('EMB_CONFIG_INVALID', `accel must be auto, kvm or tcg, not "${accel}"`, { accel });
  }
  return {
    home,
    cacheDir,
    accel,
    readyTimeoutMs: opts.readyTimeoutMs ?? 60_000,
    firecracker: resolveFirecrackerConfig(opts.firecracker ?? {}),
    paths: {
      images: join(home, 'images'),
      instances: join(home, 'instances'),
      snapshots: join(home, 'snapshots'),
      net: join(home, 'net'),
      tmp: join(home, 'tmp'),
      guestCache: join(cacheDir, 'guest'),
    },
  };
}

function intFrom(value: number | string | undefined, option: string, min: number, max: number): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = typeof value === 'number' ? value : Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new EmbersError('EMB_CONFIG_INVALID', `${option} must be an integer from ${min} to ${max}, not "${value}"`, { option, value });
  }
  return n;
}

/** Parses "cpu.max=50000 100000;memory.max=268435456" (EMBERS_FC_CGROUPS, --fc-cgroup). */
export function parseCgroupSettings(text: string, option = 'EMBERS_FC_CGROUPS'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text
    .split(';')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const m = /^([a-z0-9_]+\.[a-z0-9_.]+)=(.+)$/.exec(part);
    if (!m)
      throw new EmbersError('EMB_CONFIG_INVALID', `${option}: "${part}" is not a cgroup v2 setting such as cpu.max=50000 100000`, { option, value: part });
    out[m[1]] = m[2];
  }
  return out;
}

function resolveFirecrackerConfig(o: FirecrackerConfigOptions): FirecrackerConfig {
  const env = process.env;
  const uid = intFrom(o.jailer?.uid ?? env.EMBERS_FC_JAILER_UID, 'the jailer uid (EMBERS_FC_JAILER_UID, --fc-jailer-uid)', 0, 2 ** 32 - 2);
  // every Firecracker VM gets a vsock device by default: the guest agent listens on it
  const vsockCid = intFrom(o.vsockCid ?? env.EMBERS_FC_VSOCK_CID, 'the vsock guest CID (EMBERS_FC_VSOCK_CID, --fc-vsock-cid)', 3, 2 ** 32 - 2) ?? 3;
  const diffSnapshots = o.diffSnapshots ?? env.EMBERS_FC_DIFF_SNAPSHOTS === '1';
  if (uid === undefined) return { jailer: undefined, vsockCid, diffSnapshots };
  const gid = intFrom(o.jailer?.gid ?? env.EMBERS_FC_JAILER_GID, 'the jailer gid (EMBERS_FC_JAILER_GID, --fc-jailer-gid)', 0, 2 ** 32 - 2) ?? uid;
  return {
    jailer: {
      binary: o.jailer?.binary ?? env.EMBERS_FC_JAILER_BIN ?? 'jailer',
      uid,
      gid,
      chrootBaseDir: resolve(o.jailer?.chrootBaseDir ?? env.EMBERS_FC_CHROOT_BASE ?? '/srv/jailer'),
      cgroups: o.jailer?.cgroups ?? parseCgroupSettings(env.EMBERS_FC_CGROUPS ?? ''),
      parentCgroup: o.jailer?.parentCgroup ?? env.EMBERS_FC_PARENT_CGROUP,
    },
    vsockCid,
    diffSnapshots,
  };
}

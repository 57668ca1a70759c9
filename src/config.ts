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
}

export interface Config {
  home: string;
  cacheDir: string;
  accel: 'auto' | 'kvm' | 'tcg';
  readyTimeoutMs: number;
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

/**
 * The guest kernel command line. Besides the console and reboot policy it carries:
 *
 * - `lpj=` and `tsc_early_khz=`, derived from the host's TSC frequency. Under TCG the
 *   microvm machine has no PIT or HPET, so the guest cannot calibrate its clock and may hang
 *   in `calibrate_delay`; with these it skips calibration (TCG's guest TSC runs at the host's
 *   rate). Harmless with hardware KVM (kvmclock gives the frequency anyway).
 * - the network configuration for init (`embers.ip=ADDR/PREFIX embers.gw=GW`). Parameters
 *   with a dot are not passed to init's argv/env by the kernel; init reads /proc/cmdline.
 *
 * Both kernels the guest kit builds (Debian's, Firecracker's config) use HZ=250.
 */
import { existsSync, readFileSync } from 'node:fs';
import { EmbersError } from '../errors.js';
import { environment } from '../config.js';

export interface GuestNetConfig {
  guestIp: string;
  prefixLen: number;
  gatewayIp: string;
}

/** CONFIG_HZ of the guest kernels. */
export const GUEST_HZ = 250;
/** The kernel's COMMAND_LINE_SIZE on x86. */
export const MAX_CMDLINE = 2048;

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

let cachedKhz: number | undefined;

function parseCpuinfo(text: string): { mhz?: number; flags: Set<string>; modelGhz?: number } {
  let mhz: number | undefined;
  let flags = new Set<string>();
  let modelGhz: number | undefined;
  for (const line of text.split('\n')) {
    const m = /^([^:]+?)\s*:\s*(.*)$/.exec(line);
    if (!m) continue;
    const [, key, value] = m;
    if (key === 'cpu MHz' && mhz === undefined) mhz = Number(value);
    else if (key === 'flags' && flags.size === 0) flags = new Set(value.split(/\s+/));
    else if (key === 'model name' && modelGhz === undefined) {
      const g = /@\s*([\d.]+)\s*GHz/.exec(value);
      if (g) modelGhz = Number(g[1]);
    }
  }
  return { mhz: mhz !== undefined && Number.isFinite(mhz) && mhz > 0 ? mhz : undefined, flags, modelGhz };
}

function readNumber(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isFinite(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The host TSC frequency in kHz. Sources, in order: $EMBERS_TSC_KHZ; a kernel-exported
 * `tsc_freq_khz`; on a host whose CPU frequency scales (cpufreq present, no
 * `tsc_known_freq`), intel_pstate's base frequency or the "@ x.xxGHz" of the model name;
 * otherwise /proc/cpuinfo's "cpu MHz", which on a VM or a constant-frequency host is the
 * kernel's calibrated TSC rate. Falls back to 2 GHz. Cached for the process, so every
 * guest of a node gets the same command line (snapshots need that).
 */
export function hostTscKhz(): number {
  if (cachedKhz !== undefined) return cachedKhz;
  const fromEnv = environment().tscKhz;
  if (fromEnv !== undefined) return (cachedKhz = fromEnv);
  const exported = readNumber('/sys/devices/system/cpu/cpu0/tsc_freq_khz');
  if (exported) return (cachedKhz = Math.round(exported));
  let info: ReturnType<typeof parseCpuinfo> = { flags: new Set() };
  try {
    info = parseCpuinfo(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    /* not Linux? use the fallback */
  }
  const scaling = existsSync('/sys/devices/system/cpu/cpu0/cpufreq') && !info.flags.has('tsc_known_freq');
  if (scaling) {
    const base = readNumber('/sys/devices/system/cpu/cpu0/cpufreq/base_frequency');
    if (base) return (cachedKhz = Math.round(base));
    if (info.modelGhz) return (cachedKhz = Math.round(info.modelGhz * 1_000_000));
  }
  if (info.mhz) return (cachedKhz = Math.round(info.mhz * 1000));
  return (cachedKhz = 2_000_000);
}

/** loops_per_jiffy for a TSC-based delay loop at `khz`. */
export function lpjFor(khz: number, hz = GUEST_HZ): number {
  return Math.round((khz * 1000) / hz);
}

function checkNet(net: GuestNetConfig): void {
  if (!IPV4.test(net.guestIp))
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'guest IP',
      value: net.guestIp,
      problem: 'is not an IPv4 address',
    });
  if (!IPV4.test(net.gatewayIp))
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'gateway IP',
      value: net.gatewayIp,
      problem: 'is not an IPv4 address',
    });
  if (!Number.isInteger(net.prefixLen) || net.prefixLen < 1 || net.prefixLen > 32) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'prefix length',
      value: net.prefixLen,
      expected: 'an integer from 1 to 32',
    });
  }
}

/**
 * The kernel command line for a guest with network `net`. `extra` parameters are appended
 * (later parameters win for the kernel's own options). Throws EMB_CONFIG_INVALID if the
 * result would exceed the kernel's 2048-byte limit.
 */
export function kernelCmdline(net: GuestNetConfig, extra: string[] = []): string {
  checkNet(net);
  const khz = hostTscKhz();
  const parts = [
    'console=ttyS0',
    '8250.nr_uarts=1',
    'reboot=k',
    'panic=1',
    'quiet',
    'loglevel=4',
    `tsc_early_khz=${khz}`,
    `lpj=${lpjFor(khz)}`,
    'tsc=reliable',
    'random.trust_cpu=on',
    'cryptomgr.notests',
    'i8042.noaux',
    'i8042.nomux',
    'i8042.nopnp',
    'i8042.dumbkbd',
    `embers.ip=${net.guestIp}/${net.prefixLen}`,
    `embers.gw=${net.gatewayIp}`,
  ];
  for (const p of extra) {
    if (typeof p !== 'string' || p === '' || /[\0\n]/.test(p)) {
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'kernel parameter',
        value: p,
        problem: 'is empty or contains a NUL or newline',
      });
    }
    parts.push(p);
  }
  const line = parts.join(' ');
  if (Buffer.byteLength(line) >= MAX_CMDLINE) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'kernel command line',
      problem: `is ${Buffer.byteLength(line)} bytes; the limit is ${MAX_CMDLINE - 1}`,
    });
  }
  return line;
}

/**
 * The host's CPU as /proc/cpuinfo describes it, and the CPU a VMM presents to its guests.
 * A snapshot records both (snapshot/host-compat.ts decides what a restoring host must match):
 * a guest that saw the host's own CPU (KVM `-cpu host`, Firecracker without a CPU template)
 * may use any instruction the host had, so it can only move to a host of the same vendor
 * with at least those flags; a guest that saw a named model (`-cpu max` under TCG, a named
 * QEMU model, a Firecracker CPU template) saw what the VMM release defines, whatever the host.
 */
import { readFile } from 'node:fs/promises';

export interface HostCpu {
  /** CPUID vendor string: GenuineIntel, AuthenticAMD, … */
  vendor: string;
  /** "model name" of the first processor. */
  modelName: string;
  /** The first processor's flags, sorted, without the ones a guest's CPUID never shows (HOST_ONLY_FLAGS). */
  flags: string[];
}

/** The CPU a VMM presents to its guest. */
export interface GuestCpu {
  /** What defines it: the QEMU `-cpu` value ("host", "max", "Skylake-Client-v4,-hle"), or a Firecracker CPU template. */
  model: string;
  /** True when the guest sees the host's own CPU (its CPUID follows the host's), false when the model fixes it. */
  hostDependent: boolean;
}

/**
 * Flags in /proc/cpuinfo that describe the host's virtualisation support or Linux's own
 * bookkeeping, not instructions a guest can use: a restoring host need not have them.
 */
export const HOST_ONLY_FLAGS: ReadonlySet<string> = new Set([
  'vmx',
  'svm',
  'ept',
  'ept_ad',
  'vpid',
  'vnmi',
  'flexpriority',
  'tpr_shadow',
  'npt',
  'nrip_save',
  'hypervisor',
  'cpuid_fault',
  'tsc_known_freq',
  'constant_tsc',
  'nonstop_tsc',
  'nonstop_tsc_s3',
  'rep_good',
  'nopl',
  'xtopology',
  'arch_perfmon',
  'pti',
  'ibpb',
  'ibrs',
  'stibp',
  'ssbd',
  'ibrs_enhanced',
  'flush_l1d',
  'arch_capabilities',
]);

/** Parses /proc/cpuinfo text: the first processor's vendor, model name and flags. */
export function parseCpuinfo(text: string): HostCpu {
  const first = text.split(/\n\s*\n/)[0] ?? '';
  const field = (name: string): string => {
    const m = new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(first);
    return m ? m[1].trim() : '';
  };
  const flags = field('flags')
    .split(/\s+/)
    .filter((f) => f !== '' && !HOST_ONLY_FLAGS.has(f));
  return {
    vendor: field('vendor_id') || 'unknown',
    modelName: field('model name') || 'unknown',
    flags: [...new Set(flags)].sort(),
  };
}

let cached: Promise<HostCpu> | undefined;

/** This host's CPU (read once per process). */
export function readHostCpu(): Promise<HostCpu> {
  cached ??= readFile('/proc/cpuinfo', 'utf8').then(parseCpuinfo);
  cached.catch(() => (cached = undefined));
  return cached;
}

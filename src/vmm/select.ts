/**
 * Picks the hypervisor driver for this host. Firecracker by default where it can run — its
 * binary exists and KVM is hardware-backed — QEMU otherwise (QEMU also runs under TCG).
 * An explicit request for Firecracker on a host that cannot run it is an error that says
 * what is missing.
 */
import { EmbersError } from '../errors.js';
import { environment } from '../config.js';
import { detectAccelerator } from './accel.js';
import type { Accelerator, HypervisorDriver } from './driver.js';
import { findFirecracker } from './firecracker/binary.js';
import { FirecrackerDriver, type FirecrackerDriverOptions } from './firecracker/driver.js';
import { binarySnapshotVersion, binaryVersion } from './firecracker/version.js';
import { QemuDriver, type QemuDriverOptions } from './qemu/driver.js';

export interface SelectDriverOptions {
  /** Which VMM: 'auto' prefers Firecracker where it can run. @default 'auto' */
  vmm?: 'auto' | 'qemu' | 'firecracker';
  /** The firecracker binary. @default EMBERS_FIRECRACKER_BIN ?? 'firecracker' (on PATH) */
  firecrackerBin?: string;
  /** Accelerator for QEMU; 'tcg' also rules Firecracker out under 'auto'. @default 'auto' */
  accel?: 'auto' | Accelerator;
  /** Further options for the QEMU driver, if it is chosen (its CPU model, device discovery). @default {} */
  qemu?: Omit<QemuDriverOptions, 'accel'>;
  /** Further options for the Firecracker driver, if it is chosen. @default {} */
  firecracker?: Omit<FirecrackerDriverOptions, 'binary'>;
}

export async function selectDriver(
  opts: SelectDriverOptions = {},
): Promise<{ driver: HypervisorDriver; reason: string }> {
  const vmm = opts.vmm ?? 'auto';
  const accel = opts.accel ?? 'auto';
  if (!['auto', 'qemu', 'firecracker'].includes(vmm))
    throw EmbersError.of('EMB_CONFIG_INVALID', { option: 'vmm', value: vmm, expected: 'auto, qemu or firecracker' });
  const qemu = () => new QemuDriver({ ...opts.qemu, accel });
  if (vmm === 'qemu') return { driver: qemu(), reason: 'QEMU requested' };

  const fromEnv = environment().firecracker.binary;
  const wanted = opts.firecrackerBin ?? fromEnv ?? 'firecracker';
  const from = opts.firecrackerBin ? 'the --firecracker-bin option' : fromEnv ? 'EMBERS_FIRECRACKER_BIN' : 'PATH';
  const binary = await findFirecracker(wanted);
  const probe = await detectAccelerator('auto');
  const hardwareKvm = probe.accelerator === 'kvm';
  const missing: string[] = [];
  if (!binary) missing.push(`no executable Firecracker binary (${wanted}, from ${from})`);
  if (!hardwareKvm) missing.push(`no hardware-backed KVM (${probe.reason})`);
  if (accel === 'tcg') missing.push('TCG was requested and Firecracker runs only on KVM');

  if (vmm === 'firecracker') {
    if (missing.length > 0) {
      const host = { binary: wanted, binaryFound: !!binary, hardwareKvm, kvm: probe.reason, accel, missing };
      throw !binary
        ? EmbersError.of(
            'EMB_VMM_NOT_FOUND',
            { problem: 'host', ...host },
            {
              hint: 'download a Firecracker release and pass its path with --firecracker-bin or EMBERS_FIRECRACKER_BIN, on a host with hardware KVM; or use --vmm qemu',
            },
          )
        : EmbersError.of('EMB_VMM_KVM_UNAVAILABLE', host, {
            hint: 'run on a host whose CPU has vmx/svm and /dev/kvm from kvm_intel or kvm_amd, or use --vmm qemu',
          });
    }
    return {
      driver: new FirecrackerDriver({ ...opts.firecracker, binary: binary ?? wanted }),
      reason: `Firecracker requested: ${binary}, ${probe.reason}`,
    };
  }
  if (missing.length === 0)
    return {
      driver: new FirecrackerDriver({ ...opts.firecracker, binary: binary ?? wanted }),
      reason: `Firecracker at ${binary} and ${probe.reason}`,
    };
  return { driver: qemu(), reason: `QEMU, since Firecracker cannot run here: ${missing.join(' and ')}` };
}

/** The Firecracker binary a driver runs, if it is the Firecracker driver and its binary exists. */
export async function firecrackerBinaryOf(driver: HypervisorDriver): Promise<string | undefined> {
  return driver instanceof FirecrackerDriver ? driver.binary().catch(() => undefined) : undefined;
}

/** What `embers doctor` says about one Firecracker binary. */
export interface FirecrackerProbe {
  /** The path found (absolute), or what was looked for. */
  path: string;
  /** Where the name came from: --firecracker-bin, EMBERS_FIRECRACKER_BIN or PATH. */
  from: string;
  found: boolean;
  /** `firecracker --version`, e.g. "1.16.1". */
  version?: string;
  /** `firecracker --snapshot-version`, e.g. "10.0.0": the snapshot data format it writes. */
  snapshotFormat?: string;
  /** Whether this node runs VMs with it, and why (not). */
  used: boolean;
  reason: string;
}

/**
 * Every Firecracker binary this node could use (the configured one, and the one on PATH if
 * different), with its versions and why it is or is not used.
 */
export async function probeFirecrackers(opts: {
  firecrackerBin?: string;
  usedBinary?: string;
  vmm?: 'auto' | 'qemu' | 'firecracker';
  accel?: 'auto' | Accelerator;
}): Promise<FirecrackerProbe[]> {
  const candidates: { name: string; from: string }[] = [];
  if (opts.firecrackerBin) candidates.push({ name: opts.firecrackerBin, from: '--firecracker-bin' });
  else if (environment().firecracker.binary)
    candidates.push({ name: environment().firecracker.binary!, from: 'EMBERS_FIRECRACKER_BIN' });
  candidates.push({ name: 'firecracker', from: 'PATH' });
  const probe = await detectAccelerator('auto');
  const out: FirecrackerProbe[] = [];
  for (const c of candidates) {
    const path = await findFirecracker(c.name);
    if (path && out.some((p) => p.path === path)) continue;
    if (!path) {
      if (c.from !== 'PATH' || out.length === 0)
        out.push({
          path: c.name,
          from: c.from,
          found: false,
          used: false,
          reason: `no executable Firecracker at ${c.name}`,
        });
      continue;
    }
    const entry: FirecrackerProbe = { path, from: c.from, found: true, used: false, reason: '' };
    try {
      entry.version = await binaryVersion(path);
      entry.snapshotFormat = await binarySnapshotVersion(path);
    } catch (err) {
      entry.reason = `found, but it does not answer as Firecracker: ${(err as Error).message}`;
      out.push(entry);
      continue;
    }
    const why: string[] = [];
    if (out.some((p) => p.found))
      why.push(`${out.find((p) => p.found)!.path} (${out.find((p) => p.found)!.from}) comes first`);
    if (opts.vmm === 'qemu') why.push('QEMU was requested (--vmm qemu)');
    if (opts.accel === 'tcg') why.push('TCG was requested and Firecracker runs only on KVM');
    if (probe.accelerator !== 'kvm') why.push(`no hardware-backed KVM (${probe.reason})`);
    entry.used = opts.usedBinary === path;
    entry.reason = entry.used
      ? `used: ${probe.reason}`
      : `found, not used: ${why.join('; ') || 'another VMM was chosen'}`;
    out.push(entry);
  }
  return out;
}

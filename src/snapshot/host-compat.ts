/**
 * Can a snapshot made on one host be restored on this one? A restored guest keeps running
 * the kernel and the code paths it chose on the host it booted on: instructions it found in
 * CPUID, a kernel whose memory image is the snapshot, a VMM whose device model wrote the
 * state. The rules (each difference is named in EMB_SNAPSHOT_HOST_MISMATCH):
 *
 * - vmm:          the same VMM kind and major version;
 * - kernel:       the guest kit this host restores with has the kernel the snapshot's memory holds;
 * - cpu-model:    the guest sees the same CPU model (QEMU `-cpu`, a Firecracker CPU template);
 * - cpu-vendor,   only when that model passes the host's CPU through (KVM `-cpu host`,
 *   cpu-flags:    Firecracker without a template): the same vendor, and every flag the
 *                 snapshot's host had (a host with more is fine);
 * - drive-layout: the same way of reaching the disk (plain path, mount namespace, jail), as the
 *                 state file holds the drive path that layout gives.
 *
 * Under TCG every model is emulated, so a TCG snapshot's host CPU does not matter.
 * Manifests written before these fields existed restore with a warning (unknown, not a
 * mismatch). `allowHostMismatch` turns mismatches into warnings, for who knows the difference
 * is harmless.
 */
import { EmbersError } from '../errors.js';
import { describeMismatch, type HostMismatch } from '../error-catalogue/snapshot.js';
import type { HypervisorDriver } from '../vmm/driver.js';
import { readHostCpu, type GuestCpu } from '../vmm/host-cpu.js';
import type { SnapshotManifest } from './manifest.js';

/** What a snapshot records of its host, and what a restoring host offers. */
export interface HostDescription {
  vmm: { kind: SnapshotManifest['vmm']['kind']; version: string; driveLayout?: SnapshotManifest['vmm']['driveLayout'] };
  cpu: NonNullable<SnapshotManifest['host']>['cpu'];
  guestCpu: GuestCpu;
  /** The kernel of the guest kit this host would restore with. */
  kernelVersion: string;
}

// The kinds of mismatch and their one-line descriptions live with the error that names them.
export type { HostMismatch, HostMismatchKind } from '../error-catalogue/snapshot.js';
export { describeMismatch };

export interface HostComparison {
  mismatches: HostMismatch[];
  /** What the manifest does not record, so could not be compared. */
  unknown: string[];
}

/** A VMM that does not say which CPU its guests see passes the host's through (Firecracker without a template). */
const HOST_PASSTHROUGH: GuestCpu = { model: 'host', hostDependent: true };

/** Describes this host for `driver`, restoring with a guest kit whose kernel is `kernelVersion`. */
export async function describeHost(driver: HypervisorDriver, kernelVersion: string): Promise<HostDescription> {
  return {
    vmm: { kind: driver.kind, version: await driver.version(), driveLayout: driver.driveLayout },
    cpu: await readHostCpu(),
    guestCpu: driver.guestCpu ? await driver.guestCpu() : HOST_PASSTHROUGH,
    kernelVersion,
  };
}

function major(version: string): string {
  return /^v?(\d+)/.exec(version)?.[1] ?? version;
}

/** Compares what `m` recorded with `here` (pure: the rules in the header). */
export function compareHost(m: SnapshotManifest, here: HostDescription): HostComparison {
  const mismatches: HostMismatch[] = [];
  const unknown: string[] = [];
  if (m.vmm.kind !== here.vmm.kind) {
    mismatches.push({
      what: 'vmm',
      recorded: `${m.vmm.kind} ${m.vmm.version}`,
      here: `${here.vmm.kind} ${here.vmm.version}`,
    });
  } else if (typeof m.vmm.version !== 'string' || m.vmm.version === '') {
    unknown.push('VMM version');
  } else if (major(m.vmm.version) !== major(here.vmm.version)) {
    mismatches.push({
      what: 'vmm',
      recorded: `${m.vmm.kind} ${m.vmm.version}`,
      here: `${here.vmm.kind} ${here.vmm.version}`,
    });
  }

  const kernel = m.guestKit?.kernelVersion;
  if (typeof kernel !== 'string' || kernel === '') unknown.push('guest kernel version');
  else if (kernel !== here.kernelVersion)
    mismatches.push({ what: 'kernel', recorded: kernel, here: here.kernelVersion });

  if (m.vmm.driveLayout === undefined) {
    if (here.vmm.driveLayout !== undefined && here.vmm.driveLayout !== 'plain') unknown.push('drive layout');
  } else if (here.vmm.driveLayout !== undefined && m.vmm.driveLayout !== here.vmm.driveLayout) {
    mismatches.push({ what: 'drive-layout', recorded: m.vmm.driveLayout, here: here.vmm.driveLayout });
  }

  if (!m.host) {
    unknown.push('host CPU and guest CPU model');
    return { mismatches, unknown };
  }
  const { cpu, guestCpu } = m.host;
  if (guestCpu.model !== here.guestCpu.model) {
    mismatches.push({ what: 'cpu-model', recorded: guestCpu.model, here: here.guestCpu.model });
  } else if (guestCpu.hostDependent) {
    if (cpu.vendor !== here.cpu.vendor) {
      mismatches.push({
        what: 'cpu-vendor',
        recorded: `${cpu.vendor} (${cpu.modelName})`,
        here: `${here.cpu.vendor} (${here.cpu.modelName})`,
      });
    }
    const have = new Set(here.cpu.flags);
    const missing = cpu.flags.filter((f) => !have.has(f));
    if (missing.length > 0) {
      mismatches.push({ what: 'cpu-flags', recorded: cpu.modelName, here: here.cpu.modelName, missing });
    }
  }
  return { mismatches, unknown };
}

/**
 * Refuses (EMB_SNAPSHOT_HOST_MISMATCH) to restore `m` on `here` when a rule fails, unless
 * `allowHostMismatch`; returns warnings to show: mismatches that were allowed, fields the
 * manifest does not record.
 */
export function checkHostCompat(
  m: SnapshotManifest,
  here: HostDescription,
  opts: { allowHostMismatch?: boolean } = {},
): string[] {
  const { mismatches, unknown } = compareHost(m, here);
  const warnings: string[] = [];
  if (mismatches.length > 0) {
    const lines = mismatches.map(describeMismatch);
    if (!opts.allowHostMismatch) {
      throw EmbersError.of('EMB_SNAPSHOT_HOST_MISMATCH', {
        id: m.id,
        mismatches,
        unknown,
        recorded: { vmm: m.vmm, host: m.host, kernelVersion: m.guestKit?.kernelVersion },
        here,
      });
    }
    warnings.push(`restoring snapshot ${m.id} although its host differs (allowed): ${lines.join('; ')}`);
  }
  if (unknown.length > 0) {
    warnings.push(
      `snapshot ${m.id} does not record its ${unknown.join(', ')} (an older manifest): restoring without checking them`,
    );
  }
  return warnings;
}

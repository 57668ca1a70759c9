/**
 * Finding the real Firecracker for the tests that run it, and saying what this host lets it
 * do. Three levels, each a superset of the one before:
 *
 * - `binary`: a Firecracker binary (EMBERS_FIRECRACKER_BIN, else the v1.16.1 test build in
 *   ../shared/firecracker/bin/ beside the repository) and root: the processes, their netns,
 *   mount namespaces and jails, every pre-boot API call (Firecracker opens the drive and the
 *   tap when they are configured).
 * - `vmm`: also /dev/kvm, even PVM: InstanceStart, pause/resume, snapshot create and load
 *   (the guest makes no progress on PVM, but the VMM side is all real).
 * - `guest`: hardware-backed KVM: the guest runs, so it can answer over HTTP.
 */
import { access, constants } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { detectAccelerator } from '../../src/vmm/accel.js';
import { findFirecracker } from '../../src/vmm/firecracker/binary.js';
import { exists } from '../../src/util/fs.js';
import { repoPath } from './repo.js';

/** The static v1.16.1 test build the project keeps beside the repository. */
export const SHARED_FIRECRACKER = repoPath('..', 'shared', 'firecracker', 'bin', 'firecracker');

export interface RealFirecracker {
  binary: string;
  /** The jailer beside the binary (EMBERS_JAILER_BIN overrides), if there is one. */
  jailer: string | undefined;
  /** Where the binary came from, for messages. */
  from: string;
}

export async function findRealFirecracker(): Promise<RealFirecracker | { skip: string }> {
  if (process.getuid?.() !== 0)
    return { skip: `needs root (netns, mount namespaces, the jailer): this process runs as uid ${process.getuid?.()}` };
  const env = process.env.EMBERS_FIRECRACKER_BIN;
  let binary: string | undefined;
  let from: string;
  if (env) {
    binary = await findFirecracker(env);
    from = `EMBERS_FIRECRACKER_BIN=${env}`;
    if (!binary) return { skip: `needs a Firecracker binary: EMBERS_FIRECRACKER_BIN=${env} is not an executable` };
  } else {
    binary = await findFirecracker(SHARED_FIRECRACKER);
    from = SHARED_FIRECRACKER;
    if (!binary)
      return {
        skip: `needs a Firecracker binary: EMBERS_FIRECRACKER_BIN is unset and ${SHARED_FIRECRACKER} does not exist`,
      };
  }
  const jailerPath = process.env.EMBERS_JAILER_BIN ?? join(dirname(binary), 'jailer');
  const jailer = await access(jailerPath, constants.X_OK).then(
    () => jailerPath,
    () => undefined,
  );
  return { binary, jailer, from };
}

/** Why the VMM side (InstanceStart, snapshots, loads) cannot run here, or undefined if it can. */
export async function vmmSideUnavailable(): Promise<string | undefined> {
  if (await exists('/dev/kvm')) return undefined;
  return 'needs /dev/kvm (PVM is enough for the VMM side: InstanceStart, pause, snapshot create and load): this host has no /dev/kvm';
}

/** Why a guest cannot run under Firecracker here (no hardware-backed KVM), or undefined if it can. */
export async function guestUnavailable(): Promise<string | undefined> {
  const probe = await detectAccelerator('auto');
  if (probe.accelerator === 'kvm') return undefined;
  return `needs hardware-backed KVM for the guest to run under Firecracker: ${probe.reason}`;
}

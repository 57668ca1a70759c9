/**
 * The global options every node-opening command takes (--home, --accel, --vmm, --fc-*, --s3-*,
 * …) turned into the node's options, and the small flag parsers the commands share.
 */
import { EmbersError } from '../errors.js';
import { environment, parseCgroupSettings, s3Settings } from '../config.js';
import type { NodeOptions } from '../node/node.js';
import type { PrefetchMode } from '../node/snapshots.js';
import { MAX_SLOTS } from '../net/addressing.js';
import { intOption } from './args.js';
import type { Output } from './output.js';

export function nodeOptions(values: Record<string, unknown>, out: Output): NodeOptions {
  const accel = values.accel as string | undefined;
  if (accel !== undefined && !['auto', 'kvm', 'tcg'].includes(accel))
    throw EmbersError.of('EMB_USAGE', { option: '--accel', value: accel, expected: 'auto, kvm or tcg' });
  const vmm = values.vmm as string | undefined;
  if (vmm !== undefined && !['auto', 'qemu', 'firecracker'].includes(vmm))
    throw EmbersError.of('EMB_USAGE', { option: '--vmm', value: vmm, expected: 'auto, qemu or firecracker' });
  const guestKernel = values['guest-kernel'] as string | undefined;
  if (guestKernel !== undefined && !['debian', 'firecracker-config'].includes(guestKernel)) {
    throw EmbersError.of('EMB_USAGE', {
      option: '--guest-kernel',
      value: guestKernel,
      expected: 'debian or firecracker-config',
    });
  }
  const discovery = values['device-discovery'] as string | undefined;
  if (discovery !== undefined && !['acpi', 'cmdline'].includes(discovery)) {
    throw EmbersError.of('EMB_USAGE', { option: '--device-discovery', value: discovery, expected: 'acpi or cmdline' });
  }
  const snapshots = values.snapshots as string | undefined;
  if (snapshots !== undefined && !['disabled', 'local', 'remote'].includes(snapshots)) {
    throw EmbersError.of('EMB_USAGE', {
      option: '--snapshots',
      value: snapshots,
      expected: 'disabled, local or remote',
    });
  }
  const cache = onOff(values['cache-snapshots'] as string | undefined, '--cache-snapshots');
  return {
    home: values.home as string | undefined,
    snapshots: snapshots as NodeOptions['snapshots'],
    cacheSnapshots: cache,
    s3: s3FromFlags(values),
    accel: accel as NodeOptions['accel'],
    vmm: vmm as NodeOptions['vmm'],
    guestKernel: guestKernel as NodeOptions['guestKernel'],
    qemuCpuModel: values['qemu-cpu'] as string | undefined,
    deviceDiscovery: discovery as NodeOptions['deviceDiscovery'],
    firecrackerBin: values['firecracker-bin'] as string | undefined,
    netPoolSize: intOption(values['net-pool-size'] as string | undefined, 'net-pool-size', 10, 0, MAX_SLOTS),
    firecracker: firecrackerFromFlags(values),
    onProgress: (m) => out.progress(m),
  };
}

/** Firecracker settings from --fc-* flags; what is not given comes from EMBERS_FC_* or the defaults (config.ts). */
function firecrackerFromFlags(values: Record<string, unknown>): NodeOptions['firecracker'] {
  const str = (n: string) => values[`fc-${n}`] as string | undefined;
  const int = (n: string, min: number) => (str(n) === undefined ? undefined : intOption(str(n), `fc-${n}`, 0, min));
  const cgroups = values['fc-cgroup'] as string[] | undefined;
  const jailerFlags =
    ['jailer-uid', 'jailer-gid', 'jailer-bin', 'chroot-base', 'parent-cgroup'].some((n) => str(n) !== undefined) ||
    cgroups !== undefined;
  let jailer: NonNullable<NodeOptions['firecracker']>['jailer'];
  if (jailerFlags) {
    const envUid = environment().firecracker.jailerUid;
    const uid = int('jailer-uid', 0) ?? (envUid ? Number(envUid) : undefined);
    if (uid === undefined)
      throw EmbersError.of('EMB_USAGE', {
        option: 'the --fc-jailer-* and --fc-cgroup options',
        problem: 'need --fc-jailer-uid (or EMBERS_FC_JAILER_UID)',
      });
    jailer = {
      uid,
      gid: int('jailer-gid', 0),
      binary: str('jailer-bin'),
      chrootBaseDir: str('chroot-base'),
      cgroups: cgroups === undefined ? undefined : parseCgroupSettings(cgroups.join(';'), '--fc-cgroup'),
      parentCgroup: str('parent-cgroup'),
    };
  }
  return { jailer, vsockCid: int('vsock-cid', 3), diffSnapshots: values['fc-diff-snapshots'] as boolean | undefined };
}

/** S3 options from --s3-* flags over EMBERS_S3_* (config.ts: s3Settings), or undefined without flags to use EMBERS_S3_*. */
function s3FromFlags(values: Record<string, unknown>): NodeOptions['s3'] {
  const flag = (n: string) => values[`s3-${n}`] as string | undefined;
  const flags = { endpoint: flag('endpoint'), bucket: flag('bucket'), region: flag('region'), prefix: flag('prefix') };
  if (Object.values(flags).every((v) => v === undefined)) return undefined;
  return s3Settings(flags);
}

/** An on|off flag (true|false too); undefined when not given. */
export function onOff(value: string | undefined, flag: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (!['true', 'false', 'on', 'off'].includes(value))
    throw EmbersError.of('EMB_USAGE', { option: flag, value, expected: 'on or off' });
  return value === 'true' || value === 'on';
}

export function prefetchMode(value: string | undefined): PrefetchMode | undefined {
  if (value === undefined) return undefined;
  if (value !== 'auto' && value !== 'on' && value !== 'off')
    throw EmbersError.of('EMB_USAGE', { option: '--prefetch', value, expected: 'auto, on or off' });
  return value;
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isEmbersError } from '../../src/errors.js';
import { checkHostCompat, compareHost, type HostDescription } from '../../src/snapshot/host-compat.js';
import { parseManifest, type SnapshotManifest } from '../../src/snapshot/manifest.js';
import { HOST_ONLY_FLAGS, parseCpuinfo } from '../../src/vmm/host-cpu.js';
import { microvmMachine, qemuArgs } from '../../src/vmm/qemu/args.js';
import { QemuDriver } from '../../src/vmm/qemu/driver.js';
import { TEST_META } from '../helpers/snapshots.js';

const INTEL_FLAGS = ['avx', 'avx2', 'sse4_2', 'xsave'];

function manifest(
  over: { vmm?: Partial<SnapshotManifest['vmm']>; host?: SnapshotManifest['host'] | null; kernel?: string } = {},
): SnapshotManifest {
  const m = {
    ...TEST_META,
    formatVersion: 1,
    id: 'snap-0123456789abcdef',
    vmm: {
      kind: 'qemu',
      version: '7.2.22',
      snapshotFormat: 'qemu-7.2.22',
      accelerator: 'kvm',
      driveLayout: 'plain',
      ...over.vmm,
    },
    guestKit: { kind: 'debian', kernelVersion: over.kernel ?? '6.1.0-57-amd64', cacheKey: 'k' },
    files: [
      { name: 'vmstate.bin', sizeBytes: 1, sha256: 'd'.repeat(64) },
      { name: 'memory.bin', sizeBytes: 1, sha256: 'e'.repeat(64) },
    ],
  } as SnapshotManifest;
  if (over.host !== null)
    m.host = over.host ?? {
      cpu: { vendor: 'GenuineIntel', modelName: 'Xeon A', flags: INTEL_FLAGS },
      guestCpu: { model: 'host', hostDependent: true },
    };
  return m;
}

function here(over: Partial<HostDescription> = {}): HostDescription {
  return {
    vmm: { kind: 'qemu', version: '7.2.22', driveLayout: 'plain' },
    cpu: { vendor: 'GenuineIntel', modelName: 'Xeon B', flags: [...INTEL_FLAGS, 'avx512f'] },
    guestCpu: { model: 'host', hostDependent: true },
    kernelVersion: '6.1.0-57-amd64',
    ...over,
  };
}

const kinds = (m: SnapshotManifest, h: HostDescription) => compareHost(m, h).mismatches.map((x) => x.what);

test('host compat: the same host, or one with more flags, passes without warnings', () => {
  assert.deepEqual(compareHost(manifest(), here()), { mismatches: [], unknown: [] });
  assert.deepEqual(checkHostCompat(manifest(), here()), []);
});

test('host compat: a host-passthrough CPU needs the same vendor and every recorded flag', () => {
  assert.deepEqual(
    kinds(manifest(), here({ cpu: { vendor: 'AuthenticAMD', modelName: 'EPYC', flags: INTEL_FLAGS } })),
    ['cpu-vendor'],
  );
  const lacking = compareHost(
    manifest(),
    here({ cpu: { vendor: 'GenuineIntel', modelName: 'Old', flags: ['sse4_2'] } }),
  );
  assert.deepEqual(
    lacking.mismatches.map((x) => [x.what, x.missing]),
    [['cpu-flags', ['avx', 'avx2', 'xsave']]],
  );
});

test('host compat: a named or emulated CPU model ignores the host CPU but must be the same model', () => {
  const tcg = manifest({
    host: {
      cpu: { vendor: 'GenuineIntel', modelName: 'Xeon A', flags: INTEL_FLAGS },
      guestCpu: { model: 'max', hostDependent: false },
    },
  });
  const amdHere = here({
    cpu: { vendor: 'AuthenticAMD', modelName: 'EPYC', flags: [] },
    guestCpu: { model: 'max', hostDependent: false },
  });
  assert.deepEqual(kinds(tcg, amdHere), [], 'TCG max: any host CPU');
  assert.deepEqual(kinds(tcg, here({ guestCpu: { model: 'Skylake-Client-v4', hostDependent: false } })), ['cpu-model']);
  assert.deepEqual(
    kinds(manifest(), here({ guestCpu: { model: 'max', hostDependent: false } })),
    ['cpu-model'],
    'host vs max',
  );
});

test('host compat: VMM kind or major version, guest kernel and drive layout must match', () => {
  assert.deepEqual(kinds(manifest(), here({ vmm: { kind: 'qemu', version: '8.0.0', driveLayout: 'plain' } })), ['vmm']);
  assert.deepEqual(
    kinds(manifest(), here({ vmm: { kind: 'qemu', version: '7.1.0', driveLayout: 'plain' } })),
    [],
    'same major',
  );
  assert.deepEqual(kinds(manifest(), here({ vmm: { kind: 'firecracker', version: '1.16.1', driveLayout: 'plain' } })), [
    'vmm',
  ]);
  assert.deepEqual(kinds(manifest(), here({ kernelVersion: '6.1.0-58-amd64' })), ['kernel']);
  const fc = manifest({ vmm: { kind: 'firecracker', version: '1.16.1', driveLayout: 'jail' } });
  const fcHere = (driveLayout: 'jail' | 'mount-namespace' | undefined) =>
    here({ vmm: { kind: 'firecracker', version: 'v1.16.0', driveLayout } });
  assert.deepEqual(kinds(fc, fcHere('mount-namespace')), ['drive-layout']);
  assert.deepEqual(kinds(fc, fcHere('jail')), []);
  assert.deepEqual(kinds(fc, fcHere(undefined)), [], 'a driver that does not say is not compared');
});

test('host compat: the refusal names every difference; the override turns it into a warning', () => {
  const other = here({
    kernelVersion: '6.1.0-99-amd64',
    cpu: { vendor: 'AuthenticAMD', modelName: 'EPYC', flags: [] },
  });
  let caught: unknown;
  try {
    checkHostCompat(manifest(), other);
  } catch (err) {
    caught = err;
  }
  assert.ok(isEmbersError(caught, 'EMB_SNAPSHOT_HOST_MISMATCH'), String(caught));
  assert.match(caught.message, /guest kernel: 6\.1\.0-57-amd64 recorded, 6\.1\.0-99-amd64 here/);
  assert.match(caught.message, /CPU vendor: GenuineIntel \(Xeon A\) recorded, AuthenticAMD \(EPYC\) here/);
  assert.match(caught.message, /lacks 4 .*: avx avx2 sse4_2 xsave/);
  assert.match(caught.hint, /--allow-host-mismatch/);
  assert.deepEqual(
    caught.details.mismatches.map((x) => x.what),
    ['kernel', 'cpu-vendor', 'cpu-flags'],
  );
  const warnings = checkHostCompat(manifest(), other, { allowHostMismatch: true });
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /although its host differs \(allowed\): guest kernel/);
});

test('host compat: an older manifest without the host fields restores with a warning, never a refusal', () => {
  const old = manifest({ host: null, vmm: { driveLayout: undefined } });
  const amd = here({ cpu: { vendor: 'AuthenticAMD', modelName: 'EPYC', flags: [] } });
  assert.deepEqual(compareHost(old, amd), { mismatches: [], unknown: ['host CPU and guest CPU model'] });
  const warnings = checkHostCompat(old, amd);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /does not record its host CPU and guest CPU model/);
  // an old manifest still parses; a malformed host field does not
  const text = JSON.stringify(old);
  assert.equal(parseManifest(text, 'old').host, undefined);
  const bad = { ...old, host: { cpu: { vendor: 1 }, guestCpu: {} } };
  assert.throws(
    () => parseManifest(JSON.stringify(bad), 'bad'),
    (e: unknown) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'),
  );
  assert.throws(
    () => parseManifest(JSON.stringify(manifest({ vmm: { deviceDiscovery: 'pci' as never } })), 'bad'),
    (e: unknown) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'),
  );
});

test('host cpu: /proc/cpuinfo gives the first processor, its flags sorted, without host-only ones', () => {
  const text = [
    'processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: sse2 svm avx hypervisor avx constant_tsc\n',
    'processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: sse2 other\n',
  ].join('\n');
  assert.deepEqual(parseCpuinfo(text), { vendor: 'AuthenticAMD', modelName: 'AMD EPYC 7B13', flags: ['avx', 'sse2'] });
  assert.ok(HOST_ONLY_FLAGS.has('vmx'));
});

test('qemu: CPU model policy (max under TCG, host under KVM, named models enforced) and bad models refused', async () => {
  assert.deepEqual(await new QemuDriver({ accel: 'tcg' }).guestCpu(), { model: 'max', hostDependent: false });
  assert.deepEqual(await new QemuDriver({ accel: 'kvm' }).guestCpu(), { model: 'host', hostDependent: true });
  assert.deepEqual(await new QemuDriver({ accel: 'kvm', cpuModel: 'Skylake-Client-v4' }).guestCpu(), {
    model: 'Skylake-Client-v4',
    hostDependent: false,
  });
  assert.deepEqual(await new QemuDriver({ accel: 'kvm', cpuModel: 'max,-hle' }).guestCpu(), {
    model: 'max,-hle',
    hostDependent: true,
  });
  for (const bad of ['', 'host;rm', 'max, -hle', '-max'])
    assert.throws(
      () => new QemuDriver({ cpuModel: bad }),
      (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID'),
      bad,
    );
  assert.throws(
    () => new QemuDriver({ deviceDiscovery: 'pci' as never }),
    (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID'),
  );
});

test('qemu: cmdline device discovery is microvm without ACPI, RTC or PCI, with an i8042, and halts by reboot', () => {
  const spec = {
    name: 'x',
    dir: '/d',
    kernelPath: '/k',
    initrdPath: '/i',
    cmdline: 'console=ttyS0',
    diskPath: '/disk',
    vcpus: 1,
    memoryMiB: 128,
    network: { netns: 'n', tapName: 't', guestMac: 'm' },
  };
  const o = {
    accelerator: 'tcg' as const,
    cpuModel: 'max',
    controlSocket: '/s',
    consoleLog: '/c',
    memoryFile: '/m',
    shareMemory: true,
    incoming: false,
  };
  const off = qemuArgs(spec, { ...o, deviceDiscovery: 'cmdline' });
  const machine = off[off.indexOf('-M') + 1];
  assert.match(machine, /^microvm,/);
  for (const opt of ['acpi=off', 'rtc=off', 'pcie=off', 'auto-kernel-cmdline=on'])
    assert.ok(machine.split(',').includes(opt), opt);
  assert.equal(off[off.indexOf('i8042') - 1], '-device');
  assert.equal(off[off.indexOf('-cpu') + 1], 'max');
  assert.deepEqual(
    microvmMachine('acpi'),
    { machine: 'microvm,acpi=on,memory-backend=mem', devices: [] },
    'the ACPI machine is unchanged',
  );
  assert.deepEqual(new QemuDriver({ deviceDiscovery: 'cmdline' }).guestKernelArgs, ['embers.halt=reboot']);
  assert.deepEqual(new QemuDriver().guestKernelArgs, []);
});

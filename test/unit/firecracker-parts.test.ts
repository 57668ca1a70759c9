import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { repoPath } from '../helpers/repo.js';
import type { VmSpec } from '../../src/vmm/driver.js';
import { IN_JAIL, jailerCommand } from '../../src/vmm/firecracker/jailer.js';
import { firecrackerId, vmLayout } from '../../src/vmm/firecracker/layout.js';
import { fixedDrivePath, wrapInMountNamespace } from '../../src/vmm/firecracker/mount-namespace.js';
import {
  checkSnapshotFormat,
  parseBinaryVersion,
  parseSnapshotHeader,
  parseSnapshotVersionOutput,
  readSnapshotFormatVersion,
} from '../../src/vmm/firecracker/version.js';

const spec: VmSpec = {
  name: 'fn_1.test',
  dir: '/var/lib/embers/instances/fn_1.test',
  kernelPath: '/cache/vmlinux',
  initrdPath: '/cache/initrd.img',
  cmdline: 'console=ttyS0',
  diskPath: '/var/lib/embers/instances/fn_1.test/disk.img',
  vcpus: 1,
  memoryMiB: 128,
  network: { netns: 'embers-0-3', tapName: 'tap0', guestMac: 'AA:FC:00:00:00:01' },
};

test('versions: --version and --snapshot-version output', () => {
  assert.equal(parseBinaryVersion('Firecracker v1.16.1\n\n'), '1.16.1');
  assert.equal(parseBinaryVersion('qemu 8.0'), undefined);
  assert.equal(parseSnapshotVersionOutput('v8.0.0\n'), '8.0.0');
});

test('snapshot format check: same major and no newer minor loads; anything else is refused naming both', () => {
  checkSnapshotFormat('8.0.0', '8.0.0');
  checkSnapshotFormat('8.0.3', '8.1.0');
  for (const [snap, bin] of [
    ['7.0.0', '8.0.0'],
    ['9.0.0', '8.0.0'],
    ['8.2.0', '8.1.0'],
  ]) {
    assert.throws(
      () => checkSnapshotFormat(snap, bin, { binaryVersion: '1.16.1' }),
      (e) =>
        isEmbersError(e, 'EMB_SNAPSHOT_VERSION_MISMATCH') &&
        e.message.includes(`v${snap}`) &&
        e.message.includes(`v${bin}`) &&
        e.message.includes('1.16.1'),
    );
  }
  assert.throws(
    () => checkSnapshotFormat('garbage', '8.0.0'),
    (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'),
  );
});

/** The first 16 bytes of a state file written by the real Firecracker v1.16.1 (not by embers). */
const REAL_HEAD = repoPath('test/fixtures/firecracker-v1.16.1-vmstate-head.bin');

test('snapshot state header: the framing of a real Firecracker v1.16.1 state file gives format 10.0.0', async () => {
  const head = await readFile(REAL_HEAD);
  assert.equal(head.toString('hex'), '000000648684191007063130' + '2e302e30', 'the fixture is the real file head');
  assert.equal(parseSnapshotHeader(head, 'real'), '10.0.0');
  const dir = await mkdtemp(join(tmpdir(), 'embers-fc-hdr-'));
  try {
    const real = join(dir, 'vmstate.bin');
    await writeFile(real, Buffer.concat([head, Buffer.alloc(4096, 0xa5)]));
    assert.equal(await readSnapshotFormatVersion(real), '10.0.0');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('snapshot state header: other files and damaged headers are refused as EMB_SNAPSHOT_CORRUPT, saying what is wrong', async () => {
  const head = await readFile(REAL_HEAD);
  const corrupt = (buf: Buffer, why: RegExp) =>
    assert.throws(
      () => parseSnapshotHeader(buf, 'x'),
      (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') && why.test((e as Error).message),
    );
  // The framing embers once assumed (magic at byte 0, u64 length): refused, not misread.
  const oldFraming = Buffer.alloc(22);
  oldFraming.writeBigUInt64LE(0x0710_1984_8664_0000n, 0);
  oldFraming.writeBigUInt64LE(6n, 8);
  oldFraming.write('10.0.0', 16);
  corrupt(oldFraming, /magic 0x[0-9a-f]+ at byte 1/);
  corrupt(Buffer.from('QEVM\0\0\0\x03 not firecracker at all'), /magic/);
  corrupt(head.subarray(0, 8), /only 8 bytes/);
  corrupt(head.subarray(0, 14), /version string length 6/);
  corrupt(Buffer.concat([head.subarray(0, 9), Buffer.from([2]), Buffer.from('10')]), /version string length 2/);
  corrupt(Buffer.concat([head.subarray(0, 9), Buffer.from([6]), Buffer.from('ten.00')]), /version "ten.00"/);
  await assert.rejects(readSnapshotFormatVersion('/nonexistent/vmstate.bin'), (e) =>
    isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'),
  );
});

test('firecracker ids are safe for --id and unique per VM dir', () => {
  const id = firecrackerId(spec);
  assert.match(id, /^[A-Za-z0-9-]{1,64}$/);
  assert.ok(id.startsWith('fn-1-test-'));
  assert.notEqual(firecrackerId({ ...spec, dir: '/other/home/fn_1.test' }), id);
  assert.match(firecrackerId({ name: 'x'.repeat(200), dir: '/d' }), /^[A-Za-z0-9-]{1,64}$/);
});

test('mount namespace wrapper: unshare a private mount ns, bind the disk on the fixed path, exec firecracker', () => {
  const w = wrapInMountNamespace('/usr/bin/firecracker', ['--api-sock', '/x/api.sock'], {
    fixedDir: '/run/embers/fc',
    diskPath: spec.diskPath,
  });
  assert.equal(w.command, 'unshare');
  assert.deepEqual(w.args.slice(0, 6), ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c']);
  assert.match(
    w.args[6],
    /mount -t tmpfs .* "\$1" && : > "\$1\/rootfs.ext4" && mount --bind "\$2" "\$1\/rootfs.ext4" && shift 2 && exec "\$@"/,
  );
  assert.deepEqual(w.args.slice(7), [
    'embers-fc-mountns',
    '/run/embers/fc',
    spec.diskPath,
    '/usr/bin/firecracker',
    '--api-sock',
    '/x/api.sock',
  ]);
  assert.equal(fixedDrivePath('/run/embers/fc'), '/run/embers/fc/rootfs.ext4');
});

test('layouts: default wraps netns around the mount namespace; the drive path is the fixed one', () => {
  const l = vmLayout(spec, {
    binary: '/usr/bin/firecracker',
    netns: true,
    mountNamespace: { fixedDir: '/run/embers/fc' },
    jailer: undefined,
  });
  assert.equal(l.kind, 'mount-namespace');
  assert.equal(l.launch.command, 'ip');
  assert.deepEqual(l.launch.args.slice(0, 4), ['netns', 'exec', 'embers-0-3', 'unshare']);
  assert.equal(l.launch.args.at(-4), '--api-sock');
  assert.deepEqual(l.launch.args.slice(-3), [join(spec.dir, 'api.sock'), '--id', firecrackerId(spec)]);
  assert.equal(l.fc.drive, '/run/embers/fc/rootfs.ext4');
  assert.equal(l.fc.kernel, spec.kernelPath);

  // No layout lets Firecracker see the VM's disk at its own path (a clone would reopen it).
  assert.throws(
    () => vmLayout(spec, { binary: '/usr/bin/firecracker', netns: false, mountNamespace: false, jailer: undefined }),
    (e) => isEmbersError(e, 'EMB_INTERNAL') && /reopen the source VM's disk/.test((e as Error).message),
  );
});

test('jailer: command line (uid/gid, chroot base, netns, cgroup v2) and identical in-jail paths for every VM', () => {
  const plan = jailerCommand(
    {
      uid: 123,
      gid: 456,
      chrootBaseDir: '/srv/jail',
      cgroups: { 'memory.max': '536870912', 'cpu.max': '50000 100000' },
      parentCgroup: 'embers',
    },
    { id: 'fn-1-abc', firecrackerBin: '/usr/local/bin/firecracker', netns: 'embers-0-3' },
  );
  assert.equal(plan.command, 'jailer');
  assert.deepEqual(plan.args, [
    '--id',
    'fn-1-abc',
    '--exec-file',
    '/usr/local/bin/firecracker',
    '--uid',
    '123',
    '--gid',
    '456',
    '--chroot-base-dir',
    '/srv/jail',
    '--cgroup-version',
    '2',
    '--parent-cgroup',
    'embers',
    '--cgroup',
    'cpu.max=50000 100000',
    '--cgroup',
    'memory.max=536870912',
    '--netns',
    '/var/run/netns/embers-0-3',
    '--',
    '--api-sock',
    '/run/firecracker.socket',
  ]);
  assert.equal(plan.chrootDir, '/srv/jail/firecracker/fn-1-abc/root');
  assert.equal(plan.cgroupDir, '/sys/fs/cgroup/embers/fn-1-abc');

  const jailer = { uid: 123, gid: 456, chrootBaseDir: '/srv/jail' };
  const a = vmLayout(spec, { binary: '/usr/local/bin/firecracker', netns: true, mountNamespace: false, jailer });
  const b = vmLayout(
    {
      ...spec,
      name: 'fn-2',
      dir: '/var/lib/embers/instances/fn-2',
      diskPath: '/var/lib/embers/instances/fn-2/disk.img',
    },
    { binary: '/usr/local/bin/firecracker', netns: true, mountNamespace: false, jailer },
  );
  assert.equal(a.kind, 'jail');
  assert.deepEqual(a.fc, b.fc, 'every jailed VM sees the same paths');
  assert.equal(a.fc.drive, IN_JAIL.rootfs);
  assert.equal(a.launch.command, 'jailer');
  assert.equal(a.launch.apiSocket, `/srv/jail/firecracker/${firecrackerId(spec)}/root/run/firecracker.socket`);
  assert.ok(a.launch.args.includes('--netns'));
  const ta = a.snapshotTargets('/out');
  assert.deepEqual([ta.stateFile, ta.memoryFile], [IN_JAIL.snapshotState, IN_JAIL.snapshotMemory]);
});

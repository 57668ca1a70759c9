/**
 * The Firecracker driver against the REAL Firecracker (EMBERS_FIRECRACKER_BIN, else the
 * v1.16.1 test build in ../shared/firecracker/bin/), through the driver's own code paths and
 * its real defaults: each VM in its slot's netns and a private mount namespace, or jailed.
 *
 * What runs where (see test/helpers/real-firecracker.ts):
 * - with the binary and root: versions; two VMs configured at once (every pre-boot call),
 *   each in its own netns and mount namespace, and proof from /proc/<pid>/fd that each
 *   Firecracker holds its own disk open, never the other's; the jailer flow;
 * - with /dev/kvm (PVM is enough): InstanceStart, pause/resume, Full and Diff snapshots, the
 *   state file's header, loads into two fresh clones at once with network overrides, resume,
 *   stop, no leaks; a Uffd load served by native/uffd-handler; the driver's page server
 *   recording a working set on one restore and prefetching it on the next;
 * - a guest that answers is the conformance suite's (`npm run test:firecracker`): it needs
 *   hardware KVM.
 * Each test that cannot run here says why.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config.js';
import { listGuestKits } from '../../src/guest/index.js';
import type { GuestKit } from '../../src/guest/kit.js';
import { run } from '../../src/util/exec.js';
import type { VmHandle, VmSnapshotFiles, VmSpec } from '../../src/vmm/driver.js';
import { FirecrackerClient } from '../../src/vmm/firecracker/client.js';
import { FirecrackerDriver, type FirecrackerDriverOptions } from '../../src/vmm/firecracker/driver.js';
import { hostPathInJail, IN_JAIL, jailerCommand } from '../../src/vmm/firecracker/jailer.js';
import { firecrackerId } from '../../src/vmm/firecracker/layout.js';
import { fixedDrivePath } from '../../src/vmm/firecracker/mount-namespace.js';
import { ensureUffdHandler, startUffdHandler } from '../../src/vmm/firecracker/uffd-handler.js';
import { readSnapshotFormatVersion, STATE_HEADER } from '../../src/vmm/firecracker/version.js';
import { pidAlive } from '../../src/vmm/process.js';
import { leakedSince, readHostResources, type HostResources } from '../helpers/leaks.js';
import { findRealFirecracker, vmmSideUnavailable, type RealFirecracker } from '../helpers/real-firecracker.js';
import { repoPath } from '../helpers/repo.js';
import { snapshotDirs } from '../helpers/snapshots.js';

let root: string;
let real: RealFirecracker | { skip: string };
let baseline: HostResources;
const netnses: string[] = [];
const started: { d: FirecrackerDriver; vm: VmHandle }[] = [];

before(async () => {
  real = await findRealFirecracker();
  // Disks and jails on one filesystem (the jail hard-links the disk).
  root = await mkdtemp(join(tmpdir(), 'embers-fcr-'));
  baseline = await readHostResources();
});

after(async () => {
  for (const { d, vm } of started) await d.stop(vm).catch(() => undefined);
  for (const ns of netnses) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  await rm(root, { recursive: true, force: true });
});

async function netnsWithTap(name: string, tap: string): Promise<string> {
  const ns = `embers-fcr-${process.pid}-${name}`;
  await run('ip', ['netns', 'add', ns]);
  netnses.push(ns);
  await run('ip', ['-n', ns, 'tuntap', 'add', 'dev', tap, 'mode', 'tap']);
  return ns;
}

async function deleteNetns(ns: string): Promise<void> {
  await run('ip', ['netns', 'del', ns]);
  netnses.splice(netnses.indexOf(ns), 1);
}

/** A VM spec in root/<name> with its own disk (its first bytes say whose it is) and a tap in its own netns. */
async function vmSpec(
  name: string,
  tap = 'tap0',
  kernel?: { kernelPath: string; initrdPath: string },
): Promise<VmSpec> {
  const dir = join(root, name);
  await mkdir(dir, { recursive: true });
  const diskPath = join(dir, 'disk.img');
  await writeFile(diskPath, Buffer.concat([Buffer.from(`disk-${name}`), Buffer.alloc(1024 * 1024 - name.length - 5)]));
  const kernelPath = join(root, 'vmlinux');
  const initrdPath = join(root, 'initrd.img');
  if (!kernel) {
    // The guest never starts in the configure-only tests: Firecracker only opens these files.
    await writeFile(kernelPath, '\x7fELF stand-in kernel', { flag: 'a' });
    await writeFile(initrdPath, 'stand-in initrd', { flag: 'a' });
  }
  return {
    name,
    dir,
    kernelPath: kernel?.kernelPath ?? kernelPath,
    initrdPath: kernel?.initrdPath ?? initrdPath,
    cmdline: 'console=ttyS0 reboot=k panic=1',
    diskPath,
    vcpus: 1,
    memoryMiB: 128,
    network: { netns: await netnsWithTap(name, tap), tapName: tap, guestMac: 'AA:FC:00:00:00:01' },
  };
}

function driver(r: RealFirecracker, opts: FirecrackerDriverOptions = {}): FirecrackerDriver {
  return new FirecrackerDriver({
    binary: r.binary,
    mountNamespace: { fixedDir: join(root, 'fc') },
    ctrlAltDelGraceMs: 500,
    sigtermGraceMs: 2000,
    ...opts,
  });
}

function track(d: FirecrackerDriver, vm: VmHandle): VmHandle {
  started.push({ d, vm });
  return vm;
}

/** A Full snapshot into root/snap-<name> of a VM booted from `kit` as <name>-src, then stopped; and its spec. */
async function bootAndSnapshot(
  d: FirecrackerDriver,
  name: string,
  kit: { kernelPath: string; initrdPath: string },
): Promise<{ src: VmSpec; files: VmSnapshotFiles }> {
  const src = await vmSpec(`${name}-src`, 'tap0', kit);
  const vm = track(d, (await d.boot(src)).vm);
  await d.pause(vm);
  const [out] = await snapshotDirs(root, `snap-${name}`);
  const files = await d.snapshot(vm, out);
  await d.stop(vm);
  return { src, files };
}

/** The files a process holds open: what it calls them (in its own mount namespace) and which file each is (dev:ino). */
async function openFiles(pid: number): Promise<{ fd: string; path: string; id: string }[]> {
  const out: { fd: string; path: string; id: string }[] = [];
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const path = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const st = await stat(`/proc/${pid}/fd/${fd}`).catch(() => undefined);
    if (st?.isFile()) out.push({ fd, path, id: `${st.dev}:${st.ino}` });
  }
  return out;
}

async function fileId(path: string): Promise<string> {
  const st = await stat(path);
  return `${st.dev}:${st.ino}`;
}

/** Each VM's Firecracker holds its own disk open at `drivePath`, and no other VM's disk. */
async function assertOwnDisks(vms: VmHandle[], drivePath: string): Promise<void> {
  const disks = await Promise.all(vms.map((vm) => fileId(vm.spec.diskPath)));
  for (const [i, vm] of vms.entries()) {
    const open = await openFiles(vm.pid);
    const own = open.filter((f) => f.id === disks[i]);
    assert.equal(
      own.length,
      1,
      `${vm.name}'s Firecracker (pid ${vm.pid}) holds its own disk open once: ${JSON.stringify(open)}`,
    );
    assert.equal(own[0].path, drivePath, `${vm.name} opened it at the drive path a snapshot records`);
    for (const [j, other] of disks.entries()) {
      if (j !== i)
        assert.ok(!open.some((f) => f.id === other), `${vm.name}'s Firecracker never opened ${vms[j].name}'s disk`);
    }
  }
}

async function nsInode(path: string): Promise<number> {
  return (await stat(path)).ino;
}

async function assertNoLeaks(): Promise<void> {
  assert.deepEqual(await leakedSince(baseline), {}, 'nothing left behind: processes, netns, links, mounts');
  assert.deepEqual(await readdir(join(root, 'fc')).catch(() => []), [], 'the fixed dir on the host stays empty');
}

/** What a VMM-side test needs here: a real binary, a /dev/kvm, and a guest kit (Firecracker loads its kernel at InstanceStart). */
async function vmmSide(): Promise<{ fc: RealFirecracker; kit: GuestKit } | { skip: string }> {
  if ('skip' in real) return real;
  const noKvm = await vmmSideUnavailable();
  if (noKvm) return { skip: noKvm };
  const kit = (await listGuestKits(resolveConfig().paths.guestCache))[0];
  if (!kit)
    return {
      skip: `needs a guest kit in ${resolveConfig().paths.guestCache} (Firecracker loads the kernel at InstanceStart): run \`embers guest build\``,
    };
  return { fc: real, kit };
}

test('real Firecracker: --version and --snapshot-version, and the state-file fixture belongs to this format', async (t) => {
  if ('skip' in real) return t.skip(real.skip);
  const d = driver(real);
  const version = await d.version();
  const format = await d.snapshotVersion();
  assert.match(version, /^\d+\.\d+\.\d+/);
  assert.match(format, /^\d+\.\d+\.\d+/);
  await d.checkSnapshotVersion(format);
  if (version === '1.16.1') {
    // The committed head of a real v1.16.1 state file carries the format this binary reports.
    const head = await readFile(repoPath('test/fixtures/firecracker-v1.16.1-vmstate-head.bin'));
    assert.equal(
      head
        .subarray(STATE_HEADER.versionOffset, STATE_HEADER.versionOffset + head[STATE_HEADER.lengthOffset])
        .toString(),
      format,
    );
  }
});

test('real Firecracker: two VMs configured at once, each in its own netns and mount namespace, each holding ITS OWN disk at the fixed path', async (t) => {
  if ('skip' in real) return t.skip(real.skip);
  const d = driver(real);
  const specs = await Promise.all(['one', 'two'].map((n) => vmSpec(`cfg-${n}`)));
  const vms = (await Promise.all(specs.map((s) => d.configure(s)))).map((r) => track(d, r.vm));
  const fixed = fixedDrivePath(join(root, 'fc'));
  await assertOwnDisks(vms, fixed);
  const hostMnt = await nsInode('/proc/self/ns/mnt');
  for (const vm of vms) {
    assert.equal(vm.driveLayout, 'mount-namespace');
    assert.equal(
      await nsInode(`/proc/${vm.pid}/ns/net`),
      await nsInode(`/var/run/netns/${vm.spec.network.netns}`),
      `${vm.name} runs in its slot's netns`,
    );
    assert.notEqual(
      await nsInode(`/proc/${vm.pid}/ns/mnt`),
      hostMnt,
      `${vm.name} runs in a mount namespace of its own`,
    );
    // What Firecracker itself reports: the fixed drive path and the slot's tap.
    const config = await new FirecrackerClient(vm.controlSocket).call('GET /vm/config', {});
    assert.equal(config.drives?.[0].path_on_host, fixed);
    assert.equal(config['network-interfaces']?.[0].host_dev_name, 'tap0');
    assert.equal((await new FirecrackerClient(vm.controlSocket).call('GET /', {})).state, 'Not started');
    assert.ok(await d.isOurs(vm));
  }
  assert.notEqual(await nsInode(`/proc/${vms[0].pid}/ns/mnt`), await nsInode(`/proc/${vms[1].pid}/ns/mnt`));
  for (const vm of vms) {
    await d.stop(vm);
    assert.equal(await pidAlive(vm.pid), false);
    assert.equal(await d.status(vm), 'stopped');
    await deleteNetns(vm.spec.network.netns);
  }
  await assertNoLeaks();
});

test('real jailer: chroot, uid/gid, netns; the disk linked into the jail is the one Firecracker holds; the jail is removed after', async (t) => {
  if ('skip' in real) return t.skip(real.skip);
  if (!real.jailer) return t.skip(`needs the jailer beside ${real.binary} (or EMBERS_JAILER_BIN)`);
  const jailer = { binary: real.jailer, uid: 65534, gid: 65534, chrootBaseDir: join(root, 'jails') };
  const d = driver(real, { jailer });
  const spec = await vmSpec('jailed');
  const vm = track(d, (await d.configure(spec)).vm);
  const plan = jailerCommand(jailer, {
    id: firecrackerId(spec),
    firecrackerBin: real.binary,
    netns: spec.network.netns,
  });
  assert.equal(vm.driveLayout, 'jail');
  const status = await readFile(`/proc/${vm.pid}/status`, 'utf8');
  assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m, 'Firecracker runs as the jail uid');
  assert.match(status, /^Gid:\s+65534\s+65534\s+65534\s+65534$/m, 'and the jail gid');
  // The jailer pivots into the chroot (in a mount namespace of its own): the process's root
  // is the jail, holding exactly what the jail dir on the host holds.
  assert.deepEqual(
    (await readdir(`/proc/${vm.pid}/root`)).sort(),
    (await readdir(plan.chrootDir)).sort(),
    'its root is the jail',
  );
  assert.ok(!(await readdir(`/proc/${vm.pid}/root`)).includes('etc'), 'and not the host root');
  assert.equal(await fileId(`/proc/${vm.pid}/root${IN_JAIL.rootfs}`), await fileId(spec.diskPath));
  assert.equal(
    await nsInode(`/proc/${vm.pid}/ns/net`),
    await nsInode(`/var/run/netns/${spec.network.netns}`),
    'in the slot netns (joined by the jailer)',
  );
  await assertOwnDisks([vm], IN_JAIL.rootfs);
  assert.equal(
    await fileId(hostPathInJail(plan, IN_JAIL.rootfs)),
    await fileId(spec.diskPath),
    'the in-jail disk is a hard link to the VM disk',
  );
  for (const p of [IN_JAIL.kernel, IN_JAIL.initrd, IN_JAIL.log, IN_JAIL.metrics])
    assert.ok((await stat(hostPathInJail(plan, p))).isFile(), `${p} is in the jail`);
  const config = await new FirecrackerClient(vm.controlSocket).call('GET /vm/config', {});
  assert.equal(config.drives?.[0].path_on_host, IN_JAIL.rootfs);
  await d.stop(vm);
  assert.equal(await pidAlive(vm.pid), false);
  await assert.rejects(stat(plan.jailDir), 'the jail dir is removed');
  assert.match(await readFile(spec.diskPath, 'latin1'), /^disk-jailed/, 'the VM disk itself stays');
  await deleteNetns(spec.network.netns);
  await assertNoLeaks();
});

test('real Firecracker, VMM side: boot, pause/resume, Full and Diff snapshots, state file parsed; two clones loaded at once in their own netns and mount namespaces with network overrides, each on its own disk; resume; stop, nothing left', async (t) => {
  const ready = await vmmSide();
  if ('skip' in ready) return t.skip(ready.skip);
  const { fc, kit } = ready;
  const d = driver(fc, { diffSnapshots: true });
  const src = await vmSpec('src', 'tap0', kit);
  const vm = track(d, (await d.boot(src)).vm);
  assert.equal(await d.status(vm), 'running');
  await d.pause(vm);
  assert.equal(await d.status(vm), 'paused');
  const [full, diff] = await snapshotDirs(root, 'snap-full', 'snap-diff');
  const files = await d.snapshot(vm, full);
  assert.equal(files.driveLayout, 'mount-namespace');
  await d.resume(vm);
  assert.equal(await d.status(vm), 'running');
  await d.pause(vm);
  const diffFiles = await d.snapshot(vm, diff, { type: 'Diff' });

  // The real state files: their header is read with the real framing, and begins like the committed fixture.
  const format = await d.snapshotVersion();
  const fixture = await readFile(repoPath('test/fixtures/firecracker-v1.16.1-vmstate-head.bin'));
  for (const f of [files, diffFiles]) {
    assert.equal(await readSnapshotFormatVersion(f.stateFile), format);
    const head = (await readFile(f.stateFile)).subarray(0, STATE_HEADER.lengthOffset);
    assert.deepEqual(head, fixture.subarray(0, STATE_HEADER.lengthOffset), 'the byte and the magic, as in the fixture');
  }
  const fullSize = (await stat(files.memoryFile)).size;
  assert.equal(fullSize, 128 * 1024 * 1024);
  const diffStat = await stat(diffFiles.memoryFile);
  assert.ok(
    diffStat.blocks * 512 < fullSize,
    `the Diff memory file is sparse (${diffStat.blocks * 512} of ${fullSize} bytes allocated)`,
  );
  await d.stop(vm);
  assert.equal(await pidAlive(vm.pid), false);

  // Two clones at once, each in its own netns (its tap named differently from the snapshot's).
  const clones = await Promise.all(['a', 'b'].map((n, i) => vmSpec(`clone-${n}`, `tap-c${i}`)));
  const restored = (
    await Promise.all(clones.map((c) => d.restore(c, files, { snapshotTapName: 'tap0', resume: false })))
  ).map((r) => track(d, r.vm));
  await assertOwnDisks(restored, fixedDrivePath(join(root, 'fc')));
  for (const [i, c] of restored.entries()) {
    assert.equal(await d.status(c), 'paused');
    const config = await new FirecrackerClient(c.controlSocket).call('GET /vm/config', {});
    assert.equal(config['network-interfaces']?.[0].host_dev_name, `tap-c${i}`, 'the network override took');
    assert.equal(await nsInode(`/proc/${c.pid}/ns/net`), await nsInode(`/var/run/netns/${c.spec.network.netns}`));
    await d.resume(c);
    assert.equal(await d.status(c), 'running');
  }
  for (const c of restored) {
    await d.stop(c);
    assert.equal(await pidAlive(c.pid), false);
  }
  for (const s of [src, ...clones]) await deleteNetns(s.network.netns);
  await assertNoLeaks();
});

test('real Firecracker, VMM side: a Uffd load served by native/uffd-handler (faults served during the load), resume, stop; the handler exits with Firecracker', async (t) => {
  const ready = await vmmSide();
  if ('skip' in ready) return t.skip(ready.skip);
  const { fc, kit } = ready;
  const d = driver(fc);
  const { src, files } = await bootAndSnapshot(d, 'uffd', kit);

  const clone = await vmSpec('uffd-clone');
  const handler = await startUffdHandler({
    binary: await ensureUffdHandler(resolveConfig().cacheDir),
    socketPath: join(clone.dir, 'uffd.sock'),
    memoryFile: files.memoryFile,
    statsPath: join(clone.dir, 'uffd-stats.json'),
    logPath: join(clone.dir, 'uffd.log'),
  });
  const restored = track(
    d,
    (await d.restore(clone, files, { memoryBackend: { type: 'Uffd', socketPath: handler.socketPath }, resume: false }))
      .vm,
  );
  assert.equal(restored.memoryFile, '');
  await d.resume(restored);
  assert.equal(await d.status(restored), 'running');
  await d.stop(restored);
  const stats = await handler.stats();
  assert.equal(stats.exit, 'process-exited', 'the handler exits when Firecracker does');
  assert.equal(stats.regions >= 1, true);
  assert.ok(
    stats.faults > 0 && stats.copied + stats.zeroed >= stats.faults - stats.already_mapped,
    `pages were served: ${JSON.stringify(stats)}`,
  );
  for (const s of [src, clone]) await deleteNetns(s.network.netns);
  await assertNoLeaks();
});

test("real Firecracker, VMM side: the driver's page server records a working set on one restore (the pages Firecracker and the guest touched) and prefetches it on the next, before resuming", async (t) => {
  const ready = await vmmSide();
  if ('skip' in ready) return t.skip(ready.skip);
  const { fc, kit } = ready;
  const d = driver(fc);
  const { src, files } = await bootAndSnapshot(d, 'ws', kit);
  const binary = await ensureUffdHandler(resolveConfig().cacheDir);

  const recordPath = join(root, 'ws.ranges');
  const recorder = await vmSpec('ws-record');
  const first = track(d, (await d.restore(recorder, files, { pageServer: { binary, recordPath } })).vm);
  assert.equal(await d.status(first), 'running');
  await d.stop(first);
  const recorded = await readFile(recordPath);
  assert.equal(recorded.subarray(0, 8).toString('latin1'), 'EMBWS1\0\0');
  const ranges = recorded.readUInt32LE(12);
  assert.ok(ranges > 0, 'the load itself touched guest memory');
  let pages = 0;
  for (let i = 0; i < ranges; i++) pages += recorded.readUInt32LE(24 + 16 * i);

  const clone = await vmSpec('ws-prefetch');
  const second = track(
    d,
    (await d.restore(clone, files, { pageServer: { binary, workingSet: { rangesPath: recordPath } } })).vm,
  );
  assert.equal(await d.status(second), 'running');
  await d.stop(second);
  const stats = JSON.parse(await readFile(join(clone.dir, 'uffd-stats.json'), 'utf8')) as {
    prefetched: number;
    already_mapped: number;
    exit: string;
  };
  assert.equal(stats.exit, 'process-exited');
  assert.equal(
    stats.prefetched + stats.already_mapped >= pages,
    true,
    `the working set was copied in: ${JSON.stringify(stats)}`,
  );
  for (const s of [src, recorder, clone]) await deleteNetns(s.network.netns);
  await assertNoLeaks();
});

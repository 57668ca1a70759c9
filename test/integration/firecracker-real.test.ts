/**
 * The Firecracker driver against a REAL Firecracker, with its real defaults (the slot's
 * netns, the private mount namespace). Runs only where EMBERS_FIRECRACKER_BIN names a
 * Firecracker binary and KVM is hardware-backed; everywhere else each test says why it was
 * skipped.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config.js';
import { listGuestKits } from '../../src/guest/index.js';
import { run } from '../../src/util/exec.js';
import { detectAccelerator } from '../../src/vmm/accel.js';
import type { VmHandle, VmSpec } from '../../src/vmm/driver.js';
import { FirecrackerDriver, findFirecracker } from '../../src/vmm/firecracker/driver.js';
import { pidAlive } from '../../src/vmm/process.js';

async function realFirecracker(): Promise<{ binary: string } | { skip: string }> {
  const env = process.env.EMBERS_FIRECRACKER_BIN;
  const binary = env ? await findFirecracker(env) : undefined;
  const accel = await detectAccelerator('auto');
  const lacks: string[] = [];
  if (!env) lacks.push('EMBERS_FIRECRACKER_BIN unset');
  else if (!binary) lacks.push(`no executable at EMBERS_FIRECRACKER_BIN=${env}`);
  if (accel.accelerator !== 'kvm') lacks.push(`no hardware-backed KVM (${accel.reason})`);
  if (lacks.length > 0 || !binary)
    return { skip: `needs a Firecracker binary (EMBERS_FIRECRACKER_BIN) and hardware-backed KVM: this host has ${lacks.join(' and ')}` };
  return { binary };
}

test('real Firecracker: --version and --snapshot-version', async (t) => {
  const real = await realFirecracker();
  if ('skip' in real) return t.skip(real.skip);
  const d = new FirecrackerDriver({ binary: real.binary });
  assert.match(await d.version(), /^\d+\.\d+\.\d+/);
  assert.match(await d.snapshotVersion(), /^\d+\.\d+\.\d+/);
  await d.checkSnapshotVersion(await d.snapshotVersion());
});

test('real Firecracker: boot in a netns and a private mount namespace, pause, snapshot, restore two clones (network overrides), stop', async (t) => {
  const real = await realFirecracker();
  if ('skip' in real) return t.skip(real.skip);
  const kits = await listGuestKits(resolveConfig().paths.guestCache);
  if (kits.length === 0) return t.skip(`needs a guest kit in ${resolveConfig().paths.guestCache}: run \`embers guest build\` first`);
  const kit = kits[0];
  const root = await mkdtemp(join(tmpdir(), 'embers-fc-real-'));
  const netns = `embers-fcreal-${process.pid}`;
  const d = new FirecrackerDriver({ binary: real.binary, vsockCid: 3, mountNamespace: { fixedDir: join(root, 'fc') } });
  const vms: VmHandle[] = [];
  await run('ip', ['netns', 'add', netns]);
  try {
    const spec = async (name: string, tapName: string): Promise<VmSpec> => {
      const dir = join(root, name);
      await mkdir(dir);
      return {
        name,
        dir,
        kernelPath: kit.kernelPath,
        initrdPath: kit.initrdPath,
        cmdline: 'console=ttyS0 8250.nr_uarts=1 reboot=k panic=1 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd',
        diskPath: join(dir, 'disk.img'),
        vcpus: 1,
        memoryMiB: 128,
        network: { netns, tapName, guestMac: 'AA:FC:00:00:00:01' },
      };
    };
    const src = await spec('source', 'tap0');
    await run('truncate', ['-s', '32M', src.diskPath]);
    await run('mkfs.ext4', ['-q', '-F', src.diskPath]);
    const { vm } = await d.boot(src);
    vms.push(vm);
    assert.equal(await d.status(vm), 'running');
    await d.pause(vm);
    await mkdir(join(root, 'snap'));
    const files = await d.snapshot(vm, join(root, 'snap'));
    await d.stop(vm);
    assert.equal(await pidAlive(vm.pid), false);

    for (const [i, name] of ['clone-1', 'clone-2'].entries()) {
      const c = await spec(name, `tap${i + 1}`);
      await copyFile(src.diskPath, c.diskPath);
      const r = await d.restore(c, files, { snapshotTapName: 'tap0' });
      vms.push(r.vm);
      assert.equal(await d.status(r.vm), 'running');
    }
  } finally {
    for (const vm of vms) await d.stop(vm).catch(() => undefined);
    await run('ip', ['netns', 'del', netns]).catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  }
});

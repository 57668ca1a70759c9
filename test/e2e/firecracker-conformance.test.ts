/**
 * The Firecracker conformance suite (`npm run test:firecracker`, which also runs the real
 * Firecracker integration tier): the whole system on the real Firecracker, on a host with
 * hardware KVM. A node with --vmm firecracker boots the test function, snapshots it and
 * restores N clones at once; every clone answers over HTTP, reads the files written before
 * the snapshot, writes to its own disk, and its disk passes e2fsck; each clone's Firecracker
 * holds its own disk open at the fixed path of its private mount namespace; and a clone
 * loaded through the Uffd page server (native/uffd-handler) answers too.
 *
 * Needs: root, a Firecracker binary (EMBERS_FIRECRACKER_BIN, else ../shared/firecracker/bin/),
 * hardware-backed KVM (vmx/svm, kvm_intel or kvm_amd), and the guest kit (scripts/setup.sh).
 * Elsewhere each test says what is missing and skips.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import { FirecrackerDriver } from '../../src/vmm/firecracker/driver.js';
import { fixedDrivePath, DEFAULT_FIXED_DIR } from '../../src/vmm/firecracker/mount-namespace.js';
import { ensureUffdHandler, startUffdHandler } from '../../src/vmm/firecracker/uffd-handler.js';
import { openTestNode } from '../helpers/node.js';
import { findRealFirecracker, guestUnavailable } from '../helpers/real-firecracker.js';
import { assertReadsBack, stopAndFsck, writeTestFile } from '../helpers/test-function.js';

const CLONES = Number(process.env.EMBERS_FC_CONFORMANCE_CLONES ?? 3);

async function unavailable(): Promise<string | undefined> {
  const real = await findRealFirecracker();
  if ('skip' in real) return real.skip;
  return guestUnavailable();
}

test(`Firecracker conformance: boot, snapshot, restore ${CLONES} clones at once; they answer HTTP, keep the files, write their own disks (e2fsck clean), each on its own disk; a Uffd-served clone answers`, async (t) => {
  const missing = await unavailable();
  if (missing) return t.skip(missing);
  const real = await findRealFirecracker();
  if ('skip' in real) return t.skip(real.skip);
  const tn = await openTestNode({ vmm: 'firecracker', firecrackerBin: real.binary });
  const { node } = tn;
  try {
    assert.equal(node.driver.kind, 'firecracker');
    const image = await buildTestFunctionImage(join(tn.home, 'fn'));
    await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
    const synced = { name: 'synced.bin', size: 300000, seed: 'a' };
    await writeTestFile(node, 'origin', synced);
    const snap = await node.snapshots.create('origin', { stop: true });
    const m = snap.manifest;
    assert.equal(m.vmm.kind, 'firecracker');

    const restored = await node.snapshots.restore(m.id, { count: CLONES });
    assert.equal(restored.clones.length, CLONES);
    const disks = await Promise.all(restored.clones.map(async (c) => (await stat(c.record.diskPath)).ino));
    for (const [i, c] of restored.clones.entries()) {
      const name = c.record.name;
      assert.equal(c.diskVerified, true);
      assert.equal((await node.invoke(name, { path: '/' })).body.trim(), 'hello from embers');
      await assertReadsBack(node, name, synced);
      await writeTestFile(node, name, { name: `own-${i}.bin`, size: 50000, seed: `c${i}` });
      // Mount-namespace isolation: this clone's Firecracker holds its own disk at the fixed path, no other clone's.
      const pid = c.record.vm.pid;
      const held: { path: string; ino: number }[] = [];
      for (const fd of await readdir(`/proc/${pid}/fd`)) {
        const st = await stat(`/proc/${pid}/fd/${fd}`).catch(() => undefined);
        if (st?.isFile()) held.push({ path: await readlink(`/proc/${pid}/fd/${fd}`), ino: st.ino });
      }
      assert.deepEqual(
        held.filter((h) => disks.includes(h.ino)),
        [{ path: fixedDrivePath(DEFAULT_FIXED_DIR), ino: disks[i] }],
      );
    }
    for (const c of restored.clones) await stopAndFsck(node, c.record.name);

    // The page server: one more VM loaded from the snapshot's files with the Uffd backend.
    const driver = node.driver as FirecrackerDriver;
    const files = {
      stateFile: join(node.config.paths.snapshots, m.id, 'vmstate.bin'),
      memoryFile: join(node.config.paths.snapshots, m.id, 'memory.bin'),
    };
    const uffdClone = await node.snapshots.restore(m.id, { count: 1 });
    const rec = uffdClone.clones[0].record;
    await driver.stop(rec.vm);
    const handler = await startUffdHandler({
      binary: await ensureUffdHandler(node.config.cacheDir),
      socketPath: join(rec.vm.dir, 'uffd.sock'),
      memoryFile: files.memoryFile,
      statsPath: join(rec.vm.dir, 'uffd-stats.json'),
      logPath: join(rec.vm.dir, 'uffd.log'),
    });
    const { vm } = await driver.restore(rec.vm.spec, files, {
      memoryBackend: { type: 'Uffd', socketPath: handler.socketPath },
      snapshotTapName: m.guestNetwork.tapName,
    });
    await node.instances.complete({ ...rec, vm });
    assert.equal((await node.invoke(rec.name, { path: '/' })).body.trim(), 'hello from embers');
    await node.stop(rec.name);
    const stats = await handler.stats();
    assert.ok(stats.copied > 0, `the page server served pages: ${JSON.stringify(stats)}`);
  } finally {
    await tn.close();
  }
});

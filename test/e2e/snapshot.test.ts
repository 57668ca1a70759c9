import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import { run } from '../../src/util/exec.js';
import { sha256File } from '../../src/util/fs.js';
import { openTestNode } from '../helpers/node.js';
import { assertReadsBack, stopAndFsck, writeTestFile } from '../helpers/test-function.js';

test('local snapshots: create once, restore 3 clones concurrently; files written before the snapshot survive, disks bit-identical and clean', async () => {
  const t = await openTestNode();
  const { node } = t;
  try {
    const image = await buildTestFunctionImage(join(t.home, 'fn'));
    const rec = await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
    // one file synced to disk, one only in the guest's page cache at snapshot time
    const synced = { name: 'synced.bin', size: 300000, seed: 'a' };
    const cached = { name: 'cached.bin', size: 70000, seed: 'b' };
    await writeTestFile(node, 'origin', synced);
    await writeTestFile(node, 'origin', cached, false);

    const snap = await node.snapshots.create('origin');
    const m = snap.manifest;
    assert.equal(m.disk.diff, 'block');
    assert.ok(m.disk.changedBytes > 0);
    assert.deepEqual(m.files.map((f) => f.name).sort(), ['disk.delta', 'memory.bin', 'vmstate.bin']);
    // the origin was resumed and keeps working
    assert.equal((await node.invoke('origin', { path: '/' })).body.trim(), 'hello from embers');

    const restored = await node.snapshots.restore(m.id, { count: 3 });
    assert.equal(restored.clones.length, 3);
    assert.equal(new Set(restored.clones.map((c) => c.record.cloneIp)).size, 3, 'each clone has its own address');
    assert.equal(new Set(restored.clones.map((c) => c.record.diskPath)).size, 3, 'each clone has its own disk');
    // the materialised disk is bit-identical to the disk at pause
    const materialised = join(t.home, 'restore', m.id, 'disk.img');
    assert.equal(await sha256File(materialised), m.disk.sha256AtPause);
    for (const c of restored.clones) {
      assert.equal(c.diskVerified, true);
      const name = c.record.name;
      await assertReadsBack(node, name, synced);
      await assertReadsBack(node, name, cached);
      // each clone keeps working: more writes, on its own disk
      await writeTestFile(node, name, { name: `${name}.bin`, size: 50000, seed: name });
      const files = (await node.invoke(name, { path: '/cgi-bin/files' })).body;
      assert.match(files, new RegExp(`${name}\\.bin`));
      for (const other of restored.clones)
        if (other.record.name !== name) assert.doesNotMatch(files, new RegExp(`${other.record.name}\\.bin`));
    }
    for (const c of restored.clones) await stopAndFsck(node, c.record.name);
    await stopAndFsck(node, rec.name);
  } finally {
    await t.close();
  }
});

test('rsync disk diff (the seed method): its restored disk is NOT bit-identical, so embers refuses it unless told otherwise', async () => {
  const t = await openTestNode();
  const { node } = t;
  try {
    const image = await buildTestFunctionImage(join(t.home, 'fn'));
    await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
    await node.invoke('origin', { path: '/cgi-bin/write?name=synced.bin&size=300000&seed=a&sync=1' });
    const snap = await node.snapshots.create('origin', { diskDiff: 'rsync', stop: true });
    assert.deepEqual(snap.manifest.files.map((f) => f.name).sort(), ['disk.rsync-batch', 'memory.bin', 'vmstate.bin']);
    await assert.rejects(node.snapshots.restore(snap.manifest.id), (err) =>
      isEmbersError(err, 'EMB_SNAPSHOT_DISK_MISMATCH'),
    );
    // the truth about the method: the file tree is patched, the bytes are not the disk at pause
    const { path, verified } = await node.snapshots.restoredDisk(snap.manifest, { allowUnverifiedDisk: true });
    assert.equal(verified, false);
    assert.notEqual(await sha256File(path), snap.manifest.disk.sha256AtPause);
    const ls = await run('debugfs', ['-R', 'ls -l /data', path]);
    assert.match(ls.stdout, /synced\.bin/, 'the rsync batch did carry the file itself');
  } finally {
    await t.close();
  }
});

test('corrupt, truncated, missing, extra or foreign snapshot files are refused before any VM starts', async () => {
  const t = await openTestNode();
  const { node } = t;
  try {
    const image = await buildTestFunctionImage(join(t.home, 'fn'));
    await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
    const snap = await node.snapshots.create('origin', { stop: true });
    const dir = node.snapshots.store.pathOf(snap.manifest.id);
    const backup = join(t.home, 'backup');
    await cp(dir, backup, { recursive: true });
    const reset = async () => {
      await rm(dir, { recursive: true, force: true });
      await cp(backup, dir, { recursive: true });
    };
    const refused = async (what: string, code: 'EMB_SNAPSHOT_CORRUPT' | 'EMB_SNAPSHOT_INCOMPATIBLE') => {
      await assert.rejects(node.snapshots.restore(snap.manifest.id), (err) => isEmbersError(err, code), what);
      assert.deepEqual(await node.list(), [], `${what}: no instance may exist`);
      await reset();
    };
    // a flipped byte in the middle of the memory file
    const fh = await open(join(dir, 'memory.bin'), 'r+');
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, 4096 * 100);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, 4096 * 100);
    await fh.close();
    await refused('flipped byte in memory.bin', 'EMB_SNAPSHOT_CORRUPT');
    await truncate(join(dir, 'vmstate.bin'), 1000);
    await refused('truncated vmstate.bin', 'EMB_SNAPSHOT_CORRUPT');
    await rm(join(dir, 'disk.delta'));
    await refused('missing disk.delta', 'EMB_SNAPSHOT_CORRUPT');
    await writeFile(join(dir, 'extra.bin'), 'x');
    await refused('a file the manifest does not list', 'EMB_SNAPSHOT_CORRUPT');
    await writeFile(join(dir, 'manifest.json'), '{"formatVersion":1,');
    await refused('a truncated manifest', 'EMB_SNAPSHOT_CORRUPT');
    const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
    await writeFile(
      join(dir, 'manifest.json'),
      JSON.stringify({ ...manifest, vmm: { ...manifest.vmm, kind: 'firecracker' } }),
    );
    await refused('a snapshot made by another hypervisor', 'EMB_SNAPSHOT_INCOMPATIBLE');
    // the intact snapshot still restores
    const ok = await node.snapshots.restore(snap.manifest.id);
    assert.equal((await node.invoke(ok.clones[0].record.name, { path: '/' })).body.trim(), 'hello from embers');
  } finally {
    await t.close();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  IN_JAIL,
  hostPathInJail,
  jailerCommand,
  moveOutOfJail,
  removeJail,
  stageIntoJail,
  touchInJail,
} from '../../src/vmm/firecracker/jailer.js';

test('jail staging: the disk is linked (same inode) and owned by the jail uid, read-only inputs keep their owner; snapshot files move out; removal keeps the disk', async (t) => {
  if (process.getuid?.() !== 0)
    return t.skip(`needs root to chown into the jail: this process runs as uid ${process.getuid?.()}`);
  const root = await mkdtemp(join(tmpdir(), 'embers-fc-jail-'));
  try {
    const disk = join(root, 'disk.img');
    const kernel = join(root, 'vmlinux');
    await writeFile(disk, 'disk-bytes');
    await writeFile(kernel, 'kernel-bytes');
    const plan = jailerCommand(
      { uid: 12345, gid: 23456, chrootBaseDir: join(root, 'jails') },
      { id: 'vm-1', firecrackerBin: '/usr/local/bin/firecracker' },
    );
    await stageIntoJail(plan, [
      { host: disk, inJail: IN_JAIL.rootfs, writable: true },
      { host: kernel, inJail: IN_JAIL.kernel, writable: false },
    ]);
    await touchInJail(plan, [IN_JAIL.log, IN_JAIL.metrics]);
    const inJailDisk = await stat(hostPathInJail(plan, IN_JAIL.rootfs));
    assert.equal(inJailDisk.ino, (await stat(disk)).ino, 'the disk is a hard link: writes reach the VM disk');
    assert.deepEqual([inJailDisk.uid, inJailDisk.gid], [12345, 23456]);
    assert.equal((await stat(kernel)).uid, 0, 'linking the kernel did not change its owner');
    assert.equal((await stat(hostPathInJail(plan, IN_JAIL.log))).uid, 12345);
    assert.equal((await stat(hostPathInJail(plan, '/snapshot'))).uid, 12345);

    await writeFile(hostPathInJail(plan, IN_JAIL.snapshotState), 'state');
    await moveOutOfJail(plan, IN_JAIL.snapshotState, join(root, 'vmstate.bin'));
    assert.equal(await readFile(join(root, 'vmstate.bin'), 'utf8'), 'state');

    assert.deepEqual(await removeJail(plan), []);
    await assert.rejects(access(plan.jailDir));
    assert.equal(await readFile(disk, 'utf8'), 'disk-bytes', 'removing the jail keeps the VM disk');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

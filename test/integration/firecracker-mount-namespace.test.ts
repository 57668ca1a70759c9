/**
 * The disk-path answer to firecracker#4014, for real: each Firecracker process runs in a
 * private mount namespace where one fixed path is bound to its own disk. Uses util-linux's
 * unshare and mount (root), with the fake firecracker for the driver flow.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../../src/util/exec.js';
import { FirecrackerDriver } from '../../src/vmm/firecracker/driver.js';
import { fixedDrivePath, prepareFixedDir, wrapInMountNamespace } from '../../src/vmm/firecracker/mount-namespace.js';
import { pidAlive } from '../../src/vmm/process.js';
import { ensureFakeExecutable, find, makeSpec, recorded } from '../helpers/fake-firecracker.js';

let root: string;
const isRoot = process.getuid?.() === 0;
const NEEDS_ROOT = `needs root (CAP_SYS_ADMIN) for unshare --mount and mount --bind: this process runs as uid ${process.getuid?.()}`;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'embers-fc-mountns-'));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

async function hostMountsMention(path: string): Promise<string[]> {
  return (await readFile('/proc/self/mounts', 'utf8')).split('\n').filter((l) => l.includes(path));
}

test('two processes see two different disks at the same fixed path; the host sees neither mount', async (t) => {
  if (!isRoot) return t.skip(NEEDS_ROOT);
  const fixedDir = join(root, 'fc-wrapper');
  await prepareFixedDir(fixedDir);
  const disks = ['one', 'two'].map((n) => join(root, `${n}.img`));
  await Promise.all(disks.map((d, i) => writeFile(d, `disk-${i === 0 ? 'one' : 'two'}`)));
  const probe = (disk: string) => {
    const w = wrapInMountNamespace(
      '/bin/sh',
      [
        '-c',
        `cat ${fixedDrivePath(fixedDir)}; echo; stat -c %d:%i ${fixedDrivePath(fixedDir)}; echo written-by-guest >> ${fixedDrivePath(fixedDir)}`,
      ],
      { fixedDir, diskPath: disk },
    );
    return run(w.command, w.args);
  };
  const [a, b] = await Promise.all(disks.map(probe));
  const [aText, aId] = a.stdout.trim().split('\n');
  const [bText, bId] = b.stdout.trim().split('\n');
  assert.equal(aText, 'disk-one');
  assert.equal(bText, 'disk-two');
  const ids = await Promise.all(disks.map(async (d) => `${(await stat(d)).dev}:${(await stat(d)).ino}`));
  assert.deepEqual([aId, bId], ids, 'the fixed path is the disk itself (same device and inode), not a copy');
  assert.match(await readFile(disks[0], 'utf8'), /written-by-guest/, 'writes reach the VM disk');
  assert.deepEqual(await hostMountsMention(fixedDir), [], 'no mount leaks into the host namespace');
  assert.deepEqual(await readdir(fixedDir), [], 'the host fixed dir stays empty');
});

test('snapshots record the fixed path; every clone loads ITS OWN disk there, even after the source disk is gone', async (t) => {
  if (!isRoot) return t.skip(NEEDS_ROOT);
  const fake = await ensureFakeExecutable();
  const fixedDir = join(root, 'fc');
  const d = new FirecrackerDriver({
    binary: fake,
    netns: false,
    mountNamespace: { fixedDir },
    ctrlAltDelGraceMs: 2000,
    sigtermGraceMs: 1000,
  });
  const src = await makeSpec(root, 'source');
  const { vm } = await d.boot(src);
  try {
    assert.equal(
      find(await recorded(src.dir), 'PUT /drives/{drive_id}')[0].body?.path_on_host,
      fixedDrivePath(fixedDir),
    );
    await d.pause(vm);
    await mkdir(join(root, 'snap'));
    const files = await d.snapshot(vm, join(root, 'snap'));
    await d.stop(vm);
    await rm(src.diskPath);

    const clones = await Promise.all(['clone-a', 'clone-b', 'clone-c'].map((n) => makeSpec(root, n)));
    const restored = await Promise.all(clones.map((c) => d.restore(c, files)));
    try {
      for (const [i, c] of clones.entries()) {
        const log = await readFile(join(c.dir, 'firecracker.log'), 'utf8');
        const st = await stat(c.diskPath);
        const opened = /drive vda opened (\S+) \(dev (\d+) ino (\d+) head "([^"]*)"\)/.exec(log);
        assert.ok(opened, `${c.name}: the load opened the drive`);
        assert.equal(opened[1], fixedDrivePath(fixedDir), 'at the path the snapshot recorded');
        assert.equal(`${opened[2]}:${opened[3]}`, `${st.dev}:${st.ino}`, `${c.name} opened its own disk`);
        assert.equal(opened[4], `disk-${c.name}`);
        assert.equal(await d.status(restored[i].vm), 'running');
      }
      assert.deepEqual(await hostMountsMention(fixedDir), []);
    } finally {
      await Promise.all(restored.map((r) => d.stop(r.vm)));
    }
    for (const r of restored) assert.equal(await pidAlive(r.vm.pid), false);
    assert.deepEqual(await readdir(fixedDir), []);
  } finally {
    if (await pidAlive(vm.pid)) process.kill(vm.pid, 'SIGKILL');
  }
});

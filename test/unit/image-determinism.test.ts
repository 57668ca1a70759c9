import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, mkdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/image/store.js';
import { LayerApplier } from '../../src/image/extract.js';
import { buildRootfs, ROOTFS_EPOCH, FLATTENER_VERSION } from '../../src/image/flatten.js';
import { readTar } from '../../src/image/tar.js';
import { writeTar, type TarWriteEntry } from '../../src/examples/tar-writer.js';
import { sha256File } from '../../src/util/fs.js';
import {
  FIXTURE_MTIME,
  layerEntries,
  writeOciLayout,
  type FixtureImage,
  type FixtureLayer,
} from '../../src/examples/oci-layout.js';
import { catImage, fsck, lsImage, statImage, tempDir, xattrsImage } from './image-helpers.js';

const CAP_NET_RAW = Buffer.from('0100000200200000000000000000000000000000', 'hex');

/** An image exercising every kind of entry, 2 layers, a few hundred files. */
function richImage(): FixtureImage {
  const base: FixtureLayer['entries'] = [
    { path: './', type: 'dir', mode: 0o755, mtime: 1_650_000_000 },
    { path: 'usr', type: 'dir', mode: 0o755 },
    { path: 'usr/lib', type: 'dir', mode: 0o755 },
    { path: 'etc', type: 'dir', mode: 0o755 },
  ];
  for (let i = 0; i < 300; i++)
    base.push({
      path: `usr/lib/lib${i}.so`,
      type: 'file',
      mode: 0o644,
      content: `library ${i}\n`.repeat(i % 7),
      mtime: 1_600_000_000 + i,
    });
  base.push(
    { path: 'etc/passwd', type: 'file', mode: 0o644, content: 'root:x:0:0::/root:/bin/sh\n' },
    { path: 'usr/bin/su', type: 'file', mode: 0o4755, uid: 0, gid: 0, content: 'setuid' },
    { path: 'usr/bin/wall', type: 'file', mode: 0o2755, uid: 0, gid: 5, content: 'setgid' },
    {
      path: 'usr/bin/ping',
      type: 'file',
      mode: 0o755,
      content: 'ping',
      xattrs: { 'security.capability': CAP_NET_RAW },
    },
    { path: 'home/user', type: 'dir', mode: 0o700, uid: 1000, gid: 1000 },
    {
      path: 'home/user/notes',
      type: 'file',
      mode: 0o600,
      uid: 1000,
      gid: 1000,
      content: 'mine',
      xattrs: { 'user.tag': 'blue' },
    },
    { path: 'tmp', type: 'dir', mode: 0o1777 },
    { path: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
    { path: 'dev/loop0', type: 'block', mode: 0o660, gid: 6, devmajor: 7, devminor: 0 },
    { path: 'run/fifo', type: 'fifo', mode: 0o600 },
    { path: 'usr/lib/libfoo.so', type: 'symlink', linkname: 'lib1.so' },
    { path: 'usr/lib/abs', type: 'symlink', linkname: '/etc/passwd' },
    { path: `usr/lib/long-target`, type: 'symlink', linkname: `/opt/${'x'.repeat(120)}/y` },
    { path: 'usr/bin/su-hard', type: 'hardlink', linkname: 'usr/bin/su' },
    { path: `usr/share/${'deep/'.repeat(25)}file-with-a-long-name-${'z'.repeat(80)}`, type: 'file', content: 'deep' },
    { path: 'usr/share/ünïcødé ✓', type: 'file', content: 'utf8 name' },
    { path: 'var/sparse', type: 'file', content: Buffer.concat([Buffer.alloc(1 << 20), Buffer.from('end')]) },
    { path: 'var/big', type: 'file', content: Buffer.alloc(300_000, 0xab) },
  );
  const top: FixtureLayer['entries'] = [
    { path: 'etc/hostname', type: 'file', content: 'embers\n', mtime: 1_700_000_100 },
    { path: 'usr/lib/lib5.so', type: 'file', content: 'replaced' },
    { type: 'whiteout', path: 'usr/lib/lib6.so' },
    { path: 'usr/lib/lib7.so', type: 'symlink', linkname: 'lib8.so' },
  ];
  return {
    layers: [{ entries: base }, { entries: top, compression: 'zstd' }],
    config: {
      Entrypoint: ['/usr/bin/app'],
      Cmd: ['--serve'],
      Env: ['PATH=/usr/bin', 'A=1'],
      WorkingDir: '/srv',
      User: '1000:1000',
      ExposedPorts: ['9000/tcp', '80/tcp'],
    },
  };
}

test('two flattenings of one image give the same rootfs bytes, whatever tmpfs/ext4 staging, umask, env and clock', async (t) => {
  const layout = await tempDir(t, 'det-layout');
  const written = await writeOciLayout(layout, richImage(), { refName: 'rich' });
  const a = await tempDir(t, 'det-a');
  const aTmp = await tempDir(t, 'det-a-tmp', '/dev/shm');
  const b = await tempDir(t, 'det-b');

  const savedUmask = process.umask();
  const savedEnv = { ...process.env };
  let first;
  try {
    process.umask(0o077);
    process.env.E2FSPROGS_FAKE_TIME = '123456789';
    process.env.MKE2FS_CONFIG = '/nonexistent/mke2fs.conf';
    process.env.MKE2FS_DEVICE_SECTSIZE = '4096';
    process.env.LC_ALL = 'C.UTF-8';
    first = await new ImageStore(join(a, 'images'), aTmp).ensure(layout);
  } finally {
    process.umask(savedUmask);
    for (const k of ['E2FSPROGS_FAKE_TIME', 'MKE2FS_CONFIG', 'MKE2FS_DEVICE_SECTSIZE', 'LC_ALL']) {
      if (savedEnv[k] === undefined) delete process.env[k];
      else process.env[k] = savedEnv[k];
    }
  }
  await new Promise((r) => setTimeout(r, 1100)); // another second: every ctime differs
  process.umask(0o022);
  const second = await new ImageStore(join(b, 'images'), join(b, 'tmp')).ensure(`${layout}:rich`);
  process.umask(savedUmask);

  assert.equal(first.manifestDigest, written.manifestDigest);
  assert.equal(second.manifestDigest, written.manifestDigest);
  assert.equal(first.rootfsSha256, second.rootfsSha256);
  assert.equal(await sha256File(first.rootfsPath), first.rootfsSha256);
  assert.equal(await sha256File(second.rootfsPath), first.rootfsSha256);
  assert.equal(first.flattenerVersion, FLATTENER_VERSION);
  assert.deepEqual(first.config, {
    entrypoint: ['/usr/bin/app'],
    cmd: ['--serve'],
    env: ['PATH=/usr/bin', 'A=1'],
    workingDir: '/srv',
    user: '1000:1000',
    exposedPorts: ['80/tcp', '9000/tcp'],
  });

  // What the rootfs holds.
  const img = first.rootfsPath;
  assert.equal(fsck(img), 0);
  const root = statImage(img, '/');
  assert.equal(root.mode & 0o7777, 0o755);
  assert.equal(root.mtime, 1_650_000_000);
  const su = statImage(img, '/usr/bin/su');
  assert.equal(su.mode & 0o7777, 0o4755);
  assert.equal(su.links, 2);
  assert.equal(statImage(img, '/usr/bin/su-hard').ino, su.ino);
  assert.equal(su.mtime, FIXTURE_MTIME);
  for (const f of ['ctime', 'atime', 'crtime'] as const) assert.equal(su[f], ROOTFS_EPOCH, f);
  assert.equal(statImage(img, '/usr/bin/wall').mode & 0o7777, 0o2755);
  assert.equal(statImage(img, '/usr/bin/wall').gid, 5);
  const home = statImage(img, '/home/user');
  assert.deepEqual([home.mode & 0o7777, home.uid, home.gid], [0o700, 1000, 1000]);
  assert.equal(statImage(img, '/tmp').mode & 0o7777, 0o1777);
  assert.equal(statImage(img, '/usr/lib/lib3.so').mtime, 1_600_000_003);
  assert.equal(statImage(img, '/usr').mtime, FIXTURE_MTIME);
  assert.match(statImage(img, '/dev/null').raw, /Type: character special/);
  assert.match(statImage(img, '/dev/null').raw, /Device major\/minor number: 01:03/);
  assert.match(statImage(img, '/dev/loop0').raw, /Type: block special/);
  assert.match(statImage(img, '/run/fifo').raw, /Type: FIFO/);
  assert.match(statImage(img, '/usr/lib/abs').raw, /Fast link dest: "\/etc\/passwd"/);
  assert.equal(statImage(img, '/usr/lib/long-target').size, `/opt/${'x'.repeat(120)}/y`.length);
  assert.match(xattrsImage(img, '/usr/bin/ping'), /security\.capability \(20\)/);
  assert.match(xattrsImage(img, '/home/user/notes'), /user\.tag \(4\) = "blue"/);
  assert.equal(catImage(img, '/usr/lib/lib5.so').toString(), 'replaced');
  assert.equal(catImage(img, '/usr/share/ünïcødé ✓').toString(), 'utf8 name');
  assert.ok(!lsImage(img, '/usr/lib').some((e) => e.name === 'lib6.so'), 'whiteout applied');
  assert.ok(!lsImage(img, '/usr/lib').some((e) => e.name.startsWith('.wh.')), 'no whiteout file');
  const sparse = catImage(img, '/var/sparse');
  assert.equal(sparse.length, (1 << 20) + 3);
  assert.equal(sparse.subarray(-3).toString(), 'end');
});

/** Deterministic shuffle that keeps hard links after everything else (their targets must exist). */
function shuffled(entries: TarWriteEntry[], seed: number): TarWriteEntry[] {
  const out = [...entries];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (x * 16807) % 2147483647;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return [...out.filter((e) => e.type !== 'hardlink'), ...out.filter((e) => e.type === 'hardlink')];
}

async function stageAndBuild(
  stagingBase: string,
  outDir: string,
  layers: TarWriteEntry[][],
  touch: boolean,
): Promise<string> {
  const staging = join(stagingBase, 'staging');
  await mkdir(staging);
  const applier = new LayerApplier(staging, ROOTFS_EPOCH);
  for (const [i, entries] of layers.entries()) {
    async function* one() {
      yield writeTar(entries);
    }
    await applier.applyLayer(readTar(one()), `layer ${i + 1}`);
  }
  const tree = await applier.finish();
  if (touch) {
    // Read files (atime) and rewrite times (ctime) after staging: none of it may leak.
    await readFile(join(staging, 'etc/passwd'));
    await utimes(join(staging, 'etc/passwd'), 1, 1);
    await utimes(join(staging, 'etc/passwd'), FIXTURE_MTIME, FIXTURE_MTIME);
  }
  const out = join(outDir, 'rootfs.ext4');
  await buildRootfs({ stagingDir: staging, outPath: out, manifestDigest: `sha256:${'ab'.repeat(32)}`, tree });
  return sha256File(out);
}

test('the staged tree gives the same rootfs whatever the entry order, umask, host file system (tmpfs vs ext4) and clock', async (t) => {
  const layers = richImage().layers.map(layerEntries);
  const shmDir = await tempDir(t, 'det-shm', '/dev/shm');
  const extDir = await tempDir(t, 'det-ext4', '/tmp');
  const extDir2 = await tempDir(t, 'det-ext4b', '/tmp');
  const savedUmask = process.umask();
  try {
    process.umask(0o022);
    const inOrder = await stageAndBuild(shmDir, shmDir, layers, false);
    await new Promise((r) => setTimeout(r, 1100));
    process.umask(0o077);
    const shuffledSha = await stageAndBuild(
      extDir,
      extDir,
      layers.map((l, i) => shuffled(l, 7 + i)),
      true,
    );
    process.umask(0o002);
    const reversed = await stageAndBuild(
      extDir2,
      extDir2,
      layers.map((l) => shuffled([...l].reverse(), 1)),
      true,
    );
    assert.equal(shuffledSha, inOrder);
    assert.equal(reversed, inOrder);
  } finally {
    process.umask(savedUmask);
  }
  await writeFile(join(extDir, 'done'), '');
});

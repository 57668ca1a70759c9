import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasTrailer, parseCpio, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, writeCpio } from '../../src/guest/cpio.js';

test('cpio: what is written parses back', () => {
  const busy = Buffer.from([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
  const buf = writeCpio([
    { type: 'dir', name: 'bin' },
    { type: 'file', name: '/bin/busybox', mode: 0o755, data: busy },
    { type: 'symlink', name: './bin/sh', target: '/bin/busybox' },
    { type: 'dir', name: 'dev' },
    { type: 'chardev', name: 'dev/console', mode: 0o600, major: 5, minor: 1 },
    { type: 'file', name: 'empty', data: '' },
    { type: 'file', name: 'etc-ü', data: 'héllo\n', uid: 1000, gid: 1001, mtime: 1234567 },
  ]);
  const entries = parseCpio(buf);
  assert.deepEqual(
    entries.map((e) => e.name),
    ['bin', 'bin/busybox', 'bin/sh', 'dev', 'dev/console', 'empty', 'etc-ü'],
  );
  const [bin, bb, sh, , con, empty, etc] = entries;
  assert.equal(bin.mode & S_IFMT, S_IFDIR);
  assert.equal(bin.mode & 0o7777, 0o755);
  assert.equal(bin.nlink, 2);
  assert.equal(bb.mode, S_IFREG | 0o755);
  assert.deepEqual(bb.data, busy);
  assert.equal(sh.mode & S_IFMT, S_IFLNK);
  assert.equal(sh.data.toString(), '/bin/busybox');
  assert.equal(con.mode, S_IFCHR | 0o600);
  assert.equal(con.rdevMajor, 5);
  assert.equal(con.rdevMinor, 1);
  assert.equal(empty.data.length, 0);
  assert.equal(etc.data.toString('utf8'), 'héllo\n');
  assert.equal(etc.uid, 1000);
  assert.equal(etc.gid, 1001);
  assert.equal(etc.mtime, 1234567);
  // unique inode numbers
  assert.equal(new Set(entries.map((e) => e.ino)).size, entries.length);
});

test('cpio: headers and data are 4-byte aligned, archive ends with the trailer', () => {
  const sizes = [0, 1, 2, 3, 4, 5, 7, 8, 9];
  const buf = writeCpio(
    sizes.map((n, i) => ({ type: 'file' as const, name: `f${'x'.repeat(i)}`, data: Buffer.alloc(n, 0x61) })),
  );
  assert.equal(buf.length % 4, 0);
  assert.ok(hasTrailer(buf));
  assert.equal(buf.toString('ascii', 0, 6), '070701');
  for (const e of parseCpio(buf)) {
    assert.equal(e.offset % 4, 0, `header of ${e.name} at ${e.offset}`);
    const dataOffset = e.data.byteOffset - buf.byteOffset;
    if (e.data.length) assert.equal(dataOffset % 4, 0, `data of ${e.name}`);
  }
  // the trailer is the last entry: "TRAILER!!!" NUL, padded
  const tail = buf.toString('latin1', buf.length - 16);
  assert.match(tail, /TRAILER!!!\0+$/);
  // header of the trailer: namesize 11
  const at = buf.lastIndexOf('070701');
  assert.equal(parseInt(buf.toString('ascii', at + 6 + 11 * 8, at + 6 + 12 * 8), 16), 11);
});

test('cpio: concatenated archives with zero padding parse in turn', () => {
  const a = writeCpio([{ type: 'file', name: 'a', data: 'A' }]);
  const b = writeCpio([
    { type: 'dir', name: 'embers' },
    { type: 'file', name: 'embers/exec.conf', data: 'version=1\n' },
  ]);
  const all = Buffer.concat([a, Buffer.alloc(8), b]);
  assert.deepEqual(
    parseCpio(all).map((e) => e.name),
    ['a', 'embers', 'embers/exec.conf'],
  );
});

test('cpio: bad names and duplicates are refused', () => {
  assert.throws(() => writeCpio([{ type: 'file', name: '../etc/passwd', data: '' }]), /invalid entry name/);
  assert.throws(() => writeCpio([{ type: 'file', name: '', data: '' }]), /invalid entry name/);
  assert.throws(
    () =>
      writeCpio([
        { type: 'dir', name: 'a' },
        { type: 'dir', name: '/a' },
      ]),
    /duplicate/,
  );
});

test('cpio: a corrupt archive does not parse', () => {
  const buf = writeCpio([{ type: 'file', name: 'a', data: 'A' }]);
  const bad = Buffer.from(buf);
  bad.write('070702', 0, 'ascii');
  assert.throws(() => parseCpio(bad), /bad magic/);
  assert.throws(() => parseCpio(buf.subarray(0, 100)), /truncated/);
});

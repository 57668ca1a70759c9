import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { parseCpio, S_IFCHR, S_IFLNK, S_IFMT, S_IFREG } from '../../src/guest/cpio.js';
import { buildBaseInitramfs, isStaticElf, readGuestSources } from '../../src/guest/initramfs.js';

test('base initramfs: init, helper, busybox links, device nodes and the module list', async () => {
  const { init, execSource } = await readGuestSources();
  assert.match(init.toString(), /^#!\/bin\/busybox sh\n/);
  assert.match(execSource.toString(), /chroot/);
  const elf = Buffer.alloc(64);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(elf);
  const gz = buildBaseInitramfs({
    busybox: elf,
    applets: ['bin/sh', 'sbin/insmod', 'usr/bin/wget', '', 'linuxrc', 'bin/busybox', '../evil'],
    init,
    execHelper: elf,
    modules: [
      { file: 'virtio.ko', data: Buffer.from('a') },
      { file: 'ext4.ko', data: Buffer.from('b') },
    ],
    info: { kind: 'debian' },
  });
  const entries = new Map(parseCpio(gunzipSync(gz)).map((e) => [e.name, e]));
  assert.equal(entries.get('init')!.mode, S_IFREG | 0o755);
  assert.deepEqual(entries.get('init')!.data, init);
  assert.equal(entries.get('sbin/embers-exec')!.mode, S_IFREG | 0o755);
  assert.equal(entries.get('dev/console')!.mode & S_IFMT, S_IFCHR);
  assert.equal(entries.get('bin/sh')!.mode & S_IFMT, S_IFLNK);
  assert.equal(entries.get('bin/sh')!.data.toString(), '/bin/busybox');
  assert.ok(entries.has('usr/bin/wget'));
  assert.ok(!entries.has('linuxrc'));
  assert.equal(entries.get('bin/busybox')!.mode & S_IFMT, S_IFREG);
  assert.equal(entries.get('lib/modules/embers.list')!.data.toString(), 'virtio.ko\next4.ko\n');
  for (const d of ['proc', 'sys', 'dev', 'newroot', 'embers']) assert.ok(entries.has(d), d);
  assert.ok([...entries.values()].every((e) => e.uid === 0 && e.gid === 0 && e.mtime === 0));
});

test('isStaticElf: a static program has no PT_INTERP', () => {
  // node itself is dynamically linked
  assert.equal(isStaticElf(readFileSync(process.execPath).subarray(0, 1 << 16)), false);
  assert.equal(isStaticElf(Buffer.from('#!/bin/sh\n')), false);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { isEmbersError } from '../../src/errors.js';
import { assertVmlinux, extractVmlinux, parseElfHeader } from '../../src/guest/vmlinux.js';
import { withTempDir } from '../helpers/temp-dir.js';

function fakeElf(size = 200_000): Buffer {
  const b = Buffer.concat([Buffer.alloc(64), randomBytes(size)]);
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]).copy(b, 0); // ELF64, little endian
  b.writeUInt16LE(2, 16); // ET_EXEC
  b.writeUInt16LE(0x3e, 18); // x86-64
  return b;
}

function xz(data: Buffer): Buffer {
  const r = spawnSync('xz', ['-c', '-T1', '--check=crc32'], { input: data, maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr?.toString());
  return r.stdout;
}

test('extractVmlinux: finds the xz stream after junk (and after a false xz magic)', async () => {
  await withTempDir('vmlinux-test', async (dir) => {
    const elf = fakeElf();
    // junk holding a false xz magic followed by garbage, then the real stream, then a trailer
    const junk = Buffer.concat([
      randomBytes(1000),
      Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
      randomBytes(333),
    ]);
    const image = Buffer.concat([junk, xz(elf), randomBytes(777)]);
    await writeFile(join(dir, 'vmlinuz'), image);
    await extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux'));
    const out = await readFile(join(dir, 'vmlinux'));
    assert.deepEqual(out, elf);
    assert.deepEqual(parseElfHeader(out), { bits: 64, machine: 0x3e, littleEndian: true });
    await assertVmlinux(join(dir, 'vmlinux'));
  });
});

test('extractVmlinux: gzip payloads and already-ELF inputs', async () => {
  await withTempDir('vmlinux-test', async (dir) => {
    const elf = fakeElf(50_000);
    await writeFile(
      join(dir, 'gz'),
      Buffer.concat([randomBytes(513).map((b) => (b === 0x1f ? 0 : b)), gzipSync(elf), randomBytes(100)]),
    );
    await extractVmlinux(join(dir, 'gz'), join(dir, 'out1'));
    assert.deepEqual(await readFile(join(dir, 'out1')), elf);
    await writeFile(join(dir, 'elf'), elf);
    await extractVmlinux(join(dir, 'elf'), join(dir, 'out2'));
    assert.deepEqual(await readFile(join(dir, 'out2')), elf);
  });
});

test('extractVmlinux: no ELF inside is EMB_GUEST_KERNEL_MISSING, and leaves no output', async () => {
  await withTempDir('vmlinux-test', async (dir) => {
    const notElf = Buffer.concat([randomBytes(100), xz(Buffer.from('not a kernel at all'.repeat(100)))]);
    await writeFile(join(dir, 'vmlinuz'), notElf);
    await assert.rejects(extractVmlinux(join(dir, 'vmlinuz'), join(dir, 'vmlinux')), (e) =>
      isEmbersError(e, 'EMB_GUEST_KERNEL_MISSING'),
    );
    await assert.rejects(readFile(join(dir, 'vmlinux')), /ENOENT/);
    await assert.rejects(readFile(join(dir, 'vmlinux.extract-tmp')), /ENOENT/);
    await assert.rejects(assertVmlinux(join(dir, 'vmlinuz')), (e) => isEmbersError(e, 'EMB_GUEST_KERNEL_MISSING'));
  });
});

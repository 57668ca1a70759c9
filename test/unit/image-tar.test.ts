import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, symlink, writeFile, link } from 'node:fs/promises';
import { join } from 'node:path';
import { readTar, type TarHeader } from '../../src/image/tar.js';
import { writeTar, type TarWriteEntry } from '../../src/examples/tar-writer.js';
import { isEmbersError } from '../../src/errors.js';
import { tempDir } from './image-helpers.js';

async function readAll(tar: Buffer, chunkSize = 1000): Promise<{ header: TarHeader; content: Buffer }[]> {
  async function* chunks() {
    for (let i = 0; i < tar.length; i += chunkSize) yield tar.subarray(i, i + chunkSize);
  }
  const out: { header: TarHeader; content: Buffer }[] = [];
  for await (const e of readTar(chunks())) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    out.push({ header: e.header, content: Buffer.concat(parts) });
  }
  return out;
}

const longDir = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(60)}`;
const longName = `${longDir}/${'n'.repeat(120)}.txt`;
const longTarget = `/${'t'.repeat(150)}/target`;

const ENTRIES: TarWriteEntry[] = [
  { path: 'dir', type: 'dir', mode: 0o750, uid: 1000, gid: 1001, mtime: 1_600_000_000 },
  { path: 'dir/file.txt', type: 'file', mode: 0o4755, uid: 0, gid: 0, mtime: 1_600_000_001, content: 'hello\n' },
  { path: 'dir/empty', type: 'file', mode: 0o600, content: '' },
  { path: 'dir/big', type: 'file', content: Buffer.alloc(70_000, 7) },
  { path: 'dir/link', type: 'symlink', linkname: '../etc/passwd' },
  { path: 'dir/hard', type: 'hardlink', linkname: 'dir/file.txt' },
  { path: longName, type: 'file', content: 'long' },
  { path: 'dir/longlink', type: 'symlink', linkname: longTarget },
  { path: 'dir/ünïcødé ✓', type: 'file', content: 'utf8' },
  { path: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
  { path: 'dev/loop0', type: 'block', mode: 0o660, devmajor: 7, devminor: 0 },
  { path: 'dev/fifo', type: 'fifo', mode: 0o644 },
  { path: 'dir/bigids', type: 'file', uid: 3_000_000, gid: 2_500_000, content: 'x' },
  {
    path: 'dir/caps',
    type: 'file',
    content: 'c',
    xattrs: {
      'security.capability': Buffer.from('0100000200200000000000000000000000000000', 'hex'),
      'user.note': 'hi',
    },
  },
];

for (const longNames of ['pax', 'gnu'] as const) {
  test(`tar round trip (${longNames} long names): names, modes, ids, links, devices, xattrs`, async () => {
    const tar = writeTar(ENTRIES, { longNames });
    for (const chunkSize of [1, 511, 512, 1000, 1 << 20]) {
      if (chunkSize === 1 && longNames === 'gnu') continue; // slow; covered once
      const got = await readAll(tar, chunkSize);
      assert.equal(got.length, ENTRIES.length);
      ENTRIES.forEach((want, i) => {
        const { header, content } = got[i]!;
        const wantPath = want.type === 'dir' ? `${want.path}/` : want.path;
        assert.equal(header.path, wantPath, `path of entry ${i}`);
        assert.equal(header.type, want.type);
        assert.equal(header.mode, want.mode ?? (want.type === 'dir' ? 0o755 : want.type === 'symlink' ? 0o777 : 0o644));
        assert.equal(header.uid, want.uid ?? 0);
        assert.equal(header.gid, want.gid ?? 0);
        assert.equal(header.mtime, want.mtime ?? 0);
        assert.equal(header.linkname, want.linkname ?? '');
        if (want.type === 'char' || want.type === 'block') {
          assert.equal(header.devmajor, want.devmajor);
          assert.equal(header.devminor, want.devminor);
        }
        const wantContent = want.type === 'file' ? Buffer.from(want.content ?? '') : Buffer.alloc(0);
        assert.deepEqual(content, wantContent);
        assert.equal(header.size, wantContent.length);
        if (want.xattrs && longNames === 'pax') {
          assert.deepEqual([...header.xattrs.keys()].sort(), Object.keys(want.xattrs).sort());
          assert.deepEqual(header.xattrs.get('user.note'), Buffer.from('hi'));
        }
      });
    }
  });
}

test('tar writer output is read by GNU tar, and GNU tar output (gnu and posix formats) by the reader', async (t) => {
  const dir = await tempDir(t, 'tar');
  const ours = join(dir, 'ours.tar');
  await writeFile(ours, writeTar(ENTRIES.filter((e) => e.type !== 'char' && e.type !== 'block' && e.type !== 'fifo')));
  const listing = spawnSync('tar', ['-tvf', ours, '--numeric-owner']);
  assert.equal(listing.status, 0, listing.stderr.toString());
  const text = listing.stdout.toString();
  assert.match(text, new RegExp(longName.slice(-40)));
  assert.match(text, /dir\/hard link to dir\/file\.txt/);
  assert.match(text, /3000000\/2500000/);

  const src = join(dir, 'src');
  await mkdir(join(src, longDir), { recursive: true });
  await writeFile(join(src, longName), 'long content');
  await symlink(longTarget, join(src, 'sym'));
  await writeFile(join(src, 'a'), 'A');
  await link(join(src, 'a'), join(src, 'a-hard'));
  for (const format of ['gnu', 'posix']) {
    const out = join(dir, `${format}.tar`);
    const r = spawnSync('tar', ['-C', src, `--format=${format}`, '--sort=name', '-cf', out, '.']);
    assert.equal(r.status, 0, r.stderr.toString());
    const got = await readAll(await readFile(out));
    const byPath = new Map(got.map((e) => [e.header.path.replace(/^\.\//, ''), e]));
    assert.equal(byPath.get(longName)?.content.toString(), 'long content', `${format}: long name`);
    assert.equal(byPath.get('sym')?.header.linkname, longTarget, `${format}: long link`);
    const hard = byPath.get('a-hard') ?? byPath.get('a');
    assert.ok(
      hard && [byPath.get('a-hard')?.header.type, byPath.get('a')?.header.type].includes('hardlink'),
      `${format}: hard link`,
    );
  }
});

test('tar reader refuses a corrupt header and truncated content', async () => {
  const tar = writeTar([{ path: 'a', type: 'file', content: 'x'.repeat(2000) }]);
  const bad = Buffer.from(tar);
  bad[10] ^= 0xff;
  await assert.rejects(readAll(bad), (e: unknown) => isEmbersError(e, 'EMB_IMAGE_LAYER_INVALID'));
  await assert.rejects(readAll(tar.subarray(0, 1024)), (e: unknown) => isEmbersError(e, 'EMB_IMAGE_LAYER_INVALID'));
});

test('tar reader: PAX overrides size/uid/mtime, global headers apply, GNU sparse is unsupported', async () => {
  const pax = (records: string) => {
    const lines = records
      .split('\n')
      .filter(Boolean)
      .map((r) => {
        let len = r.length + 3;
        while (`${len} ${r}\n`.length !== len) len = `${len} ${r}\n`.length;
        return `${len} ${r}\n`;
      })
      .join('');
    return Buffer.from(lines);
  };
  // Build: global header (uid=42), local header (mtime=123.75, path override), then the file.
  const raw = (name: string, type: string, data: Buffer): Buffer => {
    const entries = writeTar([{ path: name, type: 'file', content: data }], { endBlocks: 0 });
    entries[156] = type.charCodeAt(0);
    // fix checksum
    entries.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += entries[i]!;
    entries.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
    return entries;
  };
  const tar = Buffer.concat([
    raw('global', 'g', pax('uid=42\n')),
    raw('local', 'x', pax('mtime=123.75\npath=overridden/name\ngid=7\n')),
    writeTar([{ path: 'short', type: 'file', content: 'abc' }], { endBlocks: 2 }),
  ]);
  const [e] = await readAll(tar);
  assert.equal(e!.header.path, 'overridden/name');
  assert.equal(e!.header.uid, 42);
  assert.equal(e!.header.gid, 7);
  assert.equal(e!.header.mtime, 123);
  assert.equal(e!.content.toString(), 'abc');

  const sparse = Buffer.concat([
    raw('local', 'x', pax('GNU.sparse.major=1\n')),
    writeTar([{ path: 's', type: 'file', content: 'abc' }]),
  ]);
  await assert.rejects(readAll(sparse), (err: unknown) => isEmbersError(err, 'EMB_IMAGE_LAYER_UNSUPPORTED'));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { chunkDigests, chunkFetchOrder, writeChunkList } from '../../src/memory/chunks.js';
import { parseManifest } from '../../src/snapshot/manifest.js';
import { TEST_META } from '../helpers/snapshots.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('chunkDigests: one sha256 per fixed chunk, the last one shorter; the chunk list is one digest a line', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-chunks-'));
  try {
    const data = Buffer.alloc(3 * 8192 + 100);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
    await writeFile(join(dir, 'm'), data);
    const digests = await chunkDigests(join(dir, 'm'), 8192);
    assert.deepEqual(
      digests,
      [0, 1, 2, 3].map((i) => sha(data.subarray(i * 8192, (i + 1) * 8192))),
    );
    assert.deepEqual(await chunkDigests(join(dir, 'm'), data.length), [sha(data)]);
    await writeFile(join(dir, 'empty'), '');
    assert.deepEqual(await chunkDigests(join(dir, 'empty'), 8192), []);
    await writeChunkList(join(dir, 'list'), digests);
    assert.equal(await readFile(join(dir, 'list'), 'utf8'), digests.map((d) => `${d}\n`).join(''));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("chunkFetchOrder: the working set's chunks first, in first-touch order and each once, then the rest ascending", () => {
  const chunk = 4 * 4096; // 4 pages a chunk
  assert.deepEqual(chunkFetchOrder(5, chunk), [0, 1, 2, 3, 4]);
  assert.deepEqual(
    chunkFetchOrder(5, chunk, [
      { firstPage: 13, pageCount: 1 }, // chunk 3
      { firstPage: 2, pageCount: 4 }, // chunks 0 and 1
      { firstPage: 12, pageCount: 1 }, // chunk 3 again
      { firstPage: 99, pageCount: 1 }, // past the end: ignored
    ]),
    [3, 0, 1, 2, 4],
  );
});

test('manifest: chunk digests go with a chunk size and cover the file exactly', () => {
  const manifest = (memory: object) =>
    JSON.stringify({
      formatVersion: 1,
      id: `snap-${'1'.repeat(24)}`,
      ...TEST_META,
      files: [
        { name: 'vmstate.bin', sizeBytes: 1, sha256: 'd'.repeat(64) },
        { name: 'memory.bin', sizeBytes: 10_000, sha256: 'e'.repeat(64), ...memory },
      ],
    });
  const three = ['a', 'b', 'c'].map((c) => c.repeat(64));
  assert.deepEqual(parseManifest(manifest({ chunkSize: 4096, chunkSha256: three }), 'x').files[1].chunkSha256, three);
  for (const bad of [
    { chunkSize: 4096, chunkSha256: three.slice(0, 2) }, // too few
    { chunkSize: 4096 }, // size without digests
    { chunkSha256: three }, // digests without size
    { chunkSize: 1000, chunkSha256: three }, // not whole pages
    { chunkSize: 4096, chunkSha256: ['A'.repeat(64), ...three.slice(1)] }, // not lowercase hex
  ]) {
    assert.throws(
      () => parseManifest(manifest(bad), 'x'),
      (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') && /chunk digests of memory.bin/.test((e as Error).message),
      JSON.stringify(bad),
    );
  }
});

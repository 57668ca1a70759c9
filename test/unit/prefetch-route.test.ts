/**
 * How a restore gets a snapshot's working set in (node/snapshots.ts prefetchRoute), and the
 * per-chunk digests a snapshot's memory file entry carries (snapshot/local-store.ts publish with
 * digests from memory/chunks.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { MEMORY_CHUNK_SIZE, chunkDigests } from '../../src/memory/chunks.js';
import { prefetchRoute, type PrefetchMode } from '../../src/node/working-sets.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { fileEntry, parseManifest } from '../../src/snapshot/manifest.js';
import { TEST_META } from '../helpers/snapshots.js';

const ID = `snap-${'0'.repeat(24)}`;

test('prefetch route: Firecracker with a working set goes through the page server (auto and on), QEMU through the page cache; off never prefetches', () => {
  assert.equal(prefetchRoute('firecracker', true, 'auto', ID), 'page-server');
  assert.equal(prefetchRoute('firecracker', true, 'on', ID), 'page-server');
  assert.equal(prefetchRoute('firecracker', true, 'off', ID), 'none');
  assert.equal(prefetchRoute('qemu', true, 'auto', ID), 'page-cache');
  assert.equal(prefetchRoute('qemu', true, 'on', ID), 'page-cache');
  assert.equal(prefetchRoute('qemu', true, 'off', ID), 'none');
});

test('prefetch route: without a working set auto and off restore as before; on is refused with EMB_CONFIG_INVALID naming record-ws; a bad mode is refused', () => {
  for (const vmm of ['firecracker', 'qemu'] as const) {
    assert.equal(prefetchRoute(vmm, false, 'auto', ID), 'none');
    assert.equal(prefetchRoute(vmm, false, 'off', ID), 'none');
    assert.throws(
      () => prefetchRoute(vmm, false, 'on', ID),
      (e: unknown) =>
        isEmbersError(e, 'EMB_CONFIG_INVALID') &&
        e.message.includes(`${ID} has no working set`) &&
        /record-ws/.test(e.hint),
    );
  }
  assert.throws(
    () => prefetchRoute('firecracker', true, 'always' as PrefetchMode, ID),
    (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID') && /auto, on or off/.test(e.message),
  );
});

async function withStore(fn: (store: LocalSnapshotStore) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'embers-chunks-'));
  try {
    await fn(new LocalSnapshotStore(join(dir, 'snapshots')));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('publish records the memory file chunk digests given (memory/chunks.ts): each chunk verifiable on its own; the manifest reads back and verifies', async () => {
  await withStore(async (store) => {
    const staging = await store.staging();
    // two whole 4 MiB chunks and a short last one
    const memory = Buffer.concat([randomBytes(MEMORY_CHUNK_SIZE), Buffer.alloc(MEMORY_CHUNK_SIZE), randomBytes(12288)]);
    await writeFile(join(staging, 'memory.bin'), memory);
    await writeFile(join(staging, 'vmstate.bin'), 'state');
    const digests = await chunkDigests(join(staging, 'memory.bin'));
    assert.equal(digests.length, 3);
    const m = await store.publish(staging, TEST_META, {
      chunks: { 'memory.bin': { chunkSize: MEMORY_CHUNK_SIZE, sha256: digests } },
    });
    const entry = fileEntry(m, 'memory.bin')!;
    assert.equal(entry.chunkSize, MEMORY_CHUNK_SIZE);
    assert.deepEqual(entry.chunkSha256, digests);
    assert.notEqual(digests[0], digests[1], 'each chunk has its own digest');
    assert.equal(fileEntry(m, 'vmstate.bin')!.chunkSha256, undefined, 'only the files given get chunk digests');
    assert.deepEqual(await store.get(m.id), m);
    await store.verify(m);
  });
});

test('publish refuses chunk digests that do not cover the file, and publishes nothing; a manifest without chunk digests (older) stays valid', async () => {
  await withStore(async (store) => {
    const staging = await store.staging();
    await writeFile(join(staging, 'memory.bin'), randomBytes(MEMORY_CHUNK_SIZE + 4096));
    await writeFile(join(staging, 'vmstate.bin'), 'state');
    const short = (await chunkDigests(join(staging, 'memory.bin'))).slice(0, 1);
    await assert.rejects(
      store.publish(staging, TEST_META, { chunks: { 'memory.bin': { chunkSize: MEMORY_CHUNK_SIZE, sha256: short } } }),
      (e: unknown) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') && /do not cover memory\.bin/.test(e.message),
    );
    assert.deepEqual(
      (await readdir(store.dir)).filter((n) => n.startsWith('snap-')),
      [],
      'nothing published',
    );
    const older = await store.publish(staging, TEST_META);
    assert.equal(fileEntry(older, 'memory.bin')!.chunkSha256, undefined);
    assert.deepEqual(parseManifest(JSON.stringify(older), 'older'), older);
    await store.verify(older);
  });
});

test('verify checks the memory file chunk by chunk: a corrupted chunk is EMB_SNAPSHOT_CORRUPT naming it, and so is a chunk digest the file does not match', async () => {
  await withStore(async (store) => {
    const staging = await store.staging();
    await writeFile(
      join(staging, 'memory.bin'),
      Buffer.concat([randomBytes(MEMORY_CHUNK_SIZE), randomBytes(MEMORY_CHUNK_SIZE), randomBytes(8192)]),
    );
    await writeFile(join(staging, 'vmstate.bin'), 'state');
    const digests = await chunkDigests(join(staging, 'memory.bin'));
    const m = await store.publish(staging, TEST_META, {
      chunks: { 'memory.bin': { chunkSize: MEMORY_CHUNK_SIZE, sha256: digests } },
    });
    await store.verify(m);
    // the file is right but the manifest's digest of chunk 2 is not: a restore of an arriving file would refuse that chunk
    const wrongList = structuredClone(m);
    fileEntry(wrongList, 'memory.bin')!.chunkSha256![2] = digests[0];
    await assert.rejects(
      store.verify(wrongList),
      (e: unknown) =>
        isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') && e.details.chunk === 2 && /chunk 2 of memory\.bin/.test(e.message),
    );
    // one byte of chunk 1 flipped on disk
    const path = join(store.pathOf(m.id), 'memory.bin');
    const fh = await open(path, 'r+');
    const at = MEMORY_CHUNK_SIZE + 12345;
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, at);
    await fh.close();
    await assert.rejects(
      store.verify(m),
      (e: unknown) =>
        isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') &&
        e.details.chunk === 1 &&
        e.details.expected === digests[1] &&
        new RegExp(`chunk 1 of memory\\.bin \\(bytes ${MEMORY_CHUNK_SIZE}-${2 * MEMORY_CHUNK_SIZE - 1}\\)`).test(
          e.message,
        ),
    );
  });
});

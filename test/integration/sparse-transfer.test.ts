import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { PeerClient } from '../../src/snapshot/peer-client.js';
import { startPeerServer } from '../../src/snapshot/peer-server.js';
import { S3SnapshotStore } from '../../src/snapshot/s3-store.js';
import { spansToFetch } from '../../src/snapshot/fetch-snapshot.js';
import { sha256File, sha256FileWithDataRanges } from '../../src/util/fs.js';
import { startS3Server } from '../helpers/s3-server.js';
import { MiB, TEST_META, tempDir } from '../helpers/snapshots.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
const TOKEN = 'sparse-test-token-0123456789';

/** A snapshot whose 64 MiB memory file is mostly holes, as a guest's is: data in a few places. */
async function sparseSnapshot(store: LocalSnapshotStore) {
  const staging = await store.staging();
  const mem = await open(join(staging, 'memory.bin'), 'w');
  await mem.truncate(64 * MiB);
  for (const at of [0, 5 * MiB + 4096, 40 * MiB, 63 * MiB + 12345])
    await mem.write(randomBytes(300 * 1024), 0, 300 * 1024, at);
  await mem.close();
  await writeFile(join(staging, 'vmstate.bin'), randomBytes(70 * 1024));
  await writeFile(join(staging, 'disk.delta'), randomBytes(MiB));
  return store.publish(staging, TEST_META);
}

test('data ranges: one pass gives the sha256 and where a file holds data', async () => {
  const dir = await tempDir('sparse');
  try {
    const path = join(dir.path, 'f');
    const fh = await open(path, 'w');
    await fh.truncate(8 * MiB);
    await fh.write(Buffer.from('x'), 0, 1, 3 * MiB + 10);
    await fh.write(Buffer.from('y'), 0, 1, 3 * MiB + 200 * 1024); // < 1 MiB apart: merged
    await fh.write(Buffer.from('z'), 0, 1, 7 * MiB); // far: its own run
    await fh.close();
    const scan = await sha256FileWithDataRanges(path);
    assert.equal(scan.sha256, await sha256File(path));
    assert.deepEqual(scan.dataRanges, [
      [3 * MiB, 192 * 1024 + 64 * 1024],
      [7 * MiB, 64 * 1024],
    ]);
    const f = { name: 'f', sizeBytes: 8 * MiB, sha256: scan.sha256, dataRanges: scan.dataRanges };
    assert.deepEqual(spansToFetch(f, 0, 2 * MiB), []);
    assert.deepEqual(spansToFetch(f, 0, 3 * MiB + 100), [[3 * MiB, 3 * MiB + 100]]);
    assert.deepEqual(spansToFetch({ ...f, dataRanges: undefined }, 5, 9), [[5, 9]]);
  } finally {
    await dir.dispose();
  }
});

test('sparse memory files: S3 and peer pulls fetch only the data, and the result is bit-identical', async () => {
  const dir = await tempDir('sparse');
  const s3 = await startS3Server();
  try {
    const a = new LocalSnapshotStore(join(dir.path, 'a'));
    const m = await sparseSnapshot(a);
    const mem = m.files.find((f) => f.name === 'memory.bin')!;
    assert.ok(mem.dataRanges && mem.dataRanges.length === 4, 'the manifest maps where memory.bin has data');
    assert.equal(m.files.find((f) => f.name === 'disk.delta')!.dataRanges, undefined, 'dense files have no map');

    const remote = new S3SnapshotStore(s3.storeOptions());
    await remote.push(a, m.id);
    const b = new LocalSnapshotStore(join(dir.path, 'b'));
    const pulled = await remote.pull(b, m.id);
    const total = m.files.reduce((n, f) => n + f.sizeBytes, 0);
    assert.ok(pulled.bytes < total / 10, `pulled ${pulled.bytes} of ${total} bytes`);
    await b.verify(await b.get(m.id));
    const memB = join(b.pathOf(m.id), 'memory.bin');
    assert.equal(await sha256File(memB), mem.sha256);
    assert.ok((await stat(memB)).blocks * 512 < 8 * MiB, 'the zeros stay holes on disk');
    remote.close();

    const server = await startPeerServer({ store: a, token: TOKEN });
    try {
      const c = new LocalSnapshotStore(join(dir.path, 'c'));
      const fromPeer = await new PeerClient({ url: server.url, token: TOKEN }).pull(c, m.id);
      assert.ok(fromPeer.bytes < total / 10);
      assert.equal(await sha256File(join(c.pathOf(m.id), 'memory.bin')), mem.sha256);

      // a manifest whose map hides data is caught by the whole-file sha256
      const manifestPath = join(a.pathOf(m.id), 'manifest.json');
      const lying = JSON.parse(await readFile(manifestPath, 'utf8'));
      lying.files.find((f: { name: string }) => f.name === 'memory.bin').dataRanges.splice(1, 1);
      await writeFile(manifestPath, JSON.stringify(lying));
      const d = new LocalSnapshotStore(join(dir.path, 'd'));
      await assert.rejects(new PeerClient({ url: server.url, token: TOKEN }).pull(d, m.id), (err) =>
        isEmbersError(err, 'EMB_SNAPSHOT_CORRUPT'),
      );
      assert.equal(await d.has(m.id), false);
    } finally {
      await server.close();
    }
  } finally {
    await s3.dispose();
    await dir.dispose();
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import { WORKING_SET_FILES, readWorkingSetRanges, totalPages } from '../../src/memory/working-set.js';
import type { EmbersNode } from '../../src/node/node.js';
import { MANIFEST_NAME, SNAPSHOT_FILES, fileEntry } from '../../src/snapshot/manifest.js';
import { startPeerServer } from '../../src/snapshot/peer-server.js';
import { WorkingSetStore } from '../../src/snapshot/working-set-store.js';
import { openTestNode } from '../helpers/node.js';
import { startS3Server } from '../helpers/s3-server.js';
import { workingSetBytes } from '../helpers/snapshots.js';
import { assertReadsBack, writeTestFile } from '../helpers/test-function.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

/** The clone answers, reads back the file written before the snapshot, writes a new one; then it is stopped. */
async function checkClone(node: EmbersNode, name: string): Promise<void> {
  assert.equal((await node.invoke(name, { path: '/' })).body.trim(), 'hello from embers');
  await assertReadsBack(node, name, { name: 'synced.bin', size: 200000, seed: 'ws-a' });
  await writeTestFile(node, name, { name: `${name}.bin`, size: 30000, seed: name });
  await node.stop(name);
}

test('working sets on QEMU: recorded from a real restore, prefetched by later restores that answer correctly, carried by S3 and by a peer', async () => {
  const work = await mkdtemp(join(tmpdir(), 'embers-ws-e2e-'));
  const s3 = await startS3Server();
  try {
    const image = await buildTestFunctionImage(join(work, 'layout'));
    const a = await openTestNode({ vmm: 'qemu', snapshots: 'remote', s3: s3.storeOptions() });
    try {
      if (a.node.driver.kind !== 'qemu') throw new Error('this test needs the QEMU driver');
      await a.node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
      await a.node.invoke('origin', { path: '/cgi-bin/write?name=synced.bin&size=200000&seed=ws-a&sync=1' });
      const snap = await a.node.snapshots.create('origin', { stop: true }); // uploaded, without a working set
      const id = snap.manifest.id;
      const store = a.node.snapshots.store;
      const manifestBefore = await readFile(join(store.pathOf(id), MANIFEST_NAME));
      const memoryBytes = fileEntry(snap.manifest, SNAPSHOT_FILES.memory)!.sizeBytes;

      // without one, a restore is as before; --prefetch on is refused with a hint
      await assert.rejects(
        a.node.snapshots.restore(id, { prefetch: 'on' }),
        (err: unknown) => isEmbersError(err, 'EMB_CONFIG_INVALID') && /record-ws/.test(err.hint),
      );
      const plain = await a.node.snapshots.restore(id);
      assert.equal(plain.prefetched, undefined);
      assert.equal(plain.clones[0].record.timings.phases.prefetchMs, undefined);
      // recording needs the memory file out of the page cache: a running clone maps it
      await assert.rejects(a.node.snapshots.recordWorkingSet(id), (err: unknown) =>
        isEmbersError(err, 'EMB_WORKING_SET_RECORD_FAILED'),
      );
      await checkClone(a.node, plain.clones[0].record.name);

      // record: a real restore, its first request, the pages it read
      const rec = await a.node.snapshots.recordWorkingSet(id);
      assert.equal(rec.recorded, true);
      assert.equal(rec.status, 200);
      assert.equal(rec.memoryBytes, memoryBytes);
      const ws = rec.manifest;
      assert.equal(ws.recorder, 'qemu-pagemap');
      assert.ok(
        rec.residentPages !== undefined && rec.residentPages >= ws.pages,
        'what the VM mapped is in the page cache',
      );
      assert.equal(ws.order, 'file');
      assert.ok(ws.pages > 0, 'the restore read pages of the memory file');
      assert.ok(
        ws.pages * 4096 < memoryBytes,
        `the working set (${ws.pages} pages) is smaller than the memory (${memoryBytes} bytes)`,
      );
      const sets = new WorkingSetStore(store);
      const ranges = await readWorkingSetRanges(sets.dirOf(id), { memoryBytes });
      assert.equal(totalPages(ranges), ws.pages);
      for (let i = 1; i < ranges.ranges.length; i++)
        assert.ok(ranges.ranges[i].firstPage > ranges.ranges[i - 1].firstPage, 'file order');
      // its bytes are the memory file's
      const memory = await readFile(join(store.pathOf(id), SNAPSHOT_FILES.memory));
      const pages = await readFile(join(sets.dirOf(id), WORKING_SET_FILES.pages));
      let at = 0;
      for (const r of ranges.ranges) {
        const len = r.pageCount * 4096;
        assert.ok(
          pages.subarray(at, at + len).equals(memory.subarray(r.firstPage * 4096, r.firstPage * 4096 + len)),
          `range at page ${r.firstPage}`,
        );
        at += len;
      }
      // the snapshot itself did not change by a byte, and still verifies
      assert.ok(manifestBefore.equals(await readFile(join(store.pathOf(id), MANIFEST_NAME))));
      await store.verify(await store.get(id));
      assert.equal((await a.node.snapshots.recordWorkingSet(id)).recorded, false, 'a working set is recorded once');

      // later restores prefetch it (auto) and answer correctly; 2 clones at once; off restores without
      const prefetched = await a.node.snapshots.restore(id, { count: 2, evictMemory: true });
      assert.deepEqual(prefetched.prefetched, { pages: ws.pages, bytes: ws.pages * 4096 });
      for (const c of prefetched.clones) {
        assert.ok(
          c.record.timings.phases.prefetchMs !== undefined && c.record.timings.phases.prefetchWaitMs !== undefined,
        );
        await checkClone(a.node, c.record.name);
      }
      const off = await a.node.snapshots.restore(id, { prefetch: 'off' });
      assert.equal(off.prefetched, undefined);
      await checkClone(a.node, off.clones[0].record.name);

      // a push now sends the working set (the snapshot's objects are there already)
      const pushed = await a.node.snapshots.push(id);
      assert.equal(
        pushed.bytes,
        manifestBefore.length + Object.values(await workingSetBytes(store, id)).reduce((n, b) => n + b.length, 0),
      );

      const b = await openTestNode({ vmm: 'qemu', snapshots: 'remote', s3: s3.storeOptions() });
      try {
        // from S3: the snapshot and its working set, verified; the restore prefetches it
        const fromS3 = await b.node.snapshots.restore(id);
        assert.ok(fromS3.fetch && fromS3.fetch.bytes > 0);
        assert.deepEqual(fromS3.prefetched, { pages: ws.pages, bytes: ws.pages * 4096 });
        assert.deepEqual(await workingSetBytes(b.node.snapshots.store, id), await workingSetBytes(store, id));
        await checkClone(b.node, fromS3.clones[0].record.name);
        assert.deepEqual(await b.node.snapshots.workingSet(id, { verify: true }), ws);

        // from a peer: node A serves it, node B (after dropping its copy) pulls it again
        await b.node.snapshots.remove(id);
        const token = randomBytes(16).toString('hex');
        const peer = await startPeerServer({ store, token });
        try {
          const fromPeer = await b.node.snapshots.restore(id, {
            source: { kind: 'peer', url: peer.url, token },
            evictMemory: true,
            prefetch: 'on',
          });
          assert.deepEqual(fromPeer.prefetched, { pages: ws.pages, bytes: ws.pages * 4096 });
          assert.deepEqual(await workingSetBytes(b.node.snapshots.store, id), await workingSetBytes(store, id));
          await checkClone(b.node, fromPeer.clones[0].record.name);
        } finally {
          await peer.close();
        }
      } finally {
        await b.close();
      }
      // removed with the snapshot
      await a.node.snapshots.remove(id);
      assert.equal(await new WorkingSetStore(store).get(id).catch((e: unknown) => e), undefined);
    } finally {
      await a.close();
    }
    assert.deepEqual(await readdir(work), ['layout']);
  } finally {
    await s3.dispose();
    await rm(work, { recursive: true, force: true });
  }
});

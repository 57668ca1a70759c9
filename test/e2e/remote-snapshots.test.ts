import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TEST_FUNCTION_REF_NAME, buildTestFunctionImage } from '../../src/examples/test-function.js';
import type { EmbersNode } from '../../src/node/node.js';
import { startPeerServer } from '../../src/snapshot/peer-server.js';
import { openTestNode } from '../helpers/node.js';
import { startRegistry } from '../helpers/registry.js';
import { startS3Server } from '../helpers/s3-server.js';
import { assertReadsBack, stopAndFsck, writeTestFile } from '../helpers/test-function.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

/** Every clone answers, reads back the files written before the snapshot, keeps working, and its disk is clean after stop. */
async function checkClone(node: EmbersNode, name: string): Promise<void> {
  assert.equal((await node.invoke(name, { path: '/' })).body.trim(), 'hello from embers');
  await assertReadsBack(node, name, { name: 'synced.bin', size: 500000, seed: 'remote-a' });
  await assertReadsBack(node, name, { name: 'cached.bin', size: 60000, seed: 'remote-b' });
  for (let i = 0; i < 3; i++) {
    await writeTestFile(node, name, { name: `more-${i}.bin`, size: 40000, seed: `${name}-${i}` }, i % 2 === 1);
  }
  assert.match((await node.invoke(name, { path: '/cgi-bin/files' })).body, /more-2\.bin/);
  await stopAndFsck(node, name);
}

test('remote snapshots: node A snapshots and uploads; clean node B restores 3 clones from S3 and 1 straight from A as a peer', async () => {
  const work = await mkdtemp(join(tmpdir(), 'embers-remote-'));
  const registry = await startRegistry();
  const s3 = await startS3Server();
  try {
    // the function image lives in a registry: node B needs nothing but the snapshot and the reference
    const layout = await buildTestFunctionImage(join(work, 'layout'));
    await registry.pushLayout(layout, TEST_FUNCTION_REF_NAME, 'embers/test-function:latest');
    const ref = `${registry.host}/embers/test-function:latest`;

    const a = await openTestNode({ snapshots: 'remote', s3: s3.storeOptions() });
    try {
      await a.node.run({ image: ref, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
      await a.node.invoke('origin', { path: '/cgi-bin/write?name=synced.bin&size=500000&seed=remote-a&sync=1' });
      await a.node.invoke('origin', { path: '/cgi-bin/write?name=cached.bin&size=60000&seed=remote-b&sync=0' });
      const snap = await a.node.snapshots.create('origin');
      const id = snap.manifest.id;
      assert.ok(snap.timings.phases.uploadMs !== undefined, 'remote mode uploads after create');
      assert.ok(await a.node.remote.s3().has(id));

      const b = await openTestNode({ snapshots: 'remote', s3: s3.storeOptions(), cacheSnapshots: false });
      try {
        assert.deepEqual(await b.node.images.list(), [], 'node B starts with an empty image cache');
        const fromS3 = await b.node.snapshots.restore(id, { count: 3 });
        assert.ok(fromS3.fetch && fromS3.fetch.bytes > 0, 'the snapshot was downloaded');
        assert.equal(fromS3.clones.length, 3);
        for (const c of fromS3.clones) assert.equal(c.diskVerified, true);
        // node B rebuilt the rootfs from the registry, bit-identical to node A's
        const imageB = await b.node.images.get(snap.manifest.image.manifestDigest);
        assert.equal(imageB?.rootfsSha256, snap.manifest.image.rootfsSha256);
        // --cache-snapshots off: the download is gone once the clones have loaded it
        assert.equal(await b.node.snapshots.store.has(id), false);
        for (const c of fromS3.clones) await checkClone(b.node, c.record.name);

        // straight from node A as a peer
        const token = randomBytes(16).toString('hex');
        const peer = await startPeerServer({ store: a.node.snapshots.store, token });
        try {
          const fromPeer = await b.node.snapshots.restore(id, {
            count: 1,
            source: { kind: 'peer', url: peer.url, token },
          });
          assert.ok(fromPeer.fetch && fromPeer.fetch.bytes > 0);
          assert.equal(fromPeer.clones[0].diskVerified, true);
          await checkClone(b.node, fromPeer.clones[0].record.name);
        } finally {
          await peer.close();
        }
      } finally {
        await b.close();
      }
      await a.node.stop('origin');
    } finally {
      await a.close();
    }
    assert.deepEqual(await readdir(work), ['layout']);
  } finally {
    await s3.dispose();
    await registry.stop();
    await rm(work, { recursive: true, force: true });
  }
});

test('remote snapshots: a clean node refuses a snapshot whose rootfs it cannot rebuild bit-identically', async () => {
  const s3 = await startS3Server();
  const work = await mkdtemp(join(tmpdir(), 'embers-remote-'));
  try {
    const layout = await buildTestFunctionImage(join(work, 'layout'));
    const a = await openTestNode({ snapshots: 'remote', s3: s3.storeOptions() });
    try {
      await a.node.run({ image: layout, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
      const snap = await a.node.snapshots.create('origin', { stop: true });
      // the image reference now names a different image: node B's rootfs cannot match
      await rm(layout, { recursive: true, force: true });
      await buildTestFunctionImage(layout, { port: 9090 });
      const b = await openTestNode({ snapshots: 'remote', s3: s3.storeOptions() });
      try {
        await assert.rejects(
          b.node.snapshots.restore(snap.manifest.id),
          (err: Error & { code?: string; details?: { which?: string } }) => {
            assert.equal(err.code, 'EMB_SNAPSHOT_DISK_MISMATCH');
            assert.match(String(err.details?.which), /image manifest digest|rootfs sha256/);
            return true;
          },
        );
        assert.deepEqual(await b.node.list(), []);
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
    }
  } finally {
    await s3.dispose();
    await rm(work, { recursive: true, force: true });
  }
});

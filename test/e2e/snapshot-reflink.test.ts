import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { buildTestFunctionImage, expectedFileSha256, reportedSha256 } from '../../src/examples/test-function.js';
import { openTestNode } from '../helpers/node.js';
import { withXfsMount } from '../helpers/xfs.js';

test('snapshots on a reflink filesystem (XFS home): reflinked disks, FIEMAP delta, clones verified', async () => {
  await withXfsMount('4G', async (home, dir) => {
    const t = await openTestNode({ home });
    const { node } = t;
    try {
      const image = await buildTestFunctionImage(join(dir, 'fn'));
      const rec = await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'origin' });
      assert.equal(rec.diskMethod, 'reflink');
      await node.invoke('origin', { path: '/cgi-bin/write?name=x.bin&size=400000&seed=xfs&sync=1' });
      await node.invoke('origin', { path: '/cgi-bin/write?name=y.bin&size=5000&seed=cache&sync=0' });
      const snap = await node.snapshots.create('origin', { stop: true });
      assert.equal(snap.diffMethod, 'extents');
      assert.ok(
        snap.manifest.disk.changedBytes >= 400000 && snap.manifest.disk.changedBytes < 8 << 20,
        `changed ${snap.manifest.disk.changedBytes}`,
      );
      const restored = await node.snapshots.restore(snap.manifest.id, { count: 2 });
      for (const c of restored.clones) {
        assert.equal(c.diskVerified, true);
        assert.equal(c.record.diskMethod, 'reflink');
        assert.equal(
          reportedSha256((await node.invoke(c.record.name, { path: '/cgi-bin/read?name=x.bin' })).body),
          expectedFileSha256('xfs', 400000),
        );
        assert.equal(
          reportedSha256((await node.invoke(c.record.name, { path: '/cgi-bin/read?name=y.bin' })).body),
          expectedFileSha256('cache', 5000),
        );
      }
      // a snapshot of a restored clone diffs against the rootfs through extents too
      const second = await node.snapshots.create(restored.clones[0].record.name);
      assert.equal(second.diffMethod, 'extents');
      const again = await node.snapshots.restore(second.manifest.id);
      assert.equal(again.clones[0].diskVerified, true);
    } finally {
      await t.close();
    }
  });
});

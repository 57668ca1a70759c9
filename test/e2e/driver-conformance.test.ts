import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { buildTestFunctionImage, expectedFileSha256, reportedSha256 } from '../../src/examples/test-function.js';
import { sha256File } from '../../src/util/fs.js';
import { run } from '../../src/util/exec.js';
import { openTestNode } from '../helpers/node.js';
import { findRealFirecracker, guestUnavailable } from '../helpers/real-firecracker.js';

/**
 * One conformance suite for every hypervisor driver: boot → pause → snapshot → restore 2
 * clones → stop, with the disks verified. Runs against each driver this host can run.
 */
const DRIVERS = ['qemu', 'firecracker'] as const;

for (const vmm of DRIVERS) {
  test(`driver conformance (${vmm}): boot, pause, snapshot, restore 2 clones, stop; disks verified`, async (t) => {
    let firecrackerBin: string | undefined;
    if (vmm === 'firecracker') {
      const real = await findRealFirecracker();
      if ('skip' in real) return t.skip(real.skip);
      const noGuest = await guestUnavailable();
      if (noGuest) return t.skip(noGuest);
      firecrackerBin = real.binary;
    }
    const tn = await openTestNode({ vmm, firecrackerBin });
    const { node } = tn;
    try {
      assert.equal(node.driver.kind, vmm);
      const image = await buildTestFunctionImage(join(tn.home, 'fn'));
      const rec = await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'conf' });
      await node.invoke('conf', { path: '/cgi-bin/write?name=c.bin&size=123456&seed=conf&sync=1' });
      await node.driver.pause(rec.vm);
      assert.equal(await node.driver.status(rec.vm), 'paused');
      await node.driver.resume(rec.vm);
      assert.equal(await node.driver.status(rec.vm), 'running');
      const snap = await node.snapshots.create('conf', { stop: true });
      const restored = await node.snapshots.restore(snap.manifest.id, { count: 2 });
      assert.equal(
        await sha256File(join(tn.home, 'restore', snap.manifest.id, 'disk.img')),
        snap.manifest.disk.sha256AtPause,
      );
      for (const c of restored.clones) {
        assert.equal(c.diskVerified, true);
        const body = (await node.invoke(c.record.name, { path: '/cgi-bin/read?name=c.bin' })).body;
        assert.equal(reportedSha256(body), expectedFileSha256('conf', 123456));
        await node.driver.stop(c.record.vm);
        assert.equal(await node.driver.status(c.record.vm), 'stopped');
        const fsck = await run('e2fsck', ['-fn', c.record.diskPath], { okCodes: [1, 4, 8] });
        assert.equal(fsck.code, 0, fsck.stdout);
        await node.stop(c.record.name);
      }
    } finally {
      await tn.close();
    }
  });
}

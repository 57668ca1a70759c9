import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSoak } from '../../bench/soak.js';

test('soak, small: 4 clones per node on 2 nodes (local store; S3 and a peer), every file reads back, e2fsck clean, nothing leaked', async (t) => {
  const result = await runSoak({
    restoresPerNode: 4,
    nodes: 2,
    wave: 2,
    fsckEvery: 2,
    log: (line) => t.diagnostic(line),
  });
  t.diagnostic(JSON.stringify(result));
  assert.deepEqual(result.problems, []);
  assert.equal(result.restores, 8);
  assert.deepEqual(
    result.perNode.map((n) => [n.node, n.sources]),
    [
      ['A', { local: 4 }],
      ['B', { s3: 3, peer: 1 }],
    ],
  );
  assert.equal(result.corrupt, 0);
  assert.equal(result.failed, 0);
  assert.equal(result.fsckChecked, 4);
  assert.equal(result.fsckErrors, 0);
  assert.equal(result.leaked, 0);
});

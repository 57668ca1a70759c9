import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage, expectedFileSha256, reportedSha256 } from '../../src/examples/test-function.js';
import { exists } from '../../src/util/fs.js';
import { filesBelow, leakedSince, readHostResources } from '../helpers/leaks.js';
import { snapshotReady, startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { startS3Server } from '../helpers/s3-server.js';

async function stopClean(d: TestDaemon): Promise<void> {
  assert.equal(await d.stop(), 0, `embers serve exit code; log:\n${d.log()}`);
  assert.deepEqual(await filesBelow(join(d.home, 'instances')), []);
  assert.deepEqual(await filesBelow(join(d.home, 'daemon', 'owned')), []);
  assert.equal(await exists(join(d.home, 'daemon', 'serve.lock')), false);
}

test('two daemons sharing an S3-compatible store: node B serves its first cold start by restoring node A snapshot (no boot)', async () => {
  const before = await readHostResources();
  const s3 = await startS3Server();
  const work = await mkdtemp(join(tmpdir(), 'embers-daemons-'));
  const env = s3.env();
  const daemons: TestDaemon[] = [];
  try {
    // one image reference both nodes resolve to the same manifest digest (same spec: same snapshot key)
    const image = await buildTestFunctionImage(join(work, 'fn'));
    const spec = { image, memoryMiB: 128, idleTimeoutSeconds: 600 };
    const a = await startTestDaemon({ home: join(work, 'a'), env });
    daemons.push(a);
    const deployedA = await a.api('PUT', '/v1/functions/shared', spec);
    assert.equal(deployedA.json.function.spec.snapshots, 'remote', 'remote is the default with a store configured');
    const first = await a.api(
      'GET',
      '/v1/functions/shared/invoke/cgi-bin/write?name=from-a.bin&size=20000&seed=node-a&sync=0',
    );
    assert.equal(first.headers.get('x-embers-start'), 'boot');
    const snapId = await snapshotReady(a, 'shared');
    // created, so uploaded (create pushes in remote mode before it reports ready)
    assert.ok(await exists(s3.objectPath(`snapshots/${snapId}/manifest.json`)), 'the snapshot is in the store');
    assert.equal(await a.stop(), 0);

    const b = await startTestDaemon({ home: join(work, 'b'), env });
    daemons.push(b);
    const deployedB = await b.api('PUT', '/v1/functions/shared', spec);
    assert.equal(
      deployedB.json.function.revision.id,
      deployedA.json.function.revision.id,
      'the same revision on both nodes',
    );
    assert.deepEqual((await b.api('GET', '/v1/snapshots')).json.snapshots, [], 'node B has no snapshot of its own');
    const fromA = await b.api('GET', '/v1/functions/shared/invoke/cgi-bin/read?name=from-a.bin');
    assert.equal(fromA.status, 200, fromA.text);
    assert.equal(fromA.headers.get('x-embers-start'), 'restore', 'no boot on node B');
    assert.equal(reportedSha256(fromA.text), expectedFileSha256('node-a', 20000), 'node A state, restored on node B');
    const fnB = (await b.api('GET', '/v1/functions/shared')).json;
    assert.deepEqual(
      fnB.instances.map((i: { origin: string; snapshotId: string }) => [i.origin, i.snapshotId]),
      [['restore', snapId]],
    );
    const metrics = (await b.api('GET', '/metrics')).text;
    assert.match(metrics, /embers_cold_start_seconds_count\{kind="restore"\} 1\n/);
    assert.doesNotMatch(metrics, /embers_cold_start_seconds_count\{kind="boot"\} [1-9]/);
    const downloaded = /embers_snapshot_transfer_bytes_total\{direction="download"\} (\d+)/.exec(metrics);
    assert.ok(downloaded && Number(downloaded[1]) > 0, 'the snapshot was downloaded');
    await stopClean(b);
    daemons.length = 0;
  } finally {
    for (const d of daemons) await d.stop();
    await s3.dispose();
    await rm(work, { recursive: true, force: true });
  }
  assert.deepEqual(await leakedSince(before), {}, 'host resources leaked');
});

test('a daemon with --peer serves its first cold start by restoring the peer node snapshot straight from it (no store, a dead peer skipped)', async () => {
  const before = await readHostResources();
  const work = await mkdtemp(join(tmpdir(), 'embers-daemons-'));
  const env = {
    EMBERS_PEER_TOKEN: 'a-shared-peer-token-for-tests',
    EMBERS_S3_ENDPOINT: undefined,
    EMBERS_S3_BUCKET: undefined,
  };
  const daemons: TestDaemon[] = [];
  try {
    const image = await buildTestFunctionImage(join(work, 'fn'));
    const spec = { image, memoryMiB: 128, idleTimeoutSeconds: 600 };
    const a = await startTestDaemon({ home: join(work, 'a'), env });
    daemons.push(a);
    assert.equal(
      (await a.api('PUT', '/v1/functions/shared', spec)).json.function.spec.snapshots,
      'local',
      'no store, no peers: local',
    );
    const first = await a.api(
      'GET',
      '/v1/functions/shared/invoke/cgi-bin/write?name=from-a.bin&size=30000&seed=peer-a&sync=0',
    );
    assert.equal(first.headers.get('x-embers-start'), 'boot');
    const snapId = await snapshotReady(a, 'shared');

    // the first peer is down: its search fails and is skipped, the second has the snapshot
    const b = await startTestDaemon({
      home: join(work, 'b'),
      env,
      args: ['--peer', 'http://127.0.0.1:1', '--peer', a.url],
    });
    daemons.push(b);
    const deployedB = await b.api('PUT', '/v1/functions/shared', spec);
    assert.equal(deployedB.json.function.spec.snapshots, 'remote', 'with peers, snapshots are shared by default');
    const fromA = await b.api('GET', '/v1/functions/shared/invoke/cgi-bin/read?name=from-a.bin');
    assert.equal(fromA.status, 200, fromA.text);
    assert.equal(fromA.headers.get('x-embers-start'), 'restore', `no boot on node B; log:\n${b.log()}`);
    assert.equal(reportedSha256(fromA.text), expectedFileSha256('peer-a', 30000), 'node A state, restored on node B');
    assert.deepEqual(
      (await b.api('GET', '/v1/functions/shared')).json.instances.map((i: { origin: string; snapshotId: string }) => [
        i.origin,
        i.snapshotId,
      ]),
      [['restore', snapId]],
    );
    assert.deepEqual(
      (await b.api('GET', '/v1/snapshots')).json.snapshots.map((s: { id: string }) => s.id),
      [snapId],
      'the snapshot was fetched from the peer into node B',
    );
    assert.match(b.log(), /snapshot search in peer http:\/\/127\.0\.0\.1:1 failed/);
    // warm requests on the restored clone (over connections opened ahead of them) answer each in turn
    for (let i = 0; i < 5; i++) {
      const warm = await b.api('GET', '/v1/functions/shared/invoke/cgi-bin/read?name=from-a.bin');
      assert.equal(warm.status, 200, warm.text);
      assert.equal(warm.headers.get('x-embers-start'), 'warm');
      assert.equal(reportedSha256(warm.text), expectedFileSha256('peer-a', 30000));
    }
    const metrics = (await b.api('GET', '/metrics')).text;
    const downloaded = /embers_snapshot_transfer_bytes_total\{direction="download"\} (\d+)/.exec(metrics);
    assert.ok(downloaded && Number(downloaded[1]) > 0, 'the snapshot was downloaded');
    await stopClean(b);
    await stopClean(a);
    daemons.length = 0;
  } finally {
    for (const d of daemons) await d.stop();
    await rm(work, { recursive: true, force: true });
  }
  assert.deepEqual(await leakedSince(before), {}, 'host resources leaked');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage, expectedFileSha256, reportedSha256 } from '../../src/examples/test-function.js';
import { exists } from '../../src/util/fs.js';
import { filesBelow, leakedSince, readHostResources, type HostResources } from '../helpers/leaks.js';
import { snapshotReady, startTestDaemon, waitFor, type TestDaemon } from '../helpers/daemon.js';

/** The value of one sample in the daemon's /metrics (0 when absent). */
async function metric(d: TestDaemon, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = (await d.api('GET', '/metrics')).text;
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',').filter(Boolean);
    if (want.every((w) => have.includes(w)) && have.length === want.length) return Number(m[3]);
  }
  return 0;
}

async function noInstances(d: TestDaemon, fn: string): Promise<void> {
  await waitFor(`${fn} scaled to zero`, async () =>
    (await d.api('GET', `/v1/functions/${fn}`)).json.instances.length === 0 ? true : undefined,
  );
}

async function stopAndCheck(d: TestDaemon, before: HostResources): Promise<void> {
  assert.equal(await d.stop(), 0, `embers serve exit code; log:\n${d.log()}`);
  assert.deepEqual(await filesBelow(join(d.home, 'instances')), [], 'instance dirs left');
  assert.deepEqual(await filesBelow(join(d.home, 'tmp')), [], 'temp files left');
  assert.deepEqual(await filesBelow(join(d.home, 'daemon', 'owned')), [], 'ownership marks left');
  assert.equal(await exists(join(d.home, 'daemon', 'serve.lock')), false, 'the daemon lock is left');
  assert.deepEqual(await leakedSince(before), {}, 'host resources leaked');
}

test('daemon lifecycle: boot, snapshot, scale to zero, restore with the disk intact; revisions; fan-out; queue full; SIGTERM drain', async () => {
  const before = await readHostResources();
  const d = await startTestDaemon();
  try {
    const image = await buildTestFunctionImage(join(d.home, 'fn'));
    const spec = { image, memoryMiB: 128, idleTimeoutSeconds: 1 };

    // deploy, then the first invoke boots; the state it writes (left in the page cache) must survive
    const deployed = await d.api('PUT', '/v1/functions/hello', spec);
    assert.equal(deployed.status, 200, deployed.text);
    assert.equal(deployed.json.changed, true);
    const revision = deployed.json.function.revision.id;
    assert.match(revision, /^rev-[0-9a-f]{16}$/);
    assert.equal(deployed.json.function.snapshot.state, 'none');
    const first = await d.api(
      'GET',
      '/v1/functions/hello/invoke/cgi-bin/write?name=state.bin&size=100000&seed=daemon&sync=0',
    );
    assert.equal(first.status, 200, first.text);
    assert.equal(reportedSha256(first.text), expectedFileSha256('daemon', 100000));
    assert.equal(first.headers.get('x-embers-start'), 'boot');
    const bootInstance = first.headers.get('x-embers-instance');
    assert.match(bootInstance ?? '', /^hello-[0-9a-f]{8}$/);
    assert.match(first.headers.get('server-timing') ?? '', /boot;dur=[\d.]+.*toReady;dur=/);

    // the snapshot is taken after that answer, then the instance stops after the idle timeout
    const snapId = await snapshotReady(d, 'hello');
    await noInstances(d, 'hello');
    assert.deepEqual((await d.api('GET', '/v1/instances')).json.instances, []);
    assert.ok(
      (await d.api('GET', '/v1/snapshots')).json.snapshots.some(
        (s: { id: string; functions: string[] }) => s.id === snapId && s.functions.includes('hello'),
      ),
    );

    // the next invoke is a restore, and the file written before the snapshot is there
    const restored = await d.api('GET', '/v1/functions/hello/invoke/cgi-bin/read?name=state.bin');
    assert.equal(restored.status, 200, restored.text);
    assert.equal(restored.headers.get('x-embers-start'), 'restore');
    assert.notEqual(restored.headers.get('x-embers-instance'), bootInstance);
    assert.equal(reportedSha256(restored.text), expectedFileSha256('daemon', 100000));
    assert.match(restored.headers.get('server-timing') ?? '', /restore;dur=/);
    const inspect = (await d.api('GET', '/v1/functions/hello')).json;
    assert.deepEqual(
      inspect.instances.map((i: { origin: string; snapshotId: string }) => [i.origin, i.snapshotId]),
      [['restore', snapId]],
    );
    // a second call right away is warm, on the same instance; the request body and method go through
    const warm = await d.api('POST', '/v1/functions/hello/invoke/cgi-bin/files', 'ignored body');
    assert.equal(warm.headers.get('x-embers-start'), 'warm');
    assert.equal(warm.headers.get('x-embers-instance'), restored.headers.get('x-embers-instance'));
    assert.match(warm.text, /state\.bin/);

    // a spec update is a new revision (same spec: unchanged); its VM is the same, so the snapshot still serves it
    const same = await d.api('PUT', '/v1/functions/hello', spec);
    assert.equal(same.json.changed, false);
    assert.equal(same.json.function.revision.id, revision);
    const updated = await d.api('PUT', '/v1/functions/hello', { ...spec, maxInstances: 3 });
    assert.equal(updated.json.changed, true);
    assert.notEqual(updated.json.function.revision.id, revision);
    assert.equal(updated.json.function.snapshot.id, snapId);
    const envChange = await d.api('PUT', '/v1/functions/hello', { ...spec, env: ['GREETING=hi'] });
    assert.notEqual(envChange.json.function.revision.id, updated.json.function.revision.id);
    assert.equal(envChange.json.function.snapshot.state, 'none', 'another VM: no snapshot yet');
    await noInstances(d, 'hello'); // the old revision's instance drained

    // fan-out: a burst of 5 first requests on a function with no instance and no snapshot costs one boot
    const boots0 = await metric(d, 'embers_cold_start_seconds_count', { kind: 'boot' });
    const restores0 = await metric(d, 'embers_cold_start_seconds_count', { kind: 'restore' });
    assert.equal(
      (await d.api('PUT', '/v1/functions/burst', { ...spec, env: ['BURST=1'], idleTimeoutSeconds: 2 })).status,
      200,
    );
    const burst = await Promise.all(Array.from({ length: 5 }, () => d.api('GET', '/v1/functions/burst/invoke')));
    for (const r of burst) assert.equal(r.status, 200, r.text);
    const starts = burst.map((r) => r.headers.get('x-embers-start'));
    assert.equal(starts.filter((s) => s === 'boot').length, 1, `starts: ${starts.join(', ')}`);
    assert.ok(
      starts.every((s) => ['boot', 'restore', 'warm'].includes(s ?? '')),
      starts.join(', '),
    );
    await waitFor('the burst cold starts to end', async () =>
      (await d.api('GET', '/v1/functions/burst')).json.instances.some((i: { state: string }) => i.state === 'starting')
        ? undefined
        : true,
    );
    assert.equal(
      (await metric(d, 'embers_cold_start_seconds_count', { kind: 'boot' })) - boots0,
      1,
      'one boot for the burst',
    );
    assert.ok(
      (await metric(d, 'embers_cold_start_seconds_count', { kind: 'restore' })) - restores0 >= 1,
      'the rest are restores from its snapshot',
    );
    assert.equal(await metric(d, 'embers_invocations_total', { function: 'burst', start: 'boot' }), 1);

    // queue full: one instance, one request may wait beyond it, the third gets 429 with Retry-After
    const tiny = { ...spec, env: ['TINY=1'], maxInstances: 1, maxQueue: 1, snapshots: 'disabled' };
    assert.equal((await d.api('PUT', '/v1/functions/tiny', tiny)).status, 200);
    const three = await Promise.all(Array.from({ length: 3 }, () => d.api('GET', '/v1/functions/tiny/invoke')));
    const statuses = three.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 429], three.map((r) => r.text).join('\n'));
    const full = three.find((r) => r.status === 429)!;
    assert.equal(full.json.error.code, 'EMB_FUNCTION_QUEUE_FULL');
    assert.match(full.headers.get('retry-after') ?? '', /^\d+$/);
    assert.equal((await d.api('GET', '/v1/functions/tiny')).json.snapshot.state, 'none', 'snapshots disabled');

    // delete drains; ?snapshots=delete removes the snapshots of its revision
    const burstSnap = await snapshotReady(d, 'burst');
    const removed = await d.api('DELETE', '/v1/functions/burst?snapshots=delete');
    assert.equal(removed.status, 200, removed.text);
    assert.deepEqual(removed.json.removedSnapshots, [burstSnap]);
    assert.equal((await d.api('GET', '/v1/functions/burst')).status, 404);
    assert.ok(!(await d.api('GET', '/v1/snapshots')).json.snapshots.some((s: { id: string }) => s.id === burstSnap));

    // SIGTERM while a request waits for a cold start: it is still answered, then everything is released
    await d.api('PUT', '/v1/functions/hello', spec); // back to the revision with a snapshot
    const inFlight = d.api('GET', '/v1/functions/hello/invoke/cgi-bin/read?name=state.bin');
    await waitFor('a cold start in flight', async () =>
      (await d.api('GET', '/v1/functions/hello')).json.instances.length > 0 ? true : undefined,
    );
    d.proc.kill('SIGTERM');
    const answered = await inFlight;
    assert.equal(answered.status, 200, answered.text);
    assert.equal(reportedSha256(answered.text), expectedFileSha256('daemon', 100000));
  } finally {
    await stopAndCheck(d, before);
    await rm(d.home, { recursive: true, force: true });
  }
});

test('daemon crash: kill -9 leaves a running instance; a restart reconciles it, keeps the snapshot and serves the function again', async () => {
  const before = await readHostResources();
  const work = await mkdtemp(join(tmpdir(), 'embers-daemon-crash-'));
  const image = await buildTestFunctionImage(join(work, 'fn'));
  const home = join(work, 'home');
  let d = await startTestDaemon({ home });
  try {
    const put = await d.api('PUT', '/v1/functions/crashy', { image, memoryMiB: 128, idleTimeoutSeconds: 600 });
    const revision = put.json.function.revision.id;
    const first = await d.api(
      'GET',
      '/v1/functions/crashy/invoke/cgi-bin/write?name=kept.bin&size=5000&seed=crash&sync=1',
    );
    assert.equal(first.headers.get('x-embers-start'), 'boot');
    const snapId = await snapshotReady(d, 'crashy');
    await d.kill9();
    // its VM outlived it: a restart must find and stop it
    const ours = async () => (await readHostResources()).processes.filter((p) => p.includes('embers-crashy-'));
    assert.equal((await ours()).length, 1, 'the VM survives the daemon');

    d = await startTestDaemon({ home });
    const fn = (await d.api('GET', '/v1/functions/crashy')).json;
    assert.equal(fn.revision.id, revision, 'the spec persisted');
    assert.deepEqual(fn.instances, [], 'the old instance was stopped');
    assert.equal(fn.snapshot.state, 'ready');
    assert.equal(fn.snapshot.id, snapId);
    assert.deepEqual(await ours(), [], 'no VM left from before the crash');
    const again = await d.api('GET', '/v1/functions/crashy/invoke/cgi-bin/read?name=kept.bin');
    assert.equal(again.status, 200, again.text);
    assert.equal(again.headers.get('x-embers-start'), 'restore');
    assert.equal(reportedSha256(again.text), expectedFileSha256('crash', 5000));
  } finally {
    await stopAndCheck(d, before);
    await rm(work, { recursive: true, force: true });
  }
});

/**
 * The crash matrix of snapshot transfers: `embers snapshot push` (to S3) and `embers snapshot
 * pull` (from S3 and from a peer node), each killed (SIGKILL, through EMBERS_CRASH_AT) at every
 * crash point of its steps. After each kill: no half snapshot is visible (locally: `ls` and
 * `inspect`; remotely: `ls --remote` and a pull by a clean node), the earlier snapshot still
 * verifies, the next command leaves no staging dir, transfer state or lock of the dead process
 * behind (nor a process, mount or loop device naming the home: these steps make no netns,
 * link or VM, so the check is scoped to the home and the file needs no host-tests lock), and re-running the operation succeeds (resuming what was done). Snapshots are
 * synthetic (real bundles of random bytes, no VM): the steps under test move files.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { startPeerServer, type PeerServer } from '../../src/snapshot/peer-server.js';
import type { CrashPointName } from '../../src/util/crash-point.js';
import { embers, embersPausedAt, describeRun, formatMatrix, hostLeftoversOf, type CrashRow } from '../helpers/crash.js';
import { makeSnapshot } from '../helpers/snapshots.js';
import { startS3Server, type S3TestServer } from '../helpers/s3-server.js';

let s3: S3TestServer;
let work: string;
let homeA: string;
let earlier: string;
let target: string;
let peer: PeerServer;
const token = randomBytes(16).toString('hex');
const rows: CrashRow[] = [];

before(async () => {
  s3 = await startS3Server();
  work = await mkdtemp(join(tmpdir(), 'embers-crash-transfer-'));
  homeA = join(work, 'a');
  const store = new LocalSnapshotStore(join(homeA, 'snapshots'));
  earlier = (await makeSnapshot(store, { memoryBytes: 2 * 1024 * 1024 })).id;
  // 20 MiB of memory: three 8 MiB parts on a push, three ranges on a pull
  target = (await makeSnapshot(store)).id;
  const ok = await embers(homeA, ['snapshot', 'push', target], { env: s3.env('whole') });
  assert.equal(ok.code, 0, describeRun(ok));
  peer = await startPeerServer({ store, token });
});

after(async () => {
  await peer?.close();
  await s3?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
  if (rows.length) console.log(formatMatrix('snapshot push / pull', rows));
});

/** What `ls`, `inspect` and `.transfers/` of a home show of snapshot `id`. */
async function localView(home: string, id: string): Promise<{ listed: boolean; inspect: string; staging: string[] }> {
  const ls = await embers(home, ['snapshot', 'ls']);
  assert.equal(ls.code, 0, describeRun(ls));
  const listed = (ls.json.snapshots as { id: string }[]).some((s) => s.id === id);
  const inspect = await embers(home, ['snapshot', 'inspect', id, '--verify']);
  const names = await readdir(join(home, 'snapshots')).catch(() => [] as string[]);
  return {
    listed,
    inspect: inspect.code === 0 ? 'verified' : String(inspect.json?.error?.code),
    staging: names.filter((n) => n.startsWith('.')),
  };
}

/** Transfer state left below `.transfers/` of a home. */
async function transferLeftovers(home: string): Promise<string[]> {
  return readdir(join(home, 'snapshots', '.transfers')).catch(() => [] as string[]);
}

const PUSH_POINTS: CrashPointName[] = [
  'snapshot.push.after-part',
  'snapshot.push.before-manifest',
  'snapshot.push.after-manifest',
];

for (const point of PUSH_POINTS) {
  test(`crash matrix: snapshot push killed at ${point}`, async () => {
    const prefix = `push-${point.split('.').pop()}`;
    const env = s3.env(prefix);
    const killed = await embers(homeA, ['snapshot', 'push', target], { env, crashAt: point });
    assert.equal(killed.signal, 'SIGKILL', describeRun(killed));

    // remotely: the snapshot exists once its manifest is up, whole, and not before
    const remote = await embers(homeA, ['snapshot', 'ls', '--remote'], { env });
    assert.equal(remote.code, 0, describeRun(remote));
    const visible = (remote.json.snapshots as string[]).includes(target);
    assert.equal(visible, point === 'snapshot.push.after-manifest');
    const clean = await mkdtemp(join(work, 'clean-'));
    const probe = await embers(clean, ['snapshot', 'pull', target], { env });
    if (visible) assert.equal(probe.code, 0, describeRun(probe));
    else assert.equal(probe.json?.error?.code, 'EMB_REMOTE_NOT_FOUND', describeRun(probe));

    // locally: both snapshots still verify; the dead push's lock is taken over by the re-run
    for (const id of [earlier, target]) assert.equal((await localView(homeA, id)).inspect, 'verified');
    const rerun = await embers(homeA, ['snapshot', 'push', target], { env });
    assert.equal(rerun.code, 0, describeRun(rerun));
    if (point !== 'snapshot.push.after-part')
      assert.ok(rerun.json.resumedBytes > 0, 'the re-run kept the uploaded files');
    assert.deepEqual(await transferLeftovers(homeA), [], 'the finished push leaves no state or lock');
    assert.deepEqual(await hostLeftoversOf(homeA), [], 'no process, mount or loop device of the home');
    const pulled = await embers(await mkdtemp(join(work, 'clean-')), ['snapshot', 'pull', target], { env });
    assert.equal(pulled.code, 0, describeRun(pulled));
    rows.push({
      point,
      via: 'S3',
      visible: visible ? 'whole (manifest up)' : 'nothing (ls --remote, pull: NOT_FOUND)',
      earlierVerify: 'verify',
      reconciled: 'lock taken over, no state left',
      rerun: `ok${rerun.json.resumedBytes > 0 ? ', resumed' : ''}`,
    });
  });
}

const PULL_POINTS: (CrashPointName | `${CrashPointName}@${number}`)[] = [
  'snapshot.pull.after-manifest',
  'snapshot.pull.after-range@2',
  'snapshot.pull.before-publish',
  'snapshot.pull.after-publish',
];

for (const via of ['S3', 'peer'] as const) {
  for (const point of PULL_POINTS) {
    test(`crash matrix: snapshot pull from ${via} killed at ${point}`, async () => {
      const home = await mkdtemp(join(work, 'b-'));
      // an earlier snapshot of this node, made before the crash
      const mine = (await makeSnapshot(new LocalSnapshotStore(join(home, 'snapshots')), { memoryBytes: 1024 * 1024 }))
        .id;
      const args =
        via === 'S3'
          ? ['snapshot', 'pull', target]
          : ['snapshot', 'pull', target, '--from-peer', peer.url, '--token', token];
      const env = via === 'S3' ? s3.env('whole') : {};
      const killed = await embers(home, args, { env, crashAt: point });
      assert.equal(killed.signal, 'SIGKILL', describeRun(killed));

      const view = await localView(home, target);
      const whole = point === 'snapshot.pull.after-publish';
      assert.equal(view.listed, whole, 'listed only once published');
      assert.equal(view.inspect, whole ? 'verified' : 'EMB_SNAPSHOT_NOT_FOUND');
      assert.deepEqual(
        view.staging.filter((n) => n !== '.transfers'),
        [],
        'the next command removed the staging dir of the dead pull',
      );
      assert.equal((await localView(home, mine)).inspect, 'verified', 'the earlier snapshot still verifies');

      const rerun = await embers(home, args, { env });
      assert.equal(rerun.code, 0, describeRun(rerun));
      const resumed = rerun.json.fetched?.resumedBytes ?? 0;
      if (point === 'snapshot.pull.after-range@2')
        assert.ok(resumed > 0, 'the re-run resumed the ranges already fetched');
      assert.equal((await localView(home, target)).inspect, 'verified');
      assert.deepEqual(await transferLeftovers(home), [], 'no transfer state or lock is left');
      assert.deepEqual(await hostLeftoversOf(home), [], 'no process, mount or loop device of the home');
      rows.push({
        point,
        via,
        visible: whole ? 'whole (verifies)' : 'nothing (ls, inspect: NOT_FOUND)',
        earlierVerify: 'verify',
        reconciled: 'staging dropped, lock taken over',
        rerun: whole ? 'ok (already here)' : `ok${resumed > 0 ? ', resumed' : ''}`,
      });
    });
  }
}

test('concurrency: two pulls of one snapshot into one home: the second gets EMB_SNAPSHOT_TRANSFER_BUSY, the first finishes, then the second finds it here', async () => {
  const home = await mkdtemp(join(work, 'two-pulls-'));
  const env = s3.env('whole');
  const first = await embersPausedAt(home, ['snapshot', 'pull', target], 'snapshot.pull.after-manifest', {
    env,
    pauseFile: join(work, 'go-pull'),
  });
  const second = await embers(home, ['snapshot', 'pull', target], { env });
  assert.equal(second.json?.error?.code, 'EMB_SNAPSHOT_TRANSFER_BUSY', describeRun(second));
  const done = await first.resume();
  assert.equal(done.code, 0, describeRun(done));
  const again = await embers(home, ['snapshot', 'pull', target], { env });
  assert.equal(again.code, 0, describeRun(again));
  assert.equal(again.json.fetched, undefined, 'already here: nothing fetched');
  assert.equal((await localView(home, target)).inspect, 'verified');
  assert.deepEqual(await transferLeftovers(home), []);
});

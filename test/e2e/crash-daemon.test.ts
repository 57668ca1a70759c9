/**
 * The crash matrix of the daemon's lifecycle (`embers serve`): the daemon is killed (SIGKILL,
 * through EMBERS_CRASH_AT) right after a cold start booted an instance, right before and right
 * after it snapshots an instance after its first invocation. A restart on the same home takes
 * the dead daemon's lock over and reconciles: no VM of the dead daemon is left, every snapshot
 * in the home is whole (it verifies), and the function serves again and gets its snapshot.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import type { CrashPointName } from '../../src/util/crash-point.js';
import { embers, describeRun, formatMatrix, type CrashRow } from '../helpers/crash.js';
import { snapshotReady, startTestDaemon, waitFor, type TestDaemon } from '../helpers/daemon.js';
import { exists } from '../../src/util/fs.js';
import { filesBelow, leakedSince, readHostResources } from '../helpers/leaks.js';

const rows: CrashRow[] = [];
after(() => {
  if (rows.length) console.log(formatMatrix('daemon lifecycle (embers serve, QEMU guest)', rows));
});

async function exited(d: TestDaemon): Promise<NodeJS.Signals | null> {
  if (d.proc.exitCode === null && d.proc.signalCode === null) await new Promise((r) => d.proc.once('exit', r));
  return d.proc.signalCode;
}

const POINTS: CrashPointName[] = [
  'lifecycle.cold-start.after-boot',
  'lifecycle.snapshot.before-create',
  'lifecycle.snapshot.after-create',
];

for (const point of POINTS) {
  test(`crash matrix: the daemon killed at ${point}`, async () => {
    const before = await readHostResources();
    const work = await mkdtemp(join(tmpdir(), 'embers-crash-daemon-'));
    const home = join(work, 'home');
    const image = await buildTestFunctionImage(join(work, 'fn'));
    let d = await startTestDaemon({ home, env: { EMBERS_CRASH_AT: point } });
    try {
      const put = await d.api('PUT', '/v1/functions/crashy', { image, memoryMiB: 128, idleTimeoutSeconds: 600 });
      assert.equal(put.status, 200, put.text);
      await d.api('GET', '/v1/functions/crashy/invoke/').catch(() => undefined); // the daemon may die under it
      assert.equal(await exited(d), 'SIGKILL', `the daemon died at ${point}; log:\n${d.log()}`);

      d = await startTestDaemon({ home });
      const ours = async () => (await readHostResources()).processes.filter((p) => p.includes('embers-crashy-'));
      await waitFor('no VM of the dead daemon', async () => ((await ours()).length === 0 ? true : undefined));
      const snaps = (await embers(home, ['snapshot', 'ls'])).json.snapshots as { id: string }[];
      for (const s of snaps) {
        const v = await embers(home, ['snapshot', 'inspect', s.id, '--verify']);
        assert.equal(v.code, 0, `snapshot ${s.id} left by the dead daemon is whole: ${describeRun(v)}`);
      }
      const again = await d.api('GET', '/v1/functions/crashy/invoke/');
      assert.equal(again.status, 200, again.text);
      const snapshot = await snapshotReady(d, 'crashy');
      assert.equal((await embers(home, ['snapshot', 'inspect', snapshot, '--verify'])).code, 0);
      rows.push({
        point,
        via: 'embers serve',
        visible: snaps.length ? `${snaps.length} snapshot, whole (verifies)` : 'no snapshot',
        earlierVerify: 'n/a (fresh home)',
        reconciled: `lock taken over, VM of the dead daemon gone; served by ${again.headers.get('x-embers-start')}`,
        rerun: 'snapshot after invoke ready, verifies',
      });
    } finally {
      assert.equal(await d.stop(), 0, `embers serve exit code; log:\n${d.log()}`);
      assert.deepEqual(await filesBelow(join(home, 'instances')), [], 'instance dirs left');
      assert.deepEqual(await filesBelow(join(home, 'tmp')), [], 'temp files left');
      assert.deepEqual(await leakedSince(before), {}, 'host resources leaked');
      await rm(work, { recursive: true, force: true });
    }
  });
}

test('concurrency with the daemon: snapshot rm from the CLI while the daemon restores that snapshot is EMB_SNAPSHOT_BUSY; removed later, the next cold start boots and snapshots again', async () => {
  const before = await readHostResources();
  const work = await mkdtemp(join(tmpdir(), 'embers-daemon-cli-'));
  const home = join(work, 'home');
  const go = join(work, 'go-restore');
  const image = await buildTestFunctionImage(join(work, 'fn'));
  // the daemon stops inside its first restore (after the fetch, the snapshot pinned) until `go` exists
  const d = await startTestDaemon({
    home,
    env: { EMBERS_PAUSE_AT: 'snapshot.restore.after-fetch', EMBERS_PAUSE_FILE: go },
    args: ['--record-working-sets', 'off'],
  });
  try {
    assert.equal(
      (await d.api('PUT', '/v1/functions/shared', { image, memoryMiB: 128, idleTimeoutSeconds: 1 })).status,
      200,
    );
    assert.equal((await d.api('GET', '/v1/functions/shared/invoke/')).headers.get('x-embers-start'), 'boot');
    const first = await snapshotReady(d, 'shared');
    await waitFor('scale to zero', async () =>
      (await d.api('GET', '/v1/functions/shared')).json.instances.length === 0 ? true : undefined,
    );

    const restoring = d.api('GET', '/v1/functions/shared/invoke/');
    await waitFor('the daemon inside its restore', async () => (await exists(`${go}.reached`)) || undefined);
    const busy = await embers(home, ['snapshot', 'rm', first]);
    assert.equal(busy.json?.error?.code, 'EMB_SNAPSHOT_BUSY', describeRun(busy));
    await writeFile(go, '');
    const restored = await restoring;
    assert.equal(restored.status, 200, restored.text);
    assert.equal(restored.headers.get('x-embers-start'), 'restore');

    // once no restore reads it, the CLI removes it; the daemon's next cold start finds it gone, boots, and snapshots again
    await waitFor('scale to zero', async () =>
      (await d.api('GET', '/v1/functions/shared')).json.instances.length === 0 ? true : undefined,
    );
    const removed = await embers(home, ['snapshot', 'rm', first]);
    assert.equal(removed.code, 0, describeRun(removed));
    const again = await d.api('GET', '/v1/functions/shared/invoke/');
    assert.equal(again.status, 200, again.text);
    assert.equal(again.headers.get('x-embers-start'), 'boot', `log:\n${d.log()}`);
    const second = await snapshotReady(d, 'shared');
    assert.notEqual(second, first);
    assert.equal((await embers(home, ['snapshot', 'inspect', second, '--verify'])).code, 0);
  } finally {
    assert.equal(await d.stop(), 0, `embers serve exit code; log:\n${d.log()}`);
    assert.deepEqual(await filesBelow(join(home, 'instances')), [], 'instance dirs left');
    assert.deepEqual(await leakedSince(before), {}, 'host resources leaked');
    await rm(work, { recursive: true, force: true });
  }
});

/**
 * The crash matrix of `embers snapshot create` and `embers snapshot restore` (with the instance
 * launch under it), on a real guest, through the CLI: each command is killed (SIGKILL, through
 * EMBERS_CRASH_AT) at every crash point of its steps. One booted instance and one earlier
 * snapshot serve every point. After each kill: `ls` lists nothing half-made (whatever it lists
 * verifies), the earlier snapshot still verifies, the next command reconciles (no staging dir,
 * temp file or snapshot marker; the instance's VM runs again if the kill left it paused; a
 * clone's VMM started by the dead restore is gone), and re-running the command succeeds. The
 * host is checked for leaked processes, netns, links, nft tables, mounts and loop devices at
 * the end. Then the concurrency cases on one home, made exact with EMBERS_PAUSE_AT: two creates
 * of one instance, and `snapshot rm` while a restore reads the snapshot.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import type { CrashPointName } from '../../src/util/crash-point.js';
import {
  embers as embersIn,
  embersPausedAt,
  describeRun,
  formatMatrix,
  type CliOptions,
  type CliRun,
  type CrashRow,
} from '../helpers/crash.js';
import { leakedSince, readHostResources, type HostResources } from '../helpers/leaks.js';

let work: string;
let home: string;
let earlier: string;
let hostBefore: HostResources;
const rows: CrashRow[] = [];

/** The CLI on this test's home, with a small network pool. */
function embers(args: string[], opts?: CliOptions): Promise<CliRun> {
  return embersIn(home, [...args, '--net-pool-size', '1'], opts);
}

async function ok(args: string[]): Promise<CliRun> {
  const r = await embers(args);
  assert.equal(r.code, 0, `embers ${args.join(' ')}: ${describeRun(r)}`);
  return r;
}

async function listed(): Promise<string[]> {
  return ((await ok(['snapshot', 'ls'])).json.snapshots as { id: string }[]).map((s) => s.id);
}

async function verifies(id: string): Promise<boolean> {
  return (await embers(['snapshot', 'inspect', id, '--verify'])).code === 0;
}

before(async () => {
  hostBefore = await readHostResources();
  work = await mkdtemp(join(tmpdir(), 'embers-crash-snapshot-'));
  home = join(work, 'home');
  const layout = await buildTestFunctionImage(join(work, 'layout'));
  await ok(['run', layout, '--name', 'origin', '--memory', '128']);
  await ok(['invoke', 'origin', '--path', '/cgi-bin/write?name=before.bin&size=100000&seed=crash&sync=1']);
  earlier = (await ok(['snapshot', 'create', 'origin'])).json.id;
});

after(async () => {
  if (home) await embers(['down']);
  if (rows.length) console.log(formatMatrix('snapshot create / restore (QEMU guest)', rows));
  if (work) await rm(work, { recursive: true, force: true });
  if (hostBefore) assert.deepEqual(await leakedSince(hostBefore), {}, 'host resources leaked');
});

/** What every kill must leave: the home reconciled by the command just run. */
async function assertReconciled(): Promise<void> {
  const names = await readdir(join(home, 'snapshots'));
  assert.deepEqual(
    names.filter((n) => n.startsWith('.staging-') || n.startsWith('.trash-')),
    [],
    'no staging or trash dir',
  );
  assert.deepEqual(await readdir(join(home, 'tmp')), [], 'no temp file of the dead command');
  assert.ok(
    !(await readdir(join(home, 'instances', 'origin'))).includes('snapshot.pid'),
    'no snapshot marker of the dead command',
  );
  assert.ok(await verifies(earlier), 'the earlier snapshot still verifies');
  // the instance answers: a VM the dead create left paused runs again
  assert.equal((await ok(['invoke', 'origin', '--path', '/'])).json.body.trim(), 'hello from embers');
}

const CREATE_POINTS: CrashPointName[] = [
  'snapshot.create.after-pause',
  'snapshot.create.after-vmm-snapshot',
  'snapshot.create.after-disk-copy',
  'snapshot.create.after-resume',
  'snapshot.create.after-delta',
  'snapshot.publish.before-rename',
  'snapshot.create.after-publish',
];

for (const point of CREATE_POINTS) {
  test(`crash matrix: snapshot create killed at ${point}`, async () => {
    const before = await listed();
    const killed = await embers(['snapshot', 'create', 'origin'], { crashAt: point });
    assert.equal(killed.signal, 'SIGKILL', describeRun(killed));
    const afterKill = await listed(); // the next command: it reconciles
    const added = afterKill.filter((id) => !before.includes(id));
    assert.equal(
      added.length,
      point === 'snapshot.create.after-publish' ? 1 : 0,
      `listed after the kill: ${added.join(', ')}`,
    );
    for (const id of added) assert.ok(await verifies(id), `${id} is whole`);
    await assertReconciled();
    const rerun = await ok(['snapshot', 'create', 'origin']);
    assert.ok(await verifies(rerun.json.id));
    for (const id of [...added, rerun.json.id]) await ok(['snapshot', 'rm', id]);
    rows.push({
      point,
      via: 'qemu',
      visible: added.length ? 'whole (verifies)' : 'nothing (ls)',
      earlierVerify: 'verify',
      reconciled: 'no staging/tmp/marker; VM answers',
      rerun: 'ok',
    });
  });
}

const RESTORE_POINTS: CrashPointName[] = [
  'snapshot.restore.after-fetch',
  'snapshot.restore.disk.before-rename',
  'snapshot.restore.after-disk',
  'instance.launch.after-vmm-start',
];

for (const [i, point] of RESTORE_POINTS.entries()) {
  test(`crash matrix: snapshot restore killed at ${point}`, async () => {
    // the restored disk is a cache: drop it, so the restore makes it again and passes every step
    await rm(join(home, 'restore', earlier), { recursive: true, force: true });
    const name = `clone-${i}`;
    const killed = await embers(['snapshot', 'restore', earlier, '--name', name], { crashAt: point });
    assert.equal(killed.signal, 'SIGKILL', describeRun(killed));
    const ps = (await ok(['ps'])).json.instances as { name: string }[];
    assert.deepEqual(
      ps.map((p) => p.name),
      ['origin'],
      'the half-started clone is not listed',
    );
    assert.ok(!(await readdir(join(home, 'instances'))).includes(name), 'its instance dir is gone');
    const restoreDir = await readdir(join(home, 'restore', earlier)).catch(() => [] as string[]);
    assert.deepEqual(
      restoreDir.filter((n) => n.startsWith('.disk-')),
      [],
      'no half-written restored disk',
    );
    assert.deepEqual(await readdir(join(home, 'snapshots', '.pins')).catch(() => []), [], 'no pin of the dead restore');
    await assertReconciled();
    const rerun = await ok(['snapshot', 'restore', earlier, '--name', name]);
    assert.equal(rerun.json.clones[0].diskVerified, true);
    assert.equal((await ok(['invoke', name, '--path', '/'])).json.body.trim(), 'hello from embers');
    await ok(['stop', name]);
    rows.push({
      point,
      via: 'qemu',
      visible: 'no clone (ps), no restored disk',
      earlierVerify: 'verify',
      reconciled: point === 'instance.launch.after-vmm-start' ? 'VMM killed, slot released' : 'no tmp disk, no pin',
      rerun: 'ok, clone answers',
    });
  });
}

test('concurrency: two creates of one instance: the second gets EMB_INSTANCE_BUSY, the first finishes', async () => {
  const first = await embersPausedAt(
    home,
    ['snapshot', 'create', 'origin', '--net-pool-size', '1'],
    'snapshot.create.after-pause',
    {
      pauseFile: join(work, 'go-create'),
    },
  );
  const second = await embers(['snapshot', 'create', 'origin']);
  assert.equal(second.json?.error?.code, 'EMB_INSTANCE_BUSY', describeRun(second));
  const done = await first.resume();
  assert.equal(done.code, 0, describeRun(done));
  assert.ok(await verifies(done.json.id));
  await ok(['snapshot', 'rm', done.json.id]);
  await assertReconciled();
});

test('concurrency: snapshot rm while a restore reads the snapshot: EMB_SNAPSHOT_BUSY, the restore finishes, rm then succeeds', async () => {
  const restoring = await embersPausedAt(
    home,
    ['snapshot', 'restore', earlier, '--name', 'reader', '--net-pool-size', '1'],
    'snapshot.restore.after-fetch',
    {
      pauseFile: join(work, 'go-restore'),
    },
  );
  const removing = await embers(['snapshot', 'rm', earlier]);
  assert.equal(removing.json?.error?.code, 'EMB_SNAPSHOT_BUSY', describeRun(removing));
  const done = await restoring.resume();
  assert.equal(done.code, 0, describeRun(done));
  assert.equal((await ok(['invoke', 'reader', '--path', '/'])).json.body.trim(), 'hello from embers');
  // once the restore is over the snapshot can go; the running clone keeps what it loaded
  await ok(['snapshot', 'rm', earlier]);
  assert.equal((await ok(['invoke', 'reader', '--path', '/'])).json.body.trim(), 'hello from embers');
  await ok(['stop', 'reader']);
  earlier = (await ok(['snapshot', 'create', 'origin'])).json.id;
});

test('concurrency: image gc while a restore uses the image: gc waits for the restore, which finishes; the image its clone runs is kept', async () => {
  // the restore is the image's only user: no instance runs it, and its restored disk is to be made
  await ok(['stop', 'origin']);
  await rm(join(home, 'restore', earlier), { recursive: true, force: true });
  const restoring = await embersPausedAt(
    home,
    ['snapshot', 'restore', earlier, '--name', 'gc-reader', '--net-pool-size', '1'],
    'snapshot.restore.disk.before-rename',
    { pauseFile: join(work, 'go-gc') },
  );
  let gcDone = false;
  const gc = embers(['image', 'gc']).finally(() => (gcDone = true));
  // gc takes its lock, then waits for the restore's pin on the image cache
  while (!gcDone && !(await readdir(join(home, 'images'))).includes('.gc.lock'))
    await new Promise((r) => setTimeout(r, 100));
  assert.equal(gcDone, false, `gc did not wait for the restore: ${gcDone ? describeRun(await gc) : ''}`);
  const done = await restoring.resume();
  assert.equal(done.code, 0, describeRun(done));
  const collected = await gc;
  assert.equal(collected.code, 0, describeRun(collected));
  const images = (await ok(['image', 'ls'])).json.images as { rootfsSha256?: string }[];
  assert.ok(
    images.some((i) => i.rootfsSha256),
    `the rootfs the clone was made from is kept: ${JSON.stringify(images)}`,
  );
  assert.equal((await ok(['invoke', 'gc-reader', '--path', '/'])).json.body.trim(), 'hello from embers');
  await ok(['stop', 'gc-reader']);
});

/**
 * The crash matrix of `embers image pull` (registry download, then flatten): killed
 * (SIGKILL, through EMBERS_CRASH_AT) at every crash point of its steps. After each kill: the
 * image is not visible half-made (`image ls`, `image inspect`), an image pulled earlier still
 * inspects with a rootfs matching its sha256, the next command leaves no partial rootfs, temp
 * dir, pin or lock of the dead process, and re-running the pull gives the same rootfs, byte for
 * byte, as a pull that was never interrupted.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeOciLayout } from '../../src/examples/oci-layout.js';
import { sha256File } from '../../src/util/fs.js';
import type { CrashPointName } from '../../src/util/crash-point.js';
import { embers, describeRun, formatMatrix, hostLeftoversOf, type CrashRow } from '../helpers/crash.js';
import { layeredImage, marked } from '../helpers/registry-fixtures.js';
import { registrySkipReason, startRegistry, type TestRegistry } from '../helpers/registry.js';

const skip = registrySkipReason();
let reg: TestRegistry;
let work: string;
let earlierRef: string;
let targetRef: string;
let expectedRootfs: string;
const rows: CrashRow[] = [];

before(async () => {
  if (skip) return;
  work = await mkdtemp(join(tmpdir(), 'embers-crash-image-'));
  reg = await startRegistry();
  await writeOciLayout(join(work, 'earlier'), marked('earlier'), { refName: 'v1' });
  await reg.pushLayout(join(work, 'earlier'), 'v1', 'crash/earlier:v1');
  await writeOciLayout(join(work, 'target'), layeredImage(), { refName: 'v1' });
  await reg.pushLayout(join(work, 'target'), 'v1', 'crash/target:v1');
  earlierRef = `${reg.host}/crash/earlier:v1`;
  targetRef = `${reg.host}/crash/target:v1`;
  const whole = await embers(join(work, 'reference-home'), ['image', 'pull', targetRef]);
  assert.equal(whole.code, 0, describeRun(whole));
  expectedRootfs = whole.json.rootfsSha256;
});

after(async () => {
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
  if (rows.length) console.log(formatMatrix('image pull / flatten', rows));
});

const POINTS: CrashPointName[] = [
  'image.pull.after-layer',
  'image.pull.before-manifest',
  'image.flatten.after-stage',
  'image.flatten.before-publish',
  'image.flatten.after-publish',
];

for (const point of POINTS) {
  test(`crash matrix: image pull killed at ${point}`, { skip }, async () => {
    const home = await mkdtemp(join(work, 'home-'));
    const first = await embers(home, ['image', 'pull', earlierRef]);
    assert.equal(first.code, 0, describeRun(first));

    const killed = await embers(home, ['image', 'pull', targetRef], { crashAt: point });
    assert.equal(killed.signal, 'SIGKILL', describeRun(killed));

    // the next command (ls) reconciles; what it lists of the target is whole or nothing
    const ls = await embers(home, ['image', 'ls']);
    assert.equal(ls.code, 0, describeRun(ls));
    const seen = (ls.json.images as { reference: string; source: string; rootfsSha256?: string }[]).filter((i) =>
      i.reference.includes('crash/target'),
    );
    for (const i of seen)
      assert.equal(i.rootfsSha256, expectedRootfs, `a listed rootfs is whole: ${JSON.stringify(i)}`);
    const inspect = await embers(home, ['image', 'inspect', targetRef]);
    const visible =
      inspect.code === 0
        ? `whole (inspect: rootfs ${inspect.json.rootfsSha256 ? 'built' : 'not built'})`
        : `inspect: ${inspect.json?.error?.code}`;
    if (inspect.code === 0 && inspect.json.rootfsSha256) assert.equal(inspect.json.rootfsSha256, expectedRootfs);
    if (point !== 'image.flatten.after-publish')
      assert.ok(seen.every((i) => i.source === 'unreferenced') || seen.length === 0);

    const images = join(home, 'images');
    assert.deepEqual(
      (await readdir(join(images, 'rootfs')).catch(() => [] as string[])).filter((n) => n.startsWith('.')),
      [],
      'no partial or trashed rootfs dir',
    );
    assert.deepEqual(await readdir(join(home, 'tmp')), [], 'nothing of the dead pull in tmp');
    assert.deepEqual(
      (await readdir(images)).filter((n) => n.startsWith('.pin-') || n.endsWith('.lock')),
      [],
      'no pin or lock of the dead pull',
    );

    // the earlier image: still there, its rootfs matching its digest
    const e = await embers(home, ['image', 'inspect', earlierRef]);
    assert.equal(e.code, 0, describeRun(e));
    assert.equal(await sha256File(e.json.rootfsPath), e.json.rootfsSha256);

    const rerun = await embers(home, ['image', 'pull', targetRef]);
    assert.equal(rerun.code, 0, describeRun(rerun));
    assert.equal(rerun.json.rootfsSha256, expectedRootfs);
    assert.equal(await sha256File(rerun.json.rootfsPath), expectedRootfs);
    assert.deepEqual(await readdir(join(home, 'tmp')), []);
    assert.deepEqual(await hostLeftoversOf(home), [], 'no process, mount or loop device of the home');
    rows.push({
      point,
      via: 'registry',
      visible: seen.length ? `${visible}; ls: whole rootfs, ${seen.map((s) => s.source).join('/')}` : visible,
      earlierVerify: 'rootfs sha256 ok',
      reconciled: 'no partial, tmp, pin or lock',
      rerun: 'ok, same rootfs sha256',
    });
  });
}

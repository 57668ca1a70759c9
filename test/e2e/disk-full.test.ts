import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import { isEmbersError } from '../../src/errors.js';
import type { EmbersNode } from '../../src/node/node.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { startPeerServer } from '../../src/snapshot/peer-server.js';
import { S3SnapshotStore } from '../../src/snapshot/s3-store.js';
import { run } from '../../src/util/exec.js';
import { filesBelow } from '../helpers/leaks.js';
import { openTestNode } from '../helpers/node.js';
import { startS3Server } from '../helpers/s3-server.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const MiB = 1024 * 1024;

/**
 * A small ext4 filesystem on a loop device (`mount -o loop`: the loop device detaches when
 * the filesystem is unmounted), mounted for the test and released after it.
 */
async function smallFilesystem(
  t: TestContext,
  sizeMiB: number,
): Promise<{ root: string; free(): Promise<number>; fill(leaveBytes: number): Promise<void> }> {
  const work = await mkdtemp(join(tmpdir(), 'embers-full-'));
  const image = join(work, 'fs.img');
  const root = join(work, 'mnt');
  await mkdir(root);
  await run('truncate', ['-s', `${sizeMiB}M`, image]);
  await run('mkfs.ext4', ['-q', '-F', '-m', '0', image]);
  await run('mount', ['-o', 'loop', image, root]);
  t.after(async () => {
    await run('umount', [root]);
    await rm(work, { recursive: true, force: true });
  });
  const free = async () => {
    const s = await statfs(root);
    return s.bavail * s.bsize;
  };
  let ballasts = 0;
  return {
    root,
    free,
    /** Takes space (a ballast file outside the home) until `leaveBytes` are free. */
    async fill(leaveBytes: number) {
      const take = (await free()) - leaveBytes;
      if (take > MiB)
        await run('fallocate', ['-l', String(Math.floor(take / 4096) * 4096), join(root, `ballast-${ballasts++}`)]);
    },
  };
}

/** What of the snapshot store is not a published snapshot (staging dirs, trash, transfer work). */
async function storeLeftovers(node: EmbersNode): Promise<string[]> {
  const dir = node.snapshots.store.dir;
  const out: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name === '.transfers')
      out.push(
        ...(await filesBelow(join(dir, name))).filter((f) => !f.endsWith('.lock')).map((f) => `.transfers/${f}`),
      );
    else if (name.startsWith('.')) out.push(name);
  }
  return out;
}

/** The space test: an EMB_NO_SPACE that says what to free. */
function noSpace(what: RegExp, log?: (line: string) => void) {
  return (err: unknown) => {
    log?.(`refused: ${String((err as { code?: string }).code)}: ${String((err as Error).message)}`);
    assert.ok(
      isEmbersError(err, 'EMB_NO_SPACE'),
      `expected EMB_NO_SPACE, got ${String((err as { code?: string }).code)}: ${String(err)}`,
    );
    assert.match(err.message, what);
    assert.match(err.message, /no space left on the filesystem of|MiB are free/);
    assert.match(err.hint, /`embers snapshot rm ID`/);
    assert.match(err.hint, /`embers image gc`/);
    return true;
  };
}

test('a home on a full filesystem: snapshot create and snapshot pull fail with EMB_NO_SPACE, publish nothing partial, and give the space back', async (t) => {
  const fs = await smallFilesystem(t, 400);
  const s3 = await startS3Server();
  t.after(() => s3.dispose());
  const image = await buildTestFunctionImage(join(fs.root, 'fn'));
  const c = await openTestNode({ home: join(fs.root, 'home'), snapshots: 'remote', s3: s3.storeOptions() });
  try {
    const node = c.node;
    await node.run({ image, vcpus: 1, memoryMiB: 128, port: 8080, env: [] }, { name: 'fill' });
    await node.invoke('fill', { path: '/cgi-bin/write?name=a.bin&size=300000&seed=full&sync=1' });

    // create until the filesystem is full (the instance keeps running between creates)
    const made: string[] = [];
    let refused: unknown;
    for (let i = 0; i < 12 && !refused; i++) {
      const free = await fs.free();
      try {
        made.push((await node.snapshots.create('fill')).manifest.id);
        t.diagnostic(`create ${i + 1} took ${((free - (await fs.free())) / MiB).toFixed(1)} MiB`);
      } catch (err) {
        refused = err;
        const after = await fs.free();
        t.diagnostic(
          `create ${i + 1} refused with ${(free / MiB).toFixed(1)} MiB free; ${(after / MiB).toFixed(1)} MiB free after: ${String(err)}`,
        );
        assert.ok(after >= free - MiB, `the failed create gave its space back (${free} free before, ${after} after)`);
      }
    }
    assert.ok(refused, 'the filesystem filled up');
    noSpace(/^snapshot create of fill (failed|needs about \d+\.\d MiB)/)(refused);
    assert.ok(made.length >= 2, `at least two snapshots fitted (${made.length})`);
    // nothing partial: the store lists exactly the snapshots made, each whole and verified
    assert.deepEqual((await node.snapshots.store.list()).map((m) => m.id).sort(), [...made].sort());
    for (const id of made) await node.snapshots.store.verify(await node.snapshots.store.get(id));
    assert.deepEqual(await storeLeftovers(node), []);
    assert.deepEqual(await filesBelow(node.config.paths.tmp), []);
    // the instance survived the failed create (it was paused for it, and resumed)
    assert.equal((await node.invoke('fill', { path: '/' })).body.trim(), 'hello from embers');
    await node.stop('fill');

    // make room: remove every local copy (all were uploaded), then pull one back to measure it
    for (const id of made) await node.snapshots.remove(id);
    assert.deepEqual(await node.snapshots.store.list(), []);
    const beforePull = await fs.free();
    await node.snapshots.pull(made[0]);
    const perPull = beforePull - (await fs.free());
    await fs.fill(Math.floor(perPull / 2));
    const free = await fs.free();
    await assert.rejects(
      node.snapshots.pull(made[1]),
      noSpace(new RegExp(`^pulling snapshot ${made[1]} from s3://`), (l) => t.diagnostic(l)),
    );
    assert.ok((await fs.free()) >= free - MiB, 'the failed pull gave its space back (the partial download is gone)');
    assert.deepEqual(
      (await node.snapshots.store.list()).map((m) => m.id),
      [made[0]],
      'only the whole snapshot is listed',
    );
    assert.deepEqual(await storeLeftovers(node), []);
    // the same from a peer (whose store holds the snapshot, on the big filesystem)
    const source = new LocalSnapshotStore(join(tmpdir(), `embers-full-peer-${process.pid}`));
    await new S3SnapshotStore(s3.storeOptions()).pull(source, made[1]);
    const token = 'a-peer-token-of-16-chars-or-more';
    const peer = await startPeerServer({ store: source, token });
    try {
      await assert.rejects(
        node.snapshots.pull(made[1], { kind: 'peer', url: peer.url, token }),
        noSpace(new RegExp(`^pulling snapshot ${made[1]} from peer ${peer.url.replace(/[.]/g, '\\.')}`), (l) =>
          t.diagnostic(l),
        ),
      );
      assert.ok((await fs.free()) >= free - MiB, 'the failed peer pull gave its space back');
      assert.deepEqual(
        (await node.snapshots.store.list()).map((m) => m.id),
        [made[0]],
      );
      assert.deepEqual(await storeLeftovers(node), []);
    } finally {
      await peer.close();
      await rm(source.dir, { recursive: true, force: true });
    }

    // once space is freed, the same pull succeeds and the snapshot verifies
    for (const name of await readdir(fs.root)) if (name.startsWith('ballast-')) await rm(join(fs.root, name));
    await node.snapshots.pull(made[1]);
    await node.snapshots.store.verify(await node.snapshots.store.get(made[1]));
  } finally {
    await c.close();
  }
});

test('image pull onto a full filesystem fails with EMB_NO_SPACE and leaves no partial rootfs', async (t) => {
  const fs = await smallFilesystem(t, 64);
  const layout = await buildTestFunctionImage(join(tmpdir(), `embers-full-layout-${process.pid}`));
  t.after(() => rm(layout, { recursive: true, force: true }));
  const c = await openTestNode({ home: join(fs.root, 'home') });
  try {
    await fs.fill(MiB);
    const free = await fs.free();
    await assert.rejects(
      c.node.images.pull(layout),
      noSpace(/^image .* failed/, (l) => t.diagnostic(l)),
    );
    assert.ok((await fs.free()) >= free - MiB / 4, 'the failed flatten gave its space back');
    assert.deepEqual(await c.node.images.list(), []);
    assert.deepEqual(await filesBelow(c.node.config.paths.tmp), []);
  } finally {
    await c.close();
  }
});

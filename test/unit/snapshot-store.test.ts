import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { parseManifest, type SnapshotManifest } from '../../src/snapshot/manifest.js';
import { TEST_META } from '../helpers/snapshots.js';

const META = TEST_META;

async function withStore(fn: (store: LocalSnapshotStore, dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'embers-store-'));
  try {
    await fn(new LocalSnapshotStore(join(dir, 'snapshots')), dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function publishOne(store: LocalSnapshotStore): Promise<SnapshotManifest> {
  const staging = await store.staging();
  await writeFile(join(staging, 'vmstate.bin'), 'state');
  await writeFile(join(staging, 'memory.bin'), Buffer.alloc(8192, 7));
  await writeFile(join(staging, 'disk.delta'), 'delta');
  return store.publish(staging, META);
}

test('local store: publish is atomic and complete; get, list, verify, remove', async () => {
  await withStore(async (store) => {
    const m = await publishOne(store);
    assert.match(m.id, /^snap-[0-9a-f]{24}$/);
    assert.deepEqual(
      m.files.map((f) => f.name),
      ['disk.delta', 'memory.bin', 'vmstate.bin'],
    );
    assert.deepEqual(await readdir(store.dir), [m.id], 'no staging dir left');
    assert.deepEqual(await store.get(m.id), m);
    assert.deepEqual(
      (await store.list()).map((x) => x.id),
      [m.id],
    );
    const stamps = await store.verify(m);
    assert.deepEqual(Object.keys(stamps).sort(), ['disk.delta', 'memory.bin', 'vmstate.bin']);
    await store.remove(m.id);
    assert.deepEqual(await readdir(store.dir), []);
    await assert.rejects(store.get(m.id), (e) => isEmbersError(e, 'EMB_SNAPSHOT_NOT_FOUND'));
  });
});

test('local store: tampering is caught even when a stamp from an earlier verification is offered', async () => {
  await withStore(async (store) => {
    const m = await publishOne(store);
    const stamps = await store.verify(m);
    await appendFile(join(store.pathOf(m.id), 'vmstate.bin'), 'x');
    await assert.rejects(
      store.verify(m, stamps),
      (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') && /vmstate\.bin/.test((e as Error).message),
    );
  });
});

test('local store: staging dirs of dead processes are reconciled away', async () => {
  await withStore(async (store) => {
    await store.staging(); // ours: alive, kept
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(store.dir, '.staging-999999999-dead'));
    await store.reconcile();
    const left = await readdir(store.dir);
    assert.equal(left.length, 1);
    assert.ok(left[0].startsWith(`.staging-${process.pid}-`));
  });
});

test('manifest: malformed, wrong-format and unsafe manifests are refused', () => {
  const good = {
    formatVersion: 1,
    id: `snap-${'1'.repeat(24)}`,
    ...META,
    files: [
      { name: 'vmstate.bin', sizeBytes: 1, sha256: 'd'.repeat(64) },
      { name: 'memory.bin', sizeBytes: 1, sha256: 'e'.repeat(64) },
    ],
  };
  assert.equal(parseManifest(JSON.stringify(good), 'x').id, good.id);
  assert.throws(
    () => parseManifest('{', 'x'),
    (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'),
  );
  assert.throws(
    () => parseManifest(JSON.stringify({ ...good, formatVersion: 2 }), 'x'),
    (e) => isEmbersError(e, 'EMB_SNAPSHOT_INCOMPATIBLE'),
  );
  assert.throws(
    () =>
      parseManifest(
        JSON.stringify({ ...good, files: [{ name: '../etc/passwd', sizeBytes: 1, sha256: 'd'.repeat(64) }] }),
        'x',
      ),
    (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'),
  );
  assert.throws(
    () => parseManifest(JSON.stringify({ ...good, files: good.files.slice(0, 1) }), 'x'),
    (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'),
  );
});

test('local store: interrupted transfers are kept for a retry, dropped after a week unused', async () => {
  await withStore(async (store) => {
    const { mkdir, utimes } = await import('node:fs/promises');
    const transfers = join(store.dir, '.transfers');
    await mkdir(join(transfers, `pull-snap-${'a'.repeat(24)}`), { recursive: true });
    await mkdir(join(transfers, `pull-snap-${'b'.repeat(24)}`), { recursive: true });
    const weekAgo = new Date(Date.now() - 8 * 24 * 3600_000);
    await utimes(join(transfers, `pull-snap-${'a'.repeat(24)}`), weekAgo, weekAgo);
    await store.reconcile();
    assert.deepEqual(await readdir(transfers), [`pull-snap-${'b'.repeat(24)}`]);
  });
});

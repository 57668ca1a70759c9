import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFile, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { WORKING_SET_DIR } from '../../src/snapshot/manifest.js';
import { WorkingSetStore, type WorkingSetManifest } from '../../src/snapshot/working-set-store.js';
import { WORKING_SET_FILES, readWorkingSetRanges, writeWorkingSet } from '../../src/memory/working-set.js';
import { makeSnapshot, MiB } from '../helpers/snapshots.js';
import { withTempDir } from '../helpers/temp-dir.js';

async function withStore(fn: (store: LocalSnapshotStore) => Promise<void>) {
  await withTempDir('ws-store', (dir) => fn(new LocalSnapshotStore(join(dir, 'snapshots'))));
}

/** A working set's metadata as this test records it: `pages` pages, in memory-file order. */
function recordedInFileOrder(pages: number): Omit<WorkingSetManifest, 'formatVersion' | 'snapshotId' | 'files'> {
  return { recordedAt: new Date().toISOString(), recorder: 'test', order: 'file', pageSize: 4096, pages };
}

const RANGES = {
  pageSize: 4096,
  ranges: [
    { firstPage: 100, pageCount: 4 },
    { firstPage: 3, pageCount: 2 },
  ],
};

test('working set store: published beside the snapshot without changing a byte of it; verified; immutable; removed with it', async () => {
  await withStore(async (store) => {
    const m = await makeSnapshot(store, { memoryBytes: 2 * MiB });
    const sets = new WorkingSetStore(store);
    const dir = store.pathOf(m.id);
    const before = new Map(
      await Promise.all((await readdir(dir)).map(async (n) => [n, await readFile(join(dir, n))] as const)),
    );
    assert.equal(await sets.get(m.id), undefined);

    const staging = await sets.staging(m.id);
    const pagesBytes = await writeWorkingSet(staging, join(dir, 'memory.bin'), RANGES);
    assert.equal(pagesBytes, 6 * 4096);
    const wm = await sets.publish(m.id, staging, recordedInFileOrder(6));
    assert.equal(wm.snapshotId, m.id);
    assert.deepEqual(wm.files.map((f) => f.name).sort(), [WORKING_SET_FILES.pages, WORKING_SET_FILES.ranges]);
    // the snapshot's own files and manifest are untouched, and it still verifies
    for (const [name, bytes] of before) assert.ok(bytes.equals(await readFile(join(dir, name))), name);
    await store.verify(await store.get(m.id));
    const { manifest } = await sets.verify(m.id);
    assert.deepEqual(manifest, wm);
    assert.deepEqual(await readWorkingSetRanges(sets.dirOf(m.id), { memoryBytes: 2 * MiB }), RANGES);
    const pages = await readFile(join(sets.dirOf(m.id), WORKING_SET_FILES.pages));
    const memory = await readFile(join(dir, 'memory.bin'));
    assert.ok(pages.subarray(0, 4 * 4096).equals(memory.subarray(100 * 4096, 104 * 4096)));
    assert.ok(pages.subarray(4 * 4096).equals(memory.subarray(3 * 4096, 5 * 4096)));

    // a second publish keeps the first (working sets are immutable)
    const again = await sets.staging(m.id);
    await writeWorkingSet(again, join(dir, 'memory.bin'), { pageSize: 4096, ranges: [{ firstPage: 0, pageCount: 1 }] });
    const kept = await sets.publish(m.id, again, recordedInFileOrder(1));
    assert.deepEqual(kept, wm);
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.startsWith('.')),
      [],
    );

    // tampering is found: a changed byte, an extra file
    await appendFile(join(sets.dirOf(m.id), WORKING_SET_FILES.pages), 'x');
    await assert.rejects(
      sets.verify(m.id),
      (err: unknown) => isEmbersError(err, 'EMB_WORKING_SET_INVALID') && /bytes/.test(err.message),
    );
    await writeFile(
      join(sets.dirOf(m.id), WORKING_SET_FILES.pages),
      pages.map((b, i) => (i === 5 ? b ^ 1 : b)),
    );
    await assert.rejects(
      sets.verify(m.id),
      (err: unknown) => isEmbersError(err, 'EMB_WORKING_SET_INVALID') && /sha256/.test(err.message),
    );
    await writeFile(join(sets.dirOf(m.id), WORKING_SET_FILES.pages), pages);
    await writeFile(join(sets.dirOf(m.id), 'extra'), 'x');
    await assert.rejects(
      sets.verify(m.id),
      (err: unknown) => isEmbersError(err, 'EMB_WORKING_SET_INVALID') && /extra/.test(err.message),
    );

    await store.remove(m.id);
    assert.equal(await sets.get(m.id).catch((e: unknown) => e), undefined);
  });
});

test('working set store: a dead process leaves a staging dir that reconcile drops; a snapshot file beside the working set is still refused', async () => {
  await withStore(async (store) => {
    const m = await makeSnapshot(store, { memoryBytes: MiB });
    const dir = store.pathOf(m.id);
    await writeFile(join(dir, '.workingset-staging-999999999-abcd'), 'left by a crash');
    await store.reconcile();
    assert.deepEqual((await readdir(dir)).sort(), ['disk.delta', 'manifest.json', 'memory.bin', 'vmstate.bin']);
    await writeFile(join(dir, `${WORKING_SET_DIR}.bin`), 'x');
    await assert.rejects(store.verify(m), (err: unknown) => isEmbersError(err, 'EMB_SNAPSHOT_CORRUPT'));
    const sets = new WorkingSetStore(store);
    await assert.rejects(sets.staging('snap-0000000000000000'), (err: unknown) =>
      isEmbersError(err, 'EMB_SNAPSHOT_NOT_FOUND'),
    );
  });
});

/**
 * Firecracker working sets through the node, with the contract tests' stand-in. A remote
 * restore that starts before the memory file has arrived (node/arriving-snapshot.ts),
 * as the node runs it on Firecracker, with the contract tests' stand-in: the node's plan
 * (startArrivingSnapshot: manifest, working set and small files verified, the memory file
 * empty), the Firecracker driver (the page server on the arriving file, a `Uffd` load), and the
 * userfaultfd harness (test/fixtures/uffd-harness.c) as the stand-in's guest memory, touching
 * pages outside the working set once resumed, each checked against the real memory file. The
 * snapshot comes from the real S3 test server and from a peer node; a chunk corrupted in the
 * store is refused, never served, and nothing is published. And recording (node/working-sets.ts):
 * the page server in record mode, the guest's first-touch order published as the working set.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, open, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig } from '../../src/config.js';
import { isEmbersError } from '../../src/errors.js';
import { chunkDigests } from '../../src/memory/chunks.js';
import { WORKING_SET_FILES, readWorkingSetRanges } from '../../src/memory/working-set.js';
import { pageServerRecord, publishRecordedWorkingSet } from '../../src/node/working-sets.js';
import { runWhileArriving, startArrivingSnapshot, type ArrivingSnapshot } from '../../src/node/arriving-snapshot.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotManifest } from '../../src/snapshot/manifest.js';
import { PeerClient } from '../../src/snapshot/peer-client.js';
import { startPeerServer } from '../../src/snapshot/peer-server.js';
import { S3SnapshotStore } from '../../src/snapshot/s3-store.js';
import type { WorkingSetSource } from '../../src/snapshot/working-set-transfer.js';
import { WorkingSetStore } from '../../src/snapshot/working-set-store.js';
import type { VmHandle } from '../../src/vmm/driver.js';
import { FirecrackerDriver } from '../../src/vmm/firecracker/driver.js';
import { ensureUffdHandler, type UffdHandlerStats } from '../../src/vmm/firecracker/uffd-handler.js';
import { pidAlive } from '../../src/vmm/process.js';
import { ensureFakeExecutable, makeSpec, setKnobs, waitForFile } from '../helpers/fake-firecracker.js';
import { startS3Server, type S3TestServer } from '../helpers/s3-server.js';
import { TEST_META, addWorkingSet } from '../helpers/snapshots.js';
import { PAGE, buildHarness, syntheticMemoryFile, syntheticWorkingSet, writeRanges } from '../helpers/uffd-harness.js';

const PAGES = 4096; // 16 MiB
const CHUNK = 1 << 20; // 16 chunks
const TOKEN = 'arriving-restore-peer-token-0123456789';
let root: string;
let fake: string;
let harness: string;
let handler: string;
let s3: S3TestServer;
let remote: S3SnapshotStore;
let source: LocalSnapshotStore;
let m: SnapshotManifest;
let original: string;
const started: number[] = [];

const needsRoot = (): string | undefined =>
  process.getuid?.() === 0 ? undefined : `needs root for userfaultfd: this process runs as uid ${process.getuid?.()}`;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'embers-arriving-'));
  fake = await ensureFakeExecutable();
  harness = await buildHarness(root);
  handler = await ensureUffdHandler(resolveConfig().cacheDir);
  // node A's snapshot: a state file from the stand-in, a memory file with data and holes and its chunk digests, a working set
  const d = driver();
  const spec = await makeSpec(root, 'src');
  const { vm } = await d.boot(spec);
  started.push(vm.pid);
  await d.pause(vm);
  const made = await d.snapshot(vm, await mkdtemp(join(root, 'made-')));
  await d.stop(vm);
  source = new LocalSnapshotStore(join(root, 'a'));
  const staging = await source.staging();
  const runs = await syntheticMemoryFile(join(staging, SNAPSHOT_FILES.memory), PAGES, 21);
  await writeFile(join(staging, SNAPSHOT_FILES.state), await readFile(made.stateFile));
  const digests = await chunkDigests(join(staging, SNAPSHOT_FILES.memory), CHUNK);
  m = await source.publish(staging, TEST_META, {
    chunks: { [SNAPSHOT_FILES.memory]: { chunkSize: CHUNK, sha256: digests } },
  });
  await addWorkingSet(source, m.id, { pageSize: PAGE, ranges: syntheticWorkingSet(runs, PAGES, 0.2, 22) });
  original = join(source.pathOf(m.id), SNAPSHOT_FILES.memory);
  s3 = await startS3Server();
  remote = new S3SnapshotStore(s3.storeOptions());
  await remote.push(source, m.id);
});

after(async () => {
  for (const pid of started) if (await pidAlive(pid)) process.kill(pid, 'SIGKILL');
  remote?.close();
  await s3?.dispose();
  await rm(root, { recursive: true, force: true });
});

function driver(): FirecrackerDriver {
  return new FirecrackerDriver({
    binary: fake,
    netns: false,
    mountNamespace: { fixedDir: join(root, 'fc') },
    sigtermGraceMs: 1000,
    clockRealtime: false,
  });
}

/**
 * The node's early restore (runWhileArriving, as SnapshotService.restoreArriving runs it) with the
 * stand-in: the plan, then the driver's restore with its page server as the launch. The guest
 * touches `order` (harness --order) once resumed.
 */
async function restoreArriving(name: string, from: WorkingSetSource, store: LocalSnapshotStore, order: string) {
  const a = (await startArrivingSnapshot({
    store,
    source: from,
    id: m.id,
    pageServerBinary: handler,
    tmpDir: join(root, 'tmp'),
  }))!;
  assert.ok(a, 'the snapshot can start early: chunk digests and a working set at the source');
  const memoryBytes = fileEntry(m, SNAPSHOT_FILES.memory)!.sizeBytes;
  assert.ok(
    a.bytesBeforeStart < memoryBytes / 2,
    `the clone starts after ${a.bytesBeforeStart} bytes, not the ${memoryBytes}-byte memory file`,
  );
  const spec = await makeSpec(root, name);
  await setKnobs(spec.dir, { uffdGuest: { harness, memoryFile: original, order } });
  const files = {
    stateFile: join(a.bundleDir, SNAPSHOT_FILES.state),
    memoryFile: join(a.bundleDir, SNAPSHOT_FILES.memory),
  };
  const stopped: VmHandle[] = [];
  const run = runWhileArriving(
    a,
    async () => {
      const { vm } = await driver().restore(spec, files, { pageServer: a.pageServer });
      started.push(vm.pid);
      return vm;
    },
    async (vm) => {
      stopped.push(vm);
      await driver().stop(vm);
    },
  );
  run.catch(() => undefined);
  // what was published at the moment the clone was up (checked in the same tick)
  const up = run.then((r) => ({ ...r, publishedWhenUp: existsSync(store.pathOf(m.id)) }));
  up.catch(() => undefined);
  return { a, spec, run: up, stopped, bytesBeforeStart: a.bytesBeforeStart };
}

async function guestResult(dir: string): Promise<{ exit: string; err: string; out: string }> {
  const exit = await waitForFile(join(dir, 'uffd-guest.exit'));
  return {
    exit,
    err: await readFile(join(dir, 'uffd-guest.err'), 'utf8'),
    out: await readFile(join(dir, 'uffd-guest.out'), 'utf8'),
  };
}

async function assertNothingLeft(store: LocalSnapshotStore, a: ArrivingSnapshot): Promise<void> {
  assert.equal(await store.has(m.id), false, 'nothing published');
  assert.deepEqual(
    (await readdir(store.dir).catch(() => [] as string[])).filter((n) => n.startsWith('.staging-')),
    [],
    'no staging left',
  );
  assert.deepEqual(await readdir(join(root, 'tmp')).catch(() => []), [], 'no scratch left');
  assert.equal(await readFile(join(a.bundleDir, SNAPSHOT_FILES.memory)).catch(() => undefined), undefined);
}

for (const via of ['s3', 'peer'] as const) {
  test(`early restore from ${via}: the clone starts from the verified working set while the memory file arrives; faults outside it get their chunks first; every page is right; then the whole file is checked and the snapshot and its working set published`, async (t) => {
    const skip = needsRoot();
    if (skip) return t.skip(skip);
    const store = new LocalSnapshotStore(join(root, `b-${via}`));
    const peer = via === 'peer' ? await startPeerServer({ store: source, token: TOKEN }) : undefined;
    try {
      const from =
        via === 's3' ? remote.source : new PeerClient({ url: `http://127.0.0.1:${peer!.port}`, token: TOKEN }).source;
      const { spec, run, bytesBeforeStart } = await restoreArriving(`clone-${via}`, from, store, 'random:5:300');
      const guest = await guestResult(spec.dir);
      assert.equal(guest.exit, '0', guest.err);
      const report = JSON.parse(guest.out) as { touched: number; checked: number };
      assert.equal(report.checked, report.touched, 'every page the guest touched was the memory file’s');
      const up = await run;
      assert.equal(up.publishedWhenUp, false, 'the clone is handed back before the memory file has arrived');
      const done = await up.arrived;
      const vm = up.clone;
      assert.ok(done.requested.length > 0, 'faults outside the working set asked for their chunks');
      t.diagnostic(
        `${via}: the clone could start after ${bytesBeforeStart} bytes (memory file ${fileEntry(m, SNAPSHOT_FILES.memory)!.sizeBytes} bytes); ` +
          `${new Set(done.requested).size} chunks asked for by faults; ${done.bytes} bytes fetched in all`,
      );
      // published whole, and it verifies (digests and chunk digests) like any snapshot
      assert.deepEqual(await store.get(m.id), m);
      await store.verify(m);
      assert.equal(
        (await new WorkingSetStore(store).verify(m.id)).manifest.pages,
        (await new WorkingSetStore(source).get(m.id))!.pages,
      );
      await driver().stop(vm);
      const stats = JSON.parse(await waitForFile(join(spec.dir, 'uffd-stats.json'))) as UffdHandlerStats;
      assert.equal(stats.mode, 'prefetch');
      assert.equal(stats.chunks_verified, 16, 'every chunk verified by the page server');
      assert.equal(stats.bad_chunk, -1);
      assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no scratch left');
    } finally {
      await peer?.close();
    }
  });
}

test('early restore from S3 with a chunk corrupted in the store: refused by the page server, never served; the guest sees an error; EMB_SNAPSHOT_CORRUPT and nothing published', async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const bad = 9;
  // one byte of chunk 9 flipped in the object the store serves (its recorded sha256 metadata unchanged)
  const object = s3.objectPath(`snapshots/${m.id}/${SNAPSHOT_FILES.memory}`);
  const fh = await open(object, 'r+');
  const at = bad * CHUNK + 777 * 8;
  const b = Buffer.alloc(1);
  await fh.read(b, 0, 1, at);
  b[0] ^= 0xff;
  await fh.write(b, 0, 1, at);
  try {
    // the guest touches pages of the corrupted chunk
    const order = join(root, 'bad-chunk.ranges');
    await writeRanges(order, [{ firstPage: (bad * CHUNK) / PAGE, pageCount: CHUNK / PAGE }]);
    const store = new LocalSnapshotStore(join(root, 'b-corrupt'));
    const { a, spec, run, stopped } = await restoreArriving('clone-corrupt', remote.source, store, order);
    const err = await run
      .then((up) => up.arrived)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    const statsText = await waitForFile(join(spec.dir, 'uffd-stats.json'));
    const guest = await guestResult(spec.dir);
    assert.ok(
      isEmbersError(err, 'EMB_SNAPSHOT_CORRUPT') && new RegExp(`chunk ${bad}`).test(err.message),
      `expected EMB_SNAPSHOT_CORRUPT naming chunk ${bad}, got ${String(err)}; page server: ${statsText}; guest: ${guest.exit} ${guest.err}`,
    );
    assert.equal(guest.exit, '2', `the guest must see an error, never wrong data (exit 1): ${guest.err}`);
    const stats = JSON.parse(statsText) as UffdHandlerStats;
    assert.equal(stats.exit, 'chunk-corrupt');
    assert.equal(stats.bad_chunk, bad);
    assert.equal(stopped.length, 1, 'the clone was stopped');
    assert.equal(await pidAlive(stopped[0]!.pid), false);
    await assertNothingLeft(store, a);
  } finally {
    b[0] ^= 0xff;
    await fh.write(b, 0, 1, at);
    await fh.close();
  }
});

test("recording on Firecracker as the node does it (pageServerRecord, publishRecordedWorkingSet): the page server in record mode logs the guest's first touches; the working set published is that order, with the memory file's bytes", async (t) => {
  const skip = needsRoot();
  if (skip) return t.skip(skip);
  const store = new LocalSnapshotStore(join(root, 'rec'));
  const staging = await store.staging();
  await copyFile(original, join(staging, SNAPSHOT_FILES.memory));
  await copyFile(join(source.pathOf(m.id), SNAPSHOT_FILES.state), join(staging, SNAPSHOT_FILES.state));
  const snap = await store.publish(staging, TEST_META);
  const memoryFile = join(store.pathOf(snap.id), SNAPSHOT_FILES.memory);
  // the guest's touches, out of file order, from one thread (so the first-touch order is exactly this)
  const touched = [
    { firstPage: 300, pageCount: 5 },
    { firstPage: 10, pageCount: 3 },
    { firstPage: 2000, pageCount: 1 },
    { firstPage: 40, pageCount: 7 },
  ];
  const order = join(root, 'touch.ranges');
  await writeRanges(order, touched);
  const recordTo = join(root, 'recorded.ranges');
  const launch = await pageServerRecord(recordTo, resolveConfig().cacheDir);
  assert.equal(launch.via, 'page-server');
  if (launch.via !== 'page-server') return;
  const spec = await makeSpec(root, 'recorder');
  await setKnobs(spec.dir, { uffdGuest: { harness, memoryFile, order, threads: 1 } });
  const { vm } = await driver().restore(
    spec,
    { stateFile: join(store.pathOf(snap.id), SNAPSHOT_FILES.state), memoryFile },
    { pageServer: launch.pageServer },
  );
  started.push(vm.pid);
  const guest = await guestResult(spec.dir);
  assert.equal(guest.exit, '0', guest.err);
  await driver().stop(vm); // the page server writes the order when the VMM exits
  const ws = await publishRecordedWorkingSet(store, snap, recordTo);
  assert.equal(ws.order, 'first-touch');
  assert.equal(ws.recorder, 'uffd-record');
  assert.equal(ws.pages, 16);
  const sets = new WorkingSetStore(store);
  await sets.verify(snap.id);
  const dir = sets.dirOf(snap.id);
  assert.deepEqual(
    (await readWorkingSetRanges(dir)).ranges,
    touched,
    'the ranges are the order the guest touched them',
  );
  const memory = await readFile(memoryFile);
  const expected = Buffer.concat(
    touched.map((r) => memory.subarray(r.firstPage * PAGE, (r.firstPage + r.pageCount) * PAGE)),
  );
  assert.ok(
    (await readFile(join(dir, WORKING_SET_FILES.pages))).equals(expected),
    "the pages file holds those pages' bytes, in that order",
  );
  const stats = JSON.parse(await waitForFile(join(spec.dir, 'uffd-stats.json'))) as UffdHandlerStats;
  assert.equal(stats.mode, 'record');
  assert.equal(stats.recorded, 16);
  await assert.rejects(readFile(recordTo), 'the record file is removed once published');
});

/**
 * The daemon's early start of a cold start from a remote snapshot (issue 13 item 4): the route
 * (coldStartRoute), what the search finds out for it (SnapshotFinder, against a real peer
 * server), and the bookkeeping of RevisionSnapshots around an arrival: one download per
 * snapshot, a concurrent cold start that waits for the publication and never reads the
 * arriving data, a success that leaves the snapshot here and prepared, a failure that leaves
 * nothing published nor prepared.
 *
 * The one stand-in is the node's SnapshotService.restoreEarly (a Firecracker clone started on the
 * arriving memory file): this machine cannot run a Firecracker guest, and that restore is tested
 * against the page server and the real S3 and peer transfers in test/integration/arriving-restore.
 * Its download's end is played here by the test: the snapshot published into the real local store
 * (as ArrivingSnapshot.finish does) or a failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chunkDigests } from '../../src/memory/chunks.js';
import { BackgroundTasks } from '../../src/node/background-tasks.js';
import { functionOfSnapshot } from '../../src/node/function-spec.js';
import { FUNCTION_DEFAULTS, snapshotKey, type FunctionConfig } from '../../src/node/functions.js';
import type { FunctionState, KeySnapshot, Lease } from '../../src/node/lifecycle-model.js';
import { InstanceScheduler } from '../../src/node/scheduler.js';
import { exists } from '../../src/util/fs.js';
import { NodeMetrics } from '../../src/node/metrics.js';
import type { EmbersNode } from '../../src/node/node.js';
import { OwnedMarks } from '../../src/node/owned-marks.js';
import { RemoteSnapshots, type SnapshotSource } from '../../src/node/remote.js';
import { RevisionSnapshots, coldStartRoute, type ColdStartFacts } from '../../src/node/revision-snapshots.js';
import { SnapshotFinder } from '../../src/node/snapshot-finder.js';
import type { EarlyRestore, RestoreOptions } from '../../src/node/snapshot-types.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { SNAPSHOT_FILES, type SnapshotManifest } from '../../src/snapshot/manifest.js';
import { startPeerServer } from '../../src/snapshot/peer-server.js';
import { TEST_META, addWorkingSet, tempDir } from '../helpers/snapshots.js';

const TOKEN = 'early-cold-start-peer-token-0123456789';
const S3: SnapshotSource = { kind: 's3' };
const PEER: SnapshotSource = { kind: 'peer', url: 'http://127.0.0.1:1', token: TOKEN };
const EARLY_FACTS: ColdStartFacts = {
  vmm: 'firecracker',
  sources: [S3],
  found: { memoryChunked: true, workingSet: true },
  underWay: false,
};

test('coldStartRoute: early only on Firecracker, for a remote snapshot not already on its way, with chunk digests and a working set', () => {
  assert.deepEqual(coldStartRoute(EARLY_FACTS), { route: 'early', source: S3 });
  assert.deepEqual(coldStartRoute({ ...EARLY_FACTS, sources: [PEER, S3] }), { route: 'early', source: PEER });
  const whole = (f: Partial<ColdStartFacts>): string => {
    const r = coldStartRoute({ ...EARLY_FACTS, ...f });
    assert.equal(r.route, 'whole', JSON.stringify(f));
    return r.route === 'whole' ? r.why : '';
  };
  assert.match(whole({ vmm: 'qemu' }), /qemu restores from a whole memory file/);
  assert.match(whole({ sources: undefined }), /here/);
  assert.match(whole({ sources: [] }), /here/);
  assert.match(whole({ sources: [{ kind: 'local' }] }), /here/);
  assert.match(whole({ underWay: true }), /already on its way/);
  assert.match(whole({ found: undefined }), /no chunk digests/);
  assert.match(whole({ found: { memoryChunked: false, workingSet: true } }), /no chunk digests/);
  assert.match(whole({ found: { memoryChunked: true, workingSet: false } }), /the S3 store has no working set/);
  assert.match(
    whole({ sources: [PEER], found: { memoryChunked: true, workingSet: false } }),
    /peer http:\/\/127\.0\.0\.1:1 has no working set/,
  );
});

/** Publishes a small snapshot into `store`, with its memory file's chunk digests when `chunked`. */
async function publishSnapshot(store: LocalSnapshotStore, seed: string, chunked: boolean): Promise<SnapshotManifest> {
  const staging = await store.staging();
  const memory = Buffer.alloc(256 * 1024, seed);
  await writeFile(join(staging, SNAPSHOT_FILES.memory), memory);
  await writeFile(join(staging, SNAPSHOT_FILES.state), `state of ${seed}`);
  await writeFile(join(staging, 'disk.delta'), `delta of ${seed}`);
  const chunks = chunked
    ? {
        [SNAPSHOT_FILES.memory]: {
          chunkSize: 64 * 1024,
          sha256: await chunkDigests(join(staging, SNAPSHOT_FILES.memory), 64 * 1024),
        },
      }
    : undefined;
  // one key per test snapshot: its own function image
  const meta = {
    ...TEST_META,
    createdAt: new Date(Date.now()).toISOString(),
    function: { ...TEST_META.function, image: `/img-${seed}` },
  };
  return store.publish(staging, meta, chunks ? { chunks } : {});
}

const keyOf = (m: SnapshotManifest): string => snapshotKey(m.image.manifestDigest, functionOfSnapshot(m));

test('SnapshotFinder: a snapshot found on a peer comes with whether its manifest gives chunk digests and whether the peer has its working set', async () => {
  const dir = await tempDir('early-finder');
  const a = new LocalSnapshotStore(join(dir.path, 'a'));
  const peer = await startPeerServer({ store: a, token: TOKEN });
  try {
    const finder = new SnapshotFinder({
      remote: new RemoteSnapshots({ snapshots: 'local' }),
      useStore: false,
      peers: [{ url: `http://127.0.0.1:${peer.port}`, token: TOKEN }],
    });
    const plain = await publishSnapshot(a, 'plain', false);
    const chunked = await publishSnapshot(a, 'chunked', true);
    const full = await publishSnapshot(a, 'full', true);
    await addWorkingSet(a, full.id, { pageSize: 4096, ranges: [{ firstPage: 3, pageCount: 4 }] });
    const found = async (m: SnapshotManifest) => {
      const f = await finder.find(keyOf(m));
      assert.equal(f?.id, m.id);
      return { memoryChunked: f!.memoryChunked, workingSet: f!.workingSet };
    };
    assert.deepEqual(await found(plain), { memoryChunked: false, workingSet: false });
    assert.deepEqual(await found(chunked), { memoryChunked: true, workingSet: false });
    assert.deepEqual(await found(full), { memoryChunked: true, workingSet: true });
  } finally {
    await peer.close();
    await dir.dispose();
  }
});

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/**
 * RevisionSnapshots on a node whose SnapshotService.restoreEarly is played by the test (see the
 * module comment): every call is recorded and answered with a clone "up" and an arrival the test settles.
 */
async function bookkeeping(dir: string) {
  const store = new LocalSnapshotStore(join(dir, 'snapshots'));
  const early: { id: string; opts: RestoreOptions; arrival: Deferred<Awaited<EarlyRestore['arrived']>> }[] = [];
  /** Each preparation of a restored disk, and whether the snapshot was here (published, verified) then. */
  const disks: { id: string; here: boolean }[] = [];
  const logs: string[] = [];
  /** Errors the next early starts fail with before their clone is up. */
  const failures: Error[] = [];
  const node = {
    driver: { kind: 'firecracker' },
    remote: new RemoteSnapshots({ snapshots: 'local' }),
    config: { home: dir },
    snapshots: {
      store,
      async restoreEarly(id: string, opts: RestoreOptions): Promise<EarlyRestore> {
        const failure = failures.shift();
        if (failure) throw failure;
        const arrival = deferred<Awaited<EarlyRestore['arrived']>>();
        early.push({ id, opts, arrival });
        return { result: { clones: [] } as unknown as EarlyRestore['result'], arrived: arrival.promise };
      },
      async restoredDisk(m: SnapshotManifest) {
        disks.push({ id: m.id, here: await store.has(m.id) });
        return { path: join(dir, 'disk'), verified: true, method: 'copy' };
      },
    },
  } as unknown as EmbersNode;
  const log = (_level: string, msg: string) => void logs.push(msg);
  const metrics = new NodeMetrics({ instances: () => [], queued: () => [], freeSlots: async () => 0 });
  const snapshots = new RevisionSnapshots({
    node,
    metrics,
    log,
    owned: new OwnedMarks(node, log),
    background: new BackgroundTasks(),
    peers: [],
    recordWorkingSets: false,
    closing: () => false,
  });
  return { store, snapshots, early, disks, logs, metrics, failures };
}

/** Publishes `m` (from `from`) into `store` the way an arrival ends: verified files, atomic rename. */
async function publishArrived(from: LocalSnapshotStore, store: LocalSnapshotStore, m: SnapshotManifest): Promise<void> {
  const staging = await store.staging();
  for (const f of m.files) await copyFile(join(from.pathOf(m.id), f.name), join(staging, f.name));
  await store.publishFetched(staging, m);
}

const remoteSnap = (m: SnapshotManifest, sources: SnapshotSource[]): KeySnapshot => ({
  state: 'ready',
  id: m.id,
  sources,
  found: { memoryChunked: true, workingSet: true },
});

/** Whether `p` has settled after the event loop has run everything it could. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((r) => setImmediate(r));
  return done;
}

test('an early start that succeeds: one download for concurrent cold starts, the second waits for the publication, then the snapshot is here and prepared', async () => {
  const dir = await tempDir('early-ok');
  try {
    const b = await bookkeeping(dir.path);
    const a = new LocalSnapshotStore(join(dir.path, 'a'));
    const m = await publishSnapshot(a, 'ok', true);
    const snap = Object.assign(b.snapshots.of(keyOf(m)), remoteSnap(m, [S3]));
    const stop = async () => undefined;

    // two cold starts at once (one pump): the first starts early, the second sees it (no second download)
    const [first, second] = await Promise.all([
      b.snapshots.startEarly(m.id, snap, 'fn-1', stop),
      b.snapshots.startEarly(m.id, snap, 'fn-2', stop),
    ]);
    assert.ok(first, 'the first cold start starts early');
    assert.equal(second, undefined, 'the second restores as before: it waits for the snapshot in prepare');
    assert.deepEqual(
      b.early.map((e) => [e.id, e.opts.names, e.opts.source]),
      [[m.id, ['fn-1'], S3]],
      'one download',
    );
    assert.equal(b.snapshots.isArriving(m.id), true);
    const prep = b.snapshots.prepare(m.id, snap.sources);
    assert.equal(await settled(prep), false, 'the second cold start waits for the publication');
    assert.deepEqual(b.disks, [], 'nothing of the arriving snapshot is read meanwhile');

    await publishArrived(a, b.store, m);
    b.early[0].arrival.resolve({ manifest: m, bytes: 300_000, requested: [1], ms: 5 });
    await first.arrived;
    assert.equal(b.snapshots.isArriving(m.id), false);
    assert.deepEqual(await prep, { fetchedBytes: 0, ms: 0 }, 'prepared by the arrival: nothing to fetch');
    assert.deepEqual(b.disks, [], 'its restored disk was made for the early clone: it is not made again');
    assert.equal(snap.sources, undefined, 'the snapshot is here now');
    assert.match(b.logs.join('\n'), new RegExp(`snapshot ${m.id} arrived whole and verified`));
    assert.match(
      await b.metrics.registry.metrics(),
      /embers_snapshot_transfer_bytes_total\{direction="download"\} 300000/,
    );
    // later cold starts restore it from here
    assert.equal(await b.snapshots.startEarly(m.id, snap, 'fn-3', stop), undefined);
    assert.equal(b.early.length, 1);
  } finally {
    await dir.dispose();
  }
});

test('an early start that fails: nothing published nor prepared; the next cold start may start early again', async () => {
  const dir = await tempDir('early-fail');
  try {
    const b = await bookkeeping(dir.path);
    const a = new LocalSnapshotStore(join(dir.path, 'a'));
    const m = await publishSnapshot(a, 'fail', true);
    const snap = Object.assign(b.snapshots.of(keyOf(m)), remoteSnap(m, [S3]));
    const first = await b.snapshots.startEarly(m.id, snap, 'fn-1', async () => undefined);
    assert.ok(first);
    b.early[0].arrival.reject(new Error(`chunk 2 of ${m.id} does not match its sha256`));
    await assert.rejects(first.arrived, /chunk 2 .* does not match its sha256/);
    assert.equal(b.snapshots.isArriving(m.id), false);
    assert.equal(await b.store.has(m.id), false, 'nothing published');
    assert.deepEqual(snap.sources, [S3], 'still a remote snapshot');
    assert.doesNotMatch(
      await b.metrics.registry.metrics(),
      /embers_snapshot_transfer_bytes_total\{direction="download"\} [1-9]/,
    );
    // not prepared: the next cold start is routed as before (early again, here)
    const again = await b.snapshots.startEarly(m.id, snap, 'fn-2', async () => undefined);
    assert.ok(again, 'not marked prepared: the next cold start starts early again');
    assert.equal(b.early.length, 2);
    b.early[1].arrival.reject(new Error('cancelled'));
    await assert.rejects(again.arrived);
  } finally {
    await dir.dispose();
  }
});

test('an early start that fails before its clone is up (source unreachable, launch failed) goes the whole way instead, logged', async () => {
  const dir = await tempDir('early-before-up');
  try {
    const b = await bookkeeping(dir.path);
    const a = new LocalSnapshotStore(join(dir.path, 'a'));
    const m = await publishSnapshot(a, 'before-up', true);
    const snap = Object.assign(b.snapshots.of(keyOf(m)), remoteSnap(m, [S3]));
    b.failures.push(new Error('the S3 store is unreachable'));
    assert.equal(await b.snapshots.startEarly(m.id, snap, 'fn-1', async () => undefined), undefined);
    assert.equal(b.snapshots.isArriving(m.id), false, 'nothing arriving: a cold start prepares it as before');
    assert.match(
      b.logs.join('\n'),
      new RegExp(`early start of snapshot ${m.id} from the S3 store failed: .*unreachable; fetching it whole`),
    );
    assert.equal(await b.store.has(m.id), false);
  } finally {
    await dir.dispose();
  }
});

test('a cold start waiting on an arrival that fails fetches the snapshot whole, verified, as before: its disk is made only from the published snapshot', async () => {
  const dir = await tempDir('early-fallback');
  const a = new LocalSnapshotStore(join(dir.path, 'a'));
  const peer = await startPeerServer({ store: a, token: TOKEN });
  try {
    const b = await bookkeeping(dir.path);
    const m = await publishSnapshot(a, 'fallback', true);
    const source: SnapshotSource = { kind: 'peer', url: `http://127.0.0.1:${peer.port}`, token: TOKEN };
    const snap = Object.assign(b.snapshots.of(keyOf(m)), remoteSnap(m, [source]));
    const first = await b.snapshots.startEarly(m.id, snap, 'fn-1', async () => undefined);
    assert.ok(first);
    const prep = b.snapshots.prepare(m.id, snap.sources);
    assert.equal(await settled(prep), false);
    b.early[0].arrival.reject(new Error('the S3 store went away'));
    await assert.rejects(first.arrived, /went away/);
    const r = await prep;
    assert.ok(r.fetchedBytes >= 256 * 1024, `fetched whole (${r.fetchedBytes} bytes)`);
    assert.deepEqual(b.disks, [{ id: m.id, here: true }], 'the disk is made once the snapshot is here, verified');
    await b.store.verify(await b.store.get(m.id));
    assert.deepEqual(
      (await readdir(b.store.dir)).filter((n) => n.startsWith('.staging-')),
      [],
      'no staging left',
    );
    assert.equal(b.early.length, 1, 'one early start');
  } finally {
    await peer.close();
    await dir.dispose();
  }
});

/**
 * The scheduler on a node whose restoreEarly is played by the test, as above; its `stop` callback
 * is what runWhileArriving calls before the arrival rejects. Nothing else of the node is reached
 * on these paths but its stop (recorded).
 */
async function schedulerOn(dir: string, idleTimeoutSeconds = 600) {
  const early: {
    name: string;
    stop: (name: string) => Promise<void>;
    arrival: Deferred<Awaited<EarlyRestore['arrived']>>;
  }[] = [];
  const stopped: string[] = [];
  const logs: string[] = [];
  const node = {
    driver: { kind: 'firecracker' },
    remote: new RemoteSnapshots({ snapshots: 'local' }),
    config: { home: dir },
    pool: { stats: async () => ({ free: 1 }) },
    async stop(name: string) {
      stopped.push(name);
    },
    snapshots: {
      store: new LocalSnapshotStore(join(dir, 'snapshots')),
      async restoreEarly(
        _id: string,
        opts: RestoreOptions,
        stop: (name: string) => Promise<void>,
      ): Promise<EarlyRestore> {
        const arrival = deferred<Awaited<EarlyRestore['arrived']>>();
        early.push({ name: opts.names![0], stop, arrival });
        const record = { name: opts.names![0], cloneIp: '127.0.0.1', timings: { phases: { loadMs: 1 } } };
        return {
          result: {
            clones: [{ record, diskVerified: true }],
            prepareMs: 2,
            earlyStart: { startMs: 3, bytesBeforeStart: 1000, requestedChunks: [] },
          } as unknown as EarlyRestore['result'],
          arrived: arrival.promise,
        };
      },
    },
  } as unknown as EmbersNode;
  const s = new InstanceScheduler({
    node,
    log: (level, msg) => void logs.push(`${level} ${msg}`),
    lookupTtlMs: 10_000,
    peers: [],
    recordWorkingSets: false,
  });
  const spec: FunctionConfig = {
    ...FUNCTION_DEFAULTS,
    image: '/img',
    env: [],
    snapshots: 'remote',
    port: 1, // nothing listens: the spare connection the scheduler opens to a warm instance is refused
    idleTimeoutSeconds,
  };
  const f: FunctionState = {
    record: {
      name: 'fn',
      spec,
      revision: { id: 'rev-0123456789abcdef', manifestDigest: TEST_META.image.manifestDigest, createdAt: '' },
      createdAt: '',
      updatedAt: '',
    },
    key: 'key-of-fn',
    queue: [],
    draining: false,
  };
  s.fns.set('fn', f);
  const snap = Object.assign(s.snapshots.of(f.key), {
    state: 'ready',
    id: 'snap-0123456789abcdef',
    sources: [S3],
    found: { memoryChunked: true, workingSet: true },
  } satisfies KeySnapshot);
  /** A request: queued, then the scheduler serves it (a cold start). */
  const invoke = (): Promise<Lease> =>
    new Promise<Lease>((resolve, reject) => {
      f.queue.push({ enqueuedAt: performance.now(), resolve, reject, timer: setTimeout(() => undefined, 0) });
      s.pump(f);
    });
  const owned = (name: string) => exists(join(dir, 'daemon', 'owned', name));
  return { s, f, snap, early, stopped, logs, invoke, owned };
}

test('scheduler: the cold start is served as soon as the early clone is up; a download that fails then stops the instance through startFailed: the snapshot is not used again', async () => {
  const dir = await tempDir('early-sched-fail');
  const d = await schedulerOn(dir.path);
  try {
    const lease = await d.invoke();
    assert.equal(lease.start, 'restore');
    const inst = d.s.instancesByName.get(lease.instance.name)!;
    assert.equal(inst.state, 'ready', 'ready while its snapshot is still arriving');
    assert.equal(inst.arriving, true);
    assert.deepEqual(
      d.early.map((e) => e.name),
      [inst.name],
    );
    assert.equal(await d.owned(inst.name), true);
    // runWhileArriving on a chunk that fails its digest: the clone is stopped, then the arrival rejects
    await d.early[0].stop(inst.name);
    d.early[0].arrival.reject(new Error('chunk 3 of memory.bin does not match its sha256: the page server refused it'));
    lease.release(false);
    await d.s.background.settle();
    assert.deepEqual(d.stopped, [inst.name], 'stopped once');
    assert.equal(d.s.instancesByName.has(inst.name), false);
    assert.equal(await d.owned(inst.name), false);
    assert.equal(d.snap.state, 'failed');
    assert.match(d.snap.error ?? '', /chunk 3 of memory\.bin does not match its sha256/);
    assert.match(d.logs.join('\n'), new RegExp(`restore of ${inst.name} failed: .*chunk 3`));
    assert.equal(d.s.snapshots.isArriving(d.snap.id!), false);
  } finally {
    d.s.spares.closeAll();
    await dir.dispose();
  }
});

test('scheduler: an instance stopped while its snapshot arrives (drain, shutdown) ends the download: stopped once, logged, the snapshot still usable', async () => {
  const dir = await tempDir('early-sched-stop');
  const d = await schedulerOn(dir.path);
  try {
    const lease = await d.invoke();
    const inst = d.s.instancesByName.get(lease.instance.name)!;
    lease.release(true);
    d.s.stopInstance(inst, 'drain');
    // its page server goes with the VM: the download ends, runWhileArriving calls stop, then rejects
    await d.early[0].stop(inst.name);
    d.early[0].arrival.reject(new Error('the page server went away after verifying 3 of 16 chunks'));
    await d.s.background.settle();
    assert.deepEqual(d.stopped, [inst.name], 'stopped once, by the scheduler');
    assert.equal(d.s.instancesByName.has(inst.name), false);
    assert.equal(d.snap.state, 'ready', 'the snapshot is still the one to restore');
    assert.deepEqual(d.snap.sources, [S3]);
    assert.match(d.logs.join('\n'), /download of snapshot .* ended with .*stopped before it was complete/);
  } finally {
    d.s.spares.closeAll();
    await dir.dispose();
  }
});

test('scheduler: an idle instance whose snapshot is still arriving is kept until it has arrived, then scales to zero', async () => {
  const dir = await tempDir('early-sched-idle');
  const d = await schedulerOn(dir.path, 0);
  try {
    const lease = await d.invoke();
    const inst = d.s.instancesByName.get(lease.instance.name)!;
    lease.release(true);
    // its idle timeout (0 s) passes many times over
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(inst.state, 'ready', 'not stopped while its snapshot arrives');
    assert.deepEqual(d.stopped, []);
    d.early[0].arrival.resolve({ manifest: {} as SnapshotManifest, bytes: 1, requested: [], ms: 1 });
    await waitUntil(() => d.stopped.includes(inst.name));
    assert.equal(inst.arriving, false);
    await d.s.background.settle();
    assert.equal(d.snap.state, 'ready');
  } finally {
    d.s.spares.closeAll();
    await dir.dispose();
  }
});

async function waitUntil(check: () => boolean): Promise<void> {
  for (let i = 0; !check(); i++) {
    if (i > 1000) throw new Error('the condition did not hold within 1000 turns of 10 ms');
    await new Promise((r) => setTimeout(r, 10));
  }
}

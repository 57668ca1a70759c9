import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { EmbersError } from '../../src/errors.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { MANIFEST_NAME } from '../../src/snapshot/manifest.js';
import { S3SnapshotStore } from '../../src/snapshot/s3-store.js';
import type { TransferProgress } from '../../src/snapshot/transfer-progress.js';
import { embersErrorWith } from '../helpers/errors.js';
import { startS3Server, type S3TestServer } from '../helpers/s3-server.js';
import {
  MiB,
  addWorkingSet,
  makeSnapshot,
  snapshotBytes,
  tempDir,
  visible,
  workingSetBytes,
} from '../helpers/snapshots.js';
import { WorkingSetStore } from '../../src/snapshot/working-set-store.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Quick retries, so fault tests fail in well under a second once the server is gone. */
const FAST_RETRY = { attempts: 3, baseDelayMs: 20, maxDelayMs: 50 };
const PART = 5 * MiB; // S3's smallest part: a 20 MiB memory file has 4

interface Env {
  s3: S3TestServer;
  remote: S3SnapshotStore;
  a: LocalSnapshotStore;
  b: LocalSnapshotStore;
}

/** An S3 server, a remote store on it, and two local stores in their own dirs; all released after the test. */
async function setup(t: TestContext): Promise<Env> {
  diagnostic = (msg) => t.diagnostic(msg);
  const dir = await tempDir('s3-test');
  t.after(() => dir.dispose());
  const s3 = await startS3Server();
  t.after(() => s3.dispose());
  const remote = new S3SnapshotStore(s3.storeOptions({ retry: FAST_RETRY }));
  t.after(() => remote.close());
  return { s3, remote, a: new LocalSnapshotStore(join(dir.path, 'a')), b: new LocalSnapshotStore(join(dir.path, 'b')) };
}

let diagnostic: (msg: string) => void = () => {};

const code = (c: string, ...inMessage: string[]) => embersErrorWith(c, inMessage, (line) => diagnostic(line));

test(
  's3: push, then pull into another store: byte-identical, manifest identical, verified; list, has, remove',
  { timeout: 120_000 },
  async (t) => {
    const { remote, a, b } = await setup(t);
    const m = await makeSnapshot(a);
    const small = await makeSnapshot(a, { memoryBytes: 3 * MiB + 1, deltaBytes: 0, stateBytes: 1 }); // single-part objects, an empty file, a 1-byte file

    const events: TransferProgress[] = [];
    const pushed = await remote.push(a, m.id, {
      partSizeBytes: PART,
      concurrency: 3,
      onProgress: (e) => events.push(e),
    });
    assert.equal(pushed.bytes, pushed.totalBytes);
    assert.equal(pushed.resumedBytes, 0);
    assert.equal(events.at(-1)?.file, MANIFEST_NAME, 'the manifest goes last');
    assert.equal(events.at(-1)?.bytesDone, pushed.totalBytes);
    assert.ok(events.filter((e) => e.file === 'memory.bin').length >= 4, 'memory.bin went up in several parts');
    for (let i = 1; i < events.length; i++)
      assert.ok(events[i].bytesDone >= events[i - 1].bytesDone, 'progress only grows');
    await remote.push(a, small.id, { partSizeBytes: PART });

    assert.deepEqual(await remote.list(), [m.id, small.id].sort());
    assert.equal(await remote.has(m.id), true);

    const pullEvents: TransferProgress[] = [];
    const pulled = await remote.pull(b, m.id, {
      partSizeBytes: MiB,
      concurrency: 4,
      onProgress: (e) => pullEvents.push(e),
    });
    assert.equal(pulled.bytes, pulled.totalBytes);
    assert.equal(pullEvents[0].file, MANIFEST_NAME, 'the manifest comes first');
    assert.equal(pullEvents.at(-1)?.bytesDone, pulled.totalBytes);
    assert.deepEqual(
      await snapshotBytes(b, m.id),
      await snapshotBytes(a, m.id),
      'every file and the manifest are byte-identical',
    );
    assert.deepEqual(await b.get(m.id), m);
    await b.verify(await b.get(m.id));
    await remote.pull(b, small.id);
    assert.deepEqual(await snapshotBytes(b, small.id), await snapshotBytes(a, small.id));
    assert.deepEqual(await readdir(join(b.dir, '.transfers')), [], 'no transfer state is left behind');

    const again = await remote.pull(b, m.id);
    assert.equal(again.bytes, 0, 'a snapshot already in the store is not fetched again');
    const repush = await remote.push(a, m.id, { partSizeBytes: PART });
    assert.equal(
      repush.resumedBytes,
      repush.totalBytes - (await snapshotBytes(a, m.id))[MANIFEST_NAME].length,
      'a second push only re-sends the manifest',
    );

    await remote.remove(m.id);
    assert.equal(await remote.has(m.id), false);
    assert.deepEqual(await remote.list(), [small.id]);
    await assert.rejects(
      remote.pull(new LocalSnapshotStore(join(b.dir, '..', 'c')), m.id),
      code('EMB_REMOTE_NOT_FOUND', m.id),
    );
    await assert.rejects(remote.remove(m.id), code('EMB_REMOTE_NOT_FOUND', m.id));
    await assert.rejects(remote.has('../etc'), code('EMB_SNAPSHOT_NOT_FOUND'));
  },
);

test(
  's3: the server dies mid-upload: the push fails clearly, no manifest is ever visible, a second push resumes',
  { timeout: 120_000 },
  async (t) => {
    const { s3, remote, a, b } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 24 * MiB });
    const manifestObject = s3.objectPath(remote.keyOf(m.id, MANIFEST_NAME));
    let manifestSeenEarly = false;
    const watch = (e: TransferProgress) => {
      if (e.file !== MANIFEST_NAME && existsSync(manifestObject)) manifestSeenEarly = true;
    };

    let killing: Promise<void> | undefined;
    await assert.rejects(
      remote.push(a, m.id, {
        partSizeBytes: PART,
        concurrency: 2,
        onProgress: (e) => {
          watch(e);
          if (e.file === 'memory.bin' && e.fileBytesDone >= 2 * PART && !killing) killing = s3.kill();
        },
      }),
      code('EMB_REMOTE_UNREACHABLE', s3.endpoint),
    );
    assert.ok(killing, 'the server was killed mid-upload');
    await killing;
    await s3.restart();
    assert.equal(await remote.has(m.id), false, 'a half-uploaded snapshot does not exist remotely');
    assert.deepEqual(await remote.list(), []);
    assert.equal(existsSync(manifestObject), false);

    const events: TransferProgress[] = [];
    const resumed = await remote.push(a, m.id, {
      partSizeBytes: PART,
      concurrency: 2,
      onProgress: (e) => {
        watch(e);
        events.push(e);
      },
    });
    assert.equal(manifestSeenEarly, false, 'the manifest object appeared only after every file was complete');
    t.diagnostic(`second push: sent ${resumed.bytes}, kept ${resumed.resumedBytes} of ${resumed.totalBytes} bytes`);
    assert.ok(
      resumed.resumedBytes >= 2 * PART,
      `the parts already uploaded were kept (resumed ${resumed.resumedBytes})`,
    );
    assert.ok(
      resumed.bytes < resumed.totalBytes,
      `the second push sent ${resumed.bytes} of ${resumed.totalBytes} bytes`,
    );
    assert.equal(resumed.bytes + resumed.resumedBytes, resumed.totalBytes);
    assert.equal(events.at(-1)?.file, MANIFEST_NAME);
    assert.equal(await remote.has(m.id), true);
    assert.deepEqual(
      (await readdir(join(a.dir, '.transfers'))).filter((n) => !n.endsWith('.lock')),
      [],
      'the upload state is dropped once done',
    );

    await remote.pull(b, m.id);
    assert.deepEqual(await snapshotBytes(b, m.id), await snapshotBytes(a, m.id));
    await b.verify(await b.get(m.id));
  },
);

test(
  's3: the server dies mid-download: the pull fails clearly, nothing shows in the local store, a retry resumes',
  { timeout: 120_000 },
  async (t) => {
    const { s3, remote, a, b } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 24 * MiB });
    await remote.push(a, m.id, { partSizeBytes: PART });

    let killing: Promise<void> | undefined;
    await assert.rejects(
      remote.pull(b, m.id, {
        partSizeBytes: MiB,
        concurrency: 2,
        onProgress: (e) => {
          if (e.bytesDone >= 8 * MiB && !killing) killing = s3.kill();
        },
      }),
      code('EMB_REMOTE_UNREACHABLE', s3.endpoint),
    );
    await killing;
    assert.deepEqual(await visible(b), { ids: [], staging: [] }, 'nothing partial is visible');
    assert.equal(await b.has(m.id), false);

    await s3.restart();
    const resumed = await remote.pull(b, m.id, { partSizeBytes: MiB, concurrency: 2 });
    t.diagnostic(`second pull: fetched ${resumed.bytes}, kept ${resumed.resumedBytes} of ${resumed.totalBytes} bytes`);
    assert.ok(resumed.resumedBytes >= 6 * MiB, `completed ranges were kept (resumed ${resumed.resumedBytes})`);
    assert.ok(resumed.bytes < resumed.totalBytes, `the retry fetched ${resumed.bytes} of ${resumed.totalBytes} bytes`);
    assert.deepEqual(await snapshotBytes(b, m.id), await snapshotBytes(a, m.id));
    await b.verify(await b.get(m.id));
    assert.deepEqual(await readdir(join(b.dir, '.transfers')), [], 'the partial files and journal are gone');
  },
);

test(
  's3: a tampered object is refused with EMB_SNAPSHOT_CORRUPT naming the file; nothing is published',
  { timeout: 120_000 },
  async (t) => {
    const { s3, remote, a, b } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 12 * MiB });
    await remote.push(a, m.id, { partSizeBytes: PART });
    const memory = m.files.find((f) => f.name === 'memory.bin')!;
    const put = (body: Buffer) =>
      remote.client.send(
        new PutObjectCommand({
          Bucket: s3.bucket,
          Key: remote.keyOf(m.id, 'memory.bin'),
          Body: body,
          Metadata: { sha256: memory.sha256 },
        }), // the digest metadata is kept: only the bytes tell
      );

    // Same size, same metadata, one byte changed.
    const original = (await snapshotBytes(a, m.id))['memory.bin'];
    const altered = Buffer.from(original);
    altered[7 * MiB + 3] ^= 0xff;
    await put(altered);
    await assert.rejects(remote.pull(b, m.id, { partSizeBytes: 2 * MiB }), (err: unknown) => {
      code('EMB_SNAPSHOT_CORRUPT', 'memory.bin')(err);
      assert.equal((err as EmbersError).details.file, 'memory.bin');
      return true;
    });
    assert.deepEqual(await visible(b), { ids: [], staging: [] });

    // Truncated: caught from the object's size, before its bytes are fetched.
    await put(original.subarray(0, original.length - 1));
    await assert.rejects(remote.pull(b, m.id), code('EMB_SNAPSHOT_CORRUPT', 'memory.bin'));
    assert.deepEqual(await visible(b), { ids: [], staging: [] });

    // Repaired at the source, the pull goes through.
    await put(original);
    await remote.pull(b, m.id);
    await b.verify(await b.get(m.id));
  },
);

test(
  's3: a missing object is a clear error; a missing snapshot is EMB_REMOTE_NOT_FOUND',
  { timeout: 60_000 },
  async (t) => {
    const { s3, remote, a, b } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 2 * MiB });
    await remote.push(a, m.id);
    await remote.client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: remote.keyOf(m.id, 'disk.delta') }));
    await assert.rejects(remote.pull(b, m.id), (err: unknown) => {
      code('EMB_SNAPSHOT_CORRUPT', 'disk.delta', 'does not exist')(err);
      assert.equal((err as EmbersError).details.problem, 'remote-missing');
      return true;
    });
    assert.deepEqual(await visible(b), { ids: [], staging: [] });
    await assert.rejects(
      remote.pull(b, 'snap-0123456789abcdef0123'),
      code('EMB_REMOTE_NOT_FOUND', 'snap-0123456789abcdef0123'),
    );
  },
);

test(
  's3: wrong credentials give EMB_REMOTE_AUTH at once; a bad bucket EMB_REMOTE_NOT_FOUND; an endpoint that is down EMB_REMOTE_UNREACHABLE naming it',
  { timeout: 60_000 },
  async (t) => {
    const { s3, remote, a, b } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: MiB });
    await remote.push(a, m.id);
    const retrying = { attempts: 5, baseDelayMs: 10, maxDelayMs: 10 }; // a transient failure would be sent again

    for (const credentials of [
      { accessKeyId: s3.credentials.accessKeyId, secretAccessKey: 'not-the-secret' },
      { accessKeyId: 'not-the-key', secretAccessKey: s3.credentials.secretAccessKey },
    ]) {
      const wrong = new S3SnapshotStore(s3.storeOptions({ credentials, retry: retrying }));
      t.after(() => wrong.close());
      // Each call is refused, and no refused request is sent again (auth failures are not retried).
      const calls: [() => Promise<unknown>, string[]][] = [
        [() => wrong.push(a, m.id), [s3.endpoint]],
        [() => wrong.pull(b, m.id), []],
        [() => wrong.list(), []],
      ];
      for (const [call, inMessage] of calls) {
        const before = (await s3.refusals()).length;
        await assert.rejects(call(), code('EMB_REMOTE_AUTH', ...inMessage));
        const refused = (await s3.refusals()).slice(before).map((r) => `${r.method} ${r.url}`);
        assert.ok(refused.length >= 1, 'the server refused the call');
        assert.deepEqual(refused, [...new Set(refused)], 'no refused request was sent again');
      }
    }
    assert.deepEqual(await visible(b), { ids: [], staging: [] });

    const noBucket = new S3SnapshotStore(s3.storeOptions({ bucket: 'no-such-bucket' }));
    t.after(() => noBucket.close());
    await assert.rejects(noBucket.list(), code('EMB_REMOTE_NOT_FOUND', 'no-such-bucket'));

    await s3.stop(); // FAST_RETRY bounds the attempts; `npm run bench -- failures` times them
    await assert.rejects(remote.list(), (err: unknown) => {
      code('EMB_REMOTE_UNREACHABLE', s3.endpoint)(err);
      assert.equal((err as EmbersError).details.endpoint, s3.endpoint);
      return true;
    });
    await assert.rejects(remote.pull(b, m.id), code('EMB_REMOTE_UNREACHABLE', s3.endpoint));
  },
);

test(
  's3: a working set recorded after the push goes up with the next push, comes down with a pull, byte-identical and verified; a tampered one is refused',
  { timeout: 120_000 },
  async (t) => {
    const { s3, remote, a, b } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 4 * MiB });
    const before = await remote.push(a, m.id, { partSizeBytes: PART });
    const wm = await addWorkingSet(a, m.id);
    const pushed = await remote.push(a, m.id, { partSizeBytes: PART });
    const ws = await workingSetBytes(a, m.id);
    const wsBytes = Object.values(ws).reduce((n, b) => n + b.length, 0);
    // the snapshot's objects were in place: only its manifest and the working set moved
    assert.equal(before.resumedBytes, 0);
    assert.equal(pushed.bytes, (await readManifestLength(a, m.id)) + wsBytes);
    assert.equal(pushed.totalBytes, before.totalBytes + wsBytes);
    assert.deepEqual(await remote.list(), [m.id], 'the working set is no snapshot of its own');

    // tampered at the source: refused, the snapshot itself arrives, no working set is published
    const pagesKey = remote.keyOf(m.id, 'workingset/workingset.pages');
    const altered = Buffer.from(ws['workingset.pages']);
    altered[100] ^= 0xff;
    await remote.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: pagesKey, Body: altered }));
    await assert.rejects(remote.pull(b, m.id), code('EMB_WORKING_SET_INVALID', 'workingset.pages'));
    assert.equal(await new WorkingSetStore(b).get(m.id), undefined);
    assert.deepEqual(
      (await readdir(b.pathOf(m.id))).filter((n) => n.startsWith('.')),
      [],
      'no staging dir is left',
    );

    // repaired: the working set alone is fetched (the snapshot is here already)
    await remote.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: pagesKey, Body: ws['workingset.pages'] }));
    const fetched = await remote.pullWorkingSet(b, m.id);
    assert.equal(fetched?.bytes, wsBytes);
    assert.deepEqual(await workingSetBytes(b, m.id), ws);
    assert.deepEqual((await new WorkingSetStore(b).verify(m.id)).manifest, wm);
    await b.verify(await b.get(m.id));

    // a fresh store gets both in one pull; removing the snapshot remotely removes its working set
    const c = new LocalSnapshotStore(join(b.dir, '..', 'c'));
    await remote.pull(c, m.id);
    assert.deepEqual(await workingSetBytes(c, m.id), ws);
    await remote.remove(m.id);
    assert.equal(await remote.has(m.id), false);
    assert.equal(await remote.pullWorkingSet(c, m.id), undefined, 'a store that has it fetches nothing');
  },
);

async function readManifestLength(store: LocalSnapshotStore, id: string): Promise<number> {
  return (await store.getWithBytes(id)).bytes.length;
}

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../../src/errors.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { parseRange } from '../../src/snapshot/peer-server.js';
import { resolveS3StoreOptions } from '../../src/snapshot/s3-store.js';
import { environment, s3Settings } from '../../src/config.js';
import { compileTransferOptions, isTransientTransferError } from '../../src/snapshot/transfer.js';
import { runPool } from '../../src/util/worker-pool.js';
import { exists } from '../../src/util/fs.js';
import { retry, retryPolicy } from '../../src/util/retry.js';
import { makeSnapshot, snapshotBytes, tempDir } from '../helpers/snapshots.js';

const transient = () => new EmbersError('EMB_REMOTE_UNREACHABLE', 'down', { problem: 'connect' });
const policy = retryPolicy({ attempts: 4, baseDelayMs: 1, maxDelayMs: 2 });

test('retry: transient errors are retried up to the attempts, others are thrown at once', async () => {
  let calls = 0;
  assert.equal(
    await retry(
      async () => {
        if (++calls < 3) throw transient();
        return 'ok';
      },
      isTransientTransferError,
      policy,
    ),
    'ok',
  );
  assert.equal(calls, 3);

  calls = 0;
  await assert.rejects(
    retry(
      async () => {
        calls++;
        throw transient();
      },
      isTransientTransferError,
      policy,
    ),
    (e) => isEmbersError(e, 'EMB_REMOTE_UNREACHABLE'),
  );
  assert.equal(calls, 4);

  calls = 0;
  await assert.rejects(
    retry(
      async () => {
        calls++;
        throw new EmbersError('EMB_REMOTE_AUTH', 'no', {});
      },
      isTransientTransferError,
      policy,
    ),
    (e) => isEmbersError(e, 'EMB_REMOTE_AUTH'),
  );
  assert.equal(calls, 1, 'an auth failure is not retried');

  const ac = new AbortController();
  ac.abort(new Error('stop'));
  await assert.rejects(
    retry(async () => 1, isTransientTransferError, policy, ac.signal),
    /stop/,
  );
  assert.throws(
    () => retryPolicy({ attempts: 0 }),
    (e) => isEmbersError(e, 'EMB_CONFIG_INVALID'),
  );
});

test('runPool: bounded concurrency; the first failure stops the rest and is thrown after every worker stopped', async () => {
  let running = 0;
  let peak = 0;
  const seen: number[] = [];
  await runPool([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, 5));
    seen.push(n);
    running--;
  });
  assert.equal(peak, 3);
  assert.deepEqual(seen.sort(), [1, 2, 3, 4, 5, 6, 7]);

  let stillRunning = 0;
  const started: number[] = [];
  await assert.rejects(
    runPool([1, 2, 3, 4, 5, 6], 2, async (n, signal) => {
      started.push(n);
      stillRunning++;
      try {
        if (n === 1) throw new Error('boom');
        await new Promise((r) => setTimeout(r, 20));
        signal.throwIfAborted();
      } finally {
        stillRunning--;
      }
    }),
    /boom/,
  );
  assert.equal(stillRunning, 0, 'nothing runs once runPool has thrown');
  assert.ok(started.length < 6, 'no new work starts after a failure');
});

test('transfer options: defaults and refusals', () => {
  const o = compileTransferOptions();
  assert.equal(o.partSizeBytes, 8 * 1024 * 1024);
  assert.equal(o.concurrency, 4);
  assert.deepEqual(o.retry, { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 });
  assert.throws(
    () => compileTransferOptions({ concurrency: 0 }),
    (e) => isEmbersError(e, 'EMB_CONFIG_INVALID'),
  );
  assert.throws(
    () => compileTransferOptions({ partSizeBytes: 0 }),
    (e) => isEmbersError(e, 'EMB_CONFIG_INVALID'),
  );
});

test('peer Range header parsing: one range, suffix, open end, unsatisfiable, ignored forms', () => {
  assert.equal(parseRange(undefined, 100), undefined);
  assert.deepEqual(parseRange('bytes=0-9', 100), [0, 10]);
  assert.deepEqual(parseRange('bytes=90-', 100), [90, 100]);
  assert.deepEqual(parseRange('bytes=-5', 100), [95, 100]);
  assert.deepEqual(parseRange('bytes=-500', 100), [0, 100]);
  assert.deepEqual(parseRange('bytes=50-5000', 100), [50, 100]);
  assert.equal(parseRange('bytes=100-', 100), 'unsatisfiable');
  assert.equal(parseRange('bytes=-0', 100), 'unsatisfiable');
  assert.equal(parseRange('bytes=0-', 0), 'unsatisfiable');
  assert.equal(parseRange('bytes=9-3', 100), undefined);
  assert.equal(parseRange('bytes=0-1,4-5', 100), undefined);
  assert.equal(parseRange('items=0-1', 100), undefined);
  assert.equal(parseRange('bytes=-', 100), undefined);
});

test('S3 options: from the environment, with defaults; incomplete or invalid settings are refused', () => {
  assert.equal(s3Settings({}, environment({})), undefined);
  const env = {
    EMBERS_S3_ENDPOINT: 'http://127.0.0.1:9000',
    EMBERS_S3_REGION: 'eu-west-1',
    EMBERS_S3_BUCKET: 'snaps',
    EMBERS_S3_PREFIX: 'cluster-a/snapshots',
    EMBERS_S3_ACCESS_KEY_ID: 'key',
    EMBERS_S3_SECRET_ACCESS_KEY: 'secret',
  };
  const o = s3Settings({}, environment(env))!;
  assert.deepEqual(o, {
    endpoint: 'http://127.0.0.1:9000',
    region: 'eu-west-1',
    bucket: 'snaps',
    prefix: 'cluster-a/snapshots',
    credentials: { accessKeyId: 'key', secretAccessKey: 'secret' },
  });
  const c = resolveS3StoreOptions(o);
  assert.equal(c.forcePathStyle, true, 'path style when an endpoint is given (MinIO, s3rver)');
  assert.equal(resolveS3StoreOptions({ bucket: 'snaps' }).forcePathStyle, false);
  assert.equal(resolveS3StoreOptions({ bucket: 'snaps' }).prefix, 'snapshots');
  assert.equal(resolveS3StoreOptions({ bucket: 'snaps', prefix: '/a/b/' }).prefix, 'a/b');
  assert.equal(resolveS3StoreOptions({ bucket: 'snaps', prefix: '' }).prefix, '');

  const bad = (e: unknown) => isEmbersError(e, 'EMB_CONFIG_INVALID');
  assert.throws(() => s3Settings({}, environment({ EMBERS_S3_ENDPOINT: 'http://x' })), bad);
  assert.throws(() => s3Settings({}, environment({ EMBERS_S3_BUCKET: 'b-1', EMBERS_S3_ACCESS_KEY_ID: 'k' })), bad);
  assert.throws(() => resolveS3StoreOptions({ bucket: 'Bad_Bucket' }), bad);
  assert.throws(() => resolveS3StoreOptions({ bucket: 'snaps', endpoint: 'ftp://x' }), bad);
  assert.throws(() => resolveS3StoreOptions({ bucket: 'snaps', prefix: 'a/../b' }), bad);
});

test('local store: publishFetched publishes exactly the listed files under the manifest id, atomically; refuses a mismatch', async () => {
  const dir = await tempDir('publish-fetched');
  try {
    const a = new LocalSnapshotStore(join(dir.path, 'a'));
    const b = new LocalSnapshotStore(join(dir.path, 'b'));
    const m = await makeSnapshot(a, { memoryBytes: 4096, deltaBytes: 0, stateBytes: 100 });
    const stage = async (skip?: string) => {
      const staging = await b.staging();
      for (const f of m.files) if (f.name !== skip) await cp(join(a.pathOf(m.id), f.name), join(staging, f.name));
      return staging;
    };

    const missing = await stage('vmstate.bin');
    await assert.rejects(
      b.publishFetched(missing, m),
      (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') && /vmstate\.bin/.test((e as Error).message),
    );
    const extra = await stage();
    await writeFile(join(extra, 'extra.bin'), 'x');
    await assert.rejects(b.publishFetched(extra, m), (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT'));
    const short = await stage();
    await writeFile(join(short, 'memory.bin'), 'short');
    await assert.rejects(
      b.publishFetched(short, m),
      (e) => isEmbersError(e, 'EMB_SNAPSHOT_CORRUPT') && /memory\.bin/.test((e as Error).message),
    );
    assert.equal(await b.has(m.id), false, 'nothing was published');

    assert.deepEqual(await b.publishFetched(await stage(), m), m);
    assert.deepEqual(
      await snapshotBytes(b, m.id),
      await snapshotBytes(a, m.id),
      'the manifest is written byte for byte as publish writes it',
    );
    await b.verify(m);
    const again = await stage();
    assert.deepEqual(await b.publishFetched(again, m), m, 'already there: kept');
    assert.equal(await exists(again), false, 'and the second staging dir dropped');
  } finally {
    await dir.dispose();
  }
});

/**
 * Store faults: a fault proxy (test/helpers/fault-proxy.ts, a real HTTP proxy) between embers
 * and the S3 test server, and between embers and a peer node, breaks chosen requests:
 * connection resets mid-part and mid-range, 500 and 503 SlowDown with Retry-After, truncated
 * bodies, a wrong ETag, corrupted bytes, a stalled connection. Transfers retry and resume and
 * end with a snapshot that verifies; what cannot be fixed by a retry fails with an EMB code,
 * and nothing corrupt or partial is ever published. No VM, no host resources.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { PeerClient } from '../../src/snapshot/peer-client.js';
import { startPeerServer, type PeerServer } from '../../src/snapshot/peer-server.js';
import { S3SnapshotStore } from '../../src/snapshot/s3-store.js';
import type { SnapshotManifest } from '../../src/snapshot/manifest.js';
import { startFaultProxy, type FaultProxy, type ProxiedRequest } from '../helpers/fault-proxy.js';
import { makeSnapshot, snapshotBytes, tempDir, visible } from '../helpers/snapshots.js';
import { startS3Server, type S3TestServer } from '../helpers/s3-server.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const RETRY = { attempts: 4, baseDelayMs: 10, maxDelayMs: 50 };
const PART = 5 * 1024 * 1024;
const TOKEN = 'fault-proxy-peer-token-0123456789';
const outcomes: { fault: string; via: string; outcome: string }[] = [];

let s3: S3TestServer;
let dir: { path: string; dispose(): Promise<void> };
let source: LocalSnapshotStore;
let snap: SnapshotManifest;
let n = 0;

before(async () => {
  s3 = await startS3Server();
  dir = await tempDir('store-faults');
  source = new LocalSnapshotStore(join(dir.path, 'source'));
  // 12 MiB of memory: three 5 MiB parts on a push, three ranges on a pull
  snap = await makeSnapshot(source, { memoryBytes: 12 * 1024 * 1024 });
});

after(async () => {
  await s3?.dispose();
  await dir?.dispose();
  if (outcomes.length) {
    console.log(
      [
        'store faults tried',
        '| fault | via | outcome |',
        '| --- | --- | --- |',
        ...outcomes.map((o) => `| ${o.fault} | ${o.via} | ${o.outcome} |`),
      ].join('\n'),
    );
  }
});

/** An S3 store reached through `proxy`, under a fresh prefix. */
function s3Through(proxy: FaultProxy, prefix: string, idleTimeoutMs?: number): S3SnapshotStore {
  return new S3SnapshotStore(
    s3.storeOptions({ endpoint: proxy.url, prefix, retry: RETRY, ...(idleTimeoutMs ? { idleTimeoutMs } : {}) }),
  );
}

function freshStore(): LocalSnapshotStore {
  return new LocalSnapshotStore(join(dir.path, `dest-${++n}`));
}

/** The pulled snapshot is byte-identical to the source's and verifies. */
async function assertSame(store: LocalSnapshotStore): Promise<void> {
  assert.deepEqual(await snapshotBytes(store, snap.id), await snapshotBytes(source, snap.id));
  await store.verify(await store.get(snap.id));
}

function faulted(log: ProxiedRequest[]): ProxiedRequest[] {
  return log.filter((r) => r.fault);
}

/** Pushes the snapshot through no fault to `prefix`, straight to the server. */
async function pushDirect(prefix: string): Promise<void> {
  const direct = new S3SnapshotStore(s3.storeOptions({ prefix }));
  try {
    await direct.push(source, snap.id, { partSizeBytes: PART });
  } finally {
    direct.close();
  }
}

test('S3 push: a reset mid-part, a 500, a wrong ETag and a 503 SlowDown with Retry-After on the manifest: retried, honoured, and the pushed snapshot verifies', async () => {
  const proxy = await startFaultProxy(s3.endpoint);
  try {
    proxy.inject({ method: 'PUT', url: /partNumber=2/, fault: { kind: 'reset-request', afterBytes: 1024 * 1024 } });
    proxy.inject({
      method: 'PUT',
      url: /partNumber=3/,
      fault: { kind: 'status', status: 500, body: '<Error><Code>InternalError</Code></Error>' },
    });
    proxy.inject({
      method: 'PUT',
      url: /partNumber=1/,
      fault: { kind: 'etag', etag: '"0123456789abcdef0123456789abcdef"' },
    });
    proxy.inject({
      method: 'PUT',
      url: /manifest\.json/,
      fault: {
        kind: 'status',
        status: 503,
        headers: { 'retry-after': '1' },
        body: '<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>',
      },
    });
    const store = s3Through(proxy, 'push-faults');
    try {
      await store.push(source, snap.id, { partSizeBytes: PART, concurrency: 1 });
    } finally {
      store.close();
    }
    assert.deepEqual(proxy.pending(), [], 'every fault was applied');
    for (const f of faulted(proxy.log)) {
      const again = proxy.log.filter((r) => r.method === f.method && r.url === f.url && r.at > f.at);
      assert.ok(again.length >= 1, `${f.fault} on ${f.method} ${f.url} was retried`);
    }
    // Retry-After: 1 s. A lower bound only (the wait the code itself must make), not a timing threshold.
    const slow = faulted(proxy.log).find((r) => r.fault === 'status' && r.url.includes('manifest.json'))!;
    const retried = proxy.log.find((r) => r.url === slow.url && r.at > slow.at)!;
    assert.ok(
      retried.at - slow.at >= 1000,
      `the manifest was sent again ${Math.round(retried.at - slow.at)} ms after a 503 with Retry-After: 1`,
    );
    const dest = freshStore();
    const direct = new S3SnapshotStore(s3.storeOptions({ prefix: 'push-faults' }));
    try {
      await direct.pull(dest, snap.id);
    } finally {
      direct.close();
    }
    await assertSame(dest);
    outcomes.push(
      {
        fault: 'connection reset mid-part (PUT part 2)',
        via: 'S3 push',
        outcome: 'part retried, push ok, pulled snapshot verifies',
      },
      { fault: '500 InternalError (PUT part 3)', via: 'S3 push', outcome: 'retried, ok' },
      {
        fault: 'wrong ETag on a part (PUT part 1)',
        via: 'S3 push',
        outcome: 'part re-sent (EMB_REMOTE_UNAVAILABLE, transient), ok',
      },
      {
        fault: '503 SlowDown, Retry-After: 1 (PUT manifest)',
        via: 'S3 push',
        outcome: 'retried no earlier than 1 s later, ok',
      },
    );
  } finally {
    await proxy.close();
  }
});

test('S3 pull: resets mid-range, a truncated body, a 503 with Retry-After: retried ranges only, and the snapshot verifies', async () => {
  await pushDirect('pull-faults');
  const proxy = await startFaultProxy(s3.endpoint);
  try {
    proxy.inject({ method: 'GET', url: /memory\.bin/, fault: { kind: 'reset-response', afterBytes: 1024 * 1024 } });
    proxy.inject({ method: 'GET', url: /memory\.bin/, fault: { kind: 'truncate', bytes: 4096 } });
    proxy.inject({
      method: 'GET',
      url: /disk\.delta/,
      fault: {
        kind: 'status',
        status: 503,
        headers: { 'retry-after': '1' },
        body: '<Error><Code>SlowDown</Code></Error>',
      },
    });
    const dest = freshStore();
    const store = s3Through(proxy, 'pull-faults');
    try {
      const r = await store.pull(dest, snap.id, { partSizeBytes: PART, concurrency: 1 });
      assert.equal(r.id, snap.id);
    } finally {
      store.close();
    }
    assert.deepEqual(proxy.pending(), []);
    await assertSame(dest);
    // only the broken ranges were asked for again: 3 ranges of memory.bin + 2 retries
    assert.equal(proxy.log.filter((r) => r.method === 'GET' && r.url.includes('memory.bin')).length, 5);
    assert.deepEqual(await visible(dest), { ids: [snap.id], staging: [] });
    outcomes.push(
      {
        fault: 'connection reset mid-range (GET memory.bin)',
        via: 'S3 pull',
        outcome: 'that range retried, ok, verifies',
      },
      {
        fault: 'truncated body (GET memory.bin, short Content-Length)',
        via: 'S3 pull',
        outcome: 'that range retried, ok, verifies',
      },
      { fault: '503 SlowDown, Retry-After: 1 (GET disk.delta)', via: 'S3 pull', outcome: 'retried, ok' },
    );
  } finally {
    await proxy.close();
  }
});

test('S3 pull: a stalled range times out with EMB_REMOTE_UNREACHABLE, publishes nothing, and the next pull resumes', async () => {
  await pushDirect('stall');
  const proxy = await startFaultProxy(s3.endpoint);
  try {
    // every attempt at the last range of memory.bin stalls after 64 KiB
    proxy.inject({ method: 'GET', url: /memory\.bin/, fault: { kind: 'stall', afterBytes: 64 * 1024 }, times: 100 });
    const dest = freshStore();
    const store = s3Through(proxy, 'stall', 500);
    try {
      await assert.rejects(
        store.pull(dest, snap.id, {
          partSizeBytes: PART,
          concurrency: 1,
          retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 20 },
        }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'EMB_REMOTE_UNREACHABLE', String(err));
          return true;
        },
      );
    } finally {
      store.close();
    }
    assert.deepEqual(await visible(dest), { ids: [], staging: [] }, 'nothing published');
    const direct = new S3SnapshotStore(s3.storeOptions({ prefix: 'stall' }));
    try {
      const r = await direct.pull(dest, snap.id, { partSizeBytes: PART });
      assert.ok(r.resumedBytes > 0, 'the ranges done before the stall were kept');
    } finally {
      direct.close();
    }
    await assertSame(dest);
    outcomes.push({
      fault: 'stalled connection (GET memory.bin, idle timeout 500 ms)',
      via: 'S3 pull',
      outcome: 'EMB_REMOTE_UNREACHABLE after retries; nothing published; next pull resumed',
    });
  } finally {
    await proxy.close();
  }
});

test('pull: bytes corrupted in flight are never published (EMB_SNAPSHOT_CORRUPT); a clean retry gets the snapshot', async () => {
  await pushDirect('corrupt');
  const proxy = await startFaultProxy(s3.endpoint);
  try {
    // a body that is complete and the right length, but not the stored bytes
    proxy.inject({ method: 'GET', url: /vmstate\.bin/, fault: { kind: 'corrupt' } });
    const dest = freshStore();
    const store = s3Through(proxy, 'corrupt');
    try {
      await assert.rejects(store.pull(dest, snap.id, { partSizeBytes: PART }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'EMB_SNAPSHOT_CORRUPT', String(err));
        return true;
      });
      assert.deepEqual(await visible(dest), { ids: [], staging: [] }, 'nothing published');
      await store.pull(dest, snap.id, { partSizeBytes: PART });
    } finally {
      store.close();
    }
    await assertSame(dest);
    outcomes.push({
      fault: 'bytes altered in flight (GET vmstate.bin)',
      via: 'S3 pull',
      outcome: 'EMB_SNAPSHOT_CORRUPT, nothing published; retry ok',
    });
  } finally {
    await proxy.close();
  }
});

test('peer pull: a reset mid-range, a 503 with Retry-After and a truncated body are retried; a stall times out with EMB_REMOTE_UNREACHABLE', async () => {
  let peer: PeerServer | undefined;
  try {
    peer = await startPeerServer({ store: source, token: TOKEN });
    const p = await startFaultProxy(peer.url);
    try {
      p.inject({ method: 'GET', url: /memory\.bin/, fault: { kind: 'reset-response', afterBytes: 512 * 1024 } });
      p.inject({
        method: 'GET',
        url: /memory\.bin/,
        fault: { kind: 'status', status: 503, headers: { 'retry-after': '1' }, body: '{"code":"EMB_BUSY"}' },
      });
      p.inject({ method: 'GET', url: /disk\.delta/, fault: { kind: 'truncate', bytes: 1000 } });
      const dest = freshStore();
      await new PeerClient({ url: p.url, token: TOKEN, retry: RETRY }).pull(dest, snap.id, {
        partSizeBytes: PART,
        concurrency: 1,
      });
      assert.deepEqual(p.pending(), []);
      await assertSame(dest);

      p.inject({ method: 'GET', url: /memory\.bin/, fault: { kind: 'stall', afterBytes: 64 * 1024 }, times: 100 });
      const stalled = freshStore();
      await assert.rejects(
        new PeerClient({
          url: p.url,
          token: TOKEN,
          retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 20 },
          stallTimeoutMs: 500,
        }).pull(stalled, snap.id, {
          partSizeBytes: PART,
          concurrency: 1,
        }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'EMB_REMOTE_UNREACHABLE', String(err));
          return true;
        },
      );
      assert.deepEqual(await visible(stalled), { ids: [], staging: [] }, 'nothing published');
      outcomes.push(
        { fault: 'connection reset mid-range (GET memory.bin)', via: 'peer pull', outcome: 'retried, ok, verifies' },
        { fault: '503 with Retry-After: 1', via: 'peer pull', outcome: 'retried, ok' },
        { fault: 'truncated body (GET disk.delta)', via: 'peer pull', outcome: 'retried, ok' },
        {
          fault: 'stalled connection (stall timeout 500 ms)',
          via: 'peer pull',
          outcome: 'EMB_REMOTE_UNREACHABLE after retries; nothing published',
        },
      );
    } finally {
      await p.close();
    }
  } finally {
    await peer?.close();
  }
});

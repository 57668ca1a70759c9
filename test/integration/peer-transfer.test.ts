import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { appendFile, cp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EmbersError } from '../../src/errors.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { MANIFEST_NAME } from '../../src/snapshot/manifest.js';
import { PeerClient } from '../../src/snapshot/peer-client.js';
import { startPeerServer, type PeerServer } from '../../src/snapshot/peer-server.js';
import { embersErrorWith } from '../helpers/errors.js';
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

const TOKEN = 'peer-token-0123456789abcdef';
const FAST_RETRY = { attempts: 3, baseDelayMs: 20, maxDelayMs: 50 };

interface Env {
  root: string;
  a: LocalSnapshotStore;
  b: LocalSnapshotStore;
  serve(): Promise<PeerServer>;
}

async function setup(t: TestContext): Promise<Env> {
  const dir = await tempDir('peer-test');
  t.after(() => dir.dispose());
  const a = new LocalSnapshotStore(join(dir.path, 'a'));
  const servers: PeerServer[] = [];
  t.after(async () => {
    for (const s of servers) await s.close();
  });
  return {
    root: dir.path,
    a,
    b: new LocalSnapshotStore(join(dir.path, 'b')),
    serve: async () => {
      const s = await startPeerServer({ store: a, token: TOKEN });
      servers.push(s);
      return s;
    },
  };
}

/** A raw request: the path goes on the wire as written (no URL normalisation, unlike fetch). */
function raw(
  server: PeerServer,
  path: string,
  headers: Record<string, string> = { Authorization: `Bearer ${TOKEN}` },
  method = 'GET',
) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }>(
    (resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, path, method, headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    },
  );
}

const code = (c: string, ...inMessage: string[]) => embersErrorWith(c, inMessage);

test('peer: pull a snapshot from a peer: byte-identical, verified; list and has', { timeout: 60_000 }, async (t) => {
  const { a, b, serve } = await setup(t);
  const m = await makeSnapshot(a);
  const server = await serve();
  const peer = new PeerClient({ url: server.url, token: TOKEN });

  assert.deepEqual(await peer.list(), [
    { id: m.id, createdAt: m.createdAt, sizeBytes: m.files.reduce((n, f) => n + f.sizeBytes, 0) },
  ]);
  assert.equal(await peer.has(m.id), true);
  assert.equal(await peer.has('snap-0123456789abcdef0123'), false);

  const result = await peer.pull(b, m.id, { partSizeBytes: MiB, concurrency: 4 });
  assert.equal(result.bytes, result.totalBytes);
  assert.deepEqual(await snapshotBytes(b, m.id), await snapshotBytes(a, m.id));
  await b.verify(await b.get(m.id));
  await assert.rejects(peer.pull(b, 'snap-0123456789abcdef0123'), code('EMB_REMOTE_NOT_FOUND', server.url));
});

test(
  'peer: a wrong or missing token is refused with 401 and EMB_PEER_AUTH; nothing is pulled',
  { timeout: 30_000 },
  async (t) => {
    const { a, b, serve } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: MiB });
    const server = await serve();

    const wrong = new PeerClient({ url: server.url, token: 'not-the-token-at-all' });
    await assert.rejects(wrong.pull(b, m.id), code('EMB_PEER_AUTH', server.url));
    await assert.rejects(wrong.list(), code('EMB_PEER_AUTH'));
    assert.deepEqual(await visible(b), { ids: [], staging: [] });

    for (const headers of <Record<string, string>[]>[
      {},
      { Authorization: `Bearer ${TOKEN}x` },
      { Authorization: TOKEN },
      { Authorization: `Basic ${TOKEN}` },
    ]) {
      const res = await raw(server, `/v1/snapshots/${m.id}/${MANIFEST_NAME}`, headers);
      assert.equal(res.status, 401);
      assert.match(String(res.headers['www-authenticate']), /^Bearer/);
      assert.ok(!res.body.toString().includes(m.id), 'a 401 reveals nothing');
    }
    await assert.rejects(startPeerServer({ store: a, token: 'short' }), code('EMB_CONFIG_INVALID'));
  },
);

test(
  'peer: path traversal, encoded variants, unlisted files and symlinks are refused; nothing outside the store is served',
  { timeout: 30_000 },
  async (t) => {
    const { root, a, serve } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: MiB });
    const linked = await makeSnapshot(a, { memoryBytes: MiB });
    const SECRET = 'top-secret-bytes-outside-the-store';
    await writeFile(join(root, 'secret.txt'), SECRET);
    // A file in the snapshot dir that its manifest does not list.
    await writeFile(join(a.pathOf(m.id), 'extra.bin'), SECRET);
    // A listed file replaced by a symlink to a file outside the store.
    await rm(join(a.pathOf(linked.id), 'disk.delta'));
    await symlink(join(root, 'secret.txt'), join(a.pathOf(linked.id), 'disk.delta'));
    // A snapshot dir that is a symlink to a copy outside the store.
    const outside = join(root, 'outside-copy');
    await cp(a.pathOf(m.id), outside, { recursive: true });
    const fakeId = 'snap-00000000000000000000dead';
    await writeFile(
      join(outside, MANIFEST_NAME),
      (await readFile(join(outside, MANIFEST_NAME), 'utf8')).replace(m.id, fakeId),
    );
    await symlink(outside, join(a.dir, fakeId));
    const server = await serve();

    const attempts: [string, number[]][] = [
      ['/v1/snapshots/../../etc/passwd', [400, 404]],
      ['/v1/snapshots/%2e%2e/%2e%2e/etc/passwd', [400, 404]],
      ['/v1/snapshots/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd', [400, 404]],
      [`/v1/snapshots/${m.id}/../../../secret.txt`, [400, 404]],
      [`/v1/snapshots/${m.id}/..%2f..%2f..%2fsecret.txt`, [400, 404]],
      [`/v1/snapshots/${m.id}/%2e%2e`, [400, 404]],
      [`/v1/snapshots/${m.id}/..`, [400, 404]],
      [`/v1/snapshots/${m.id}/.`, [400, 404]],
      [`/v1/snapshots/${m.id}//memory.bin`, [400, 404]],
      [`/v1/snapshots/${m.id}/memory.bin/..`, [400, 404]],
      [`/v1/snapshots/${m.id}/extra.bin`, [404]],
      [`/v1/snapshots/${m.id}/%65xtra.bin`, [400, 404]],
      [`/v1/snapshots/${m.id}/`, [400, 404]],
      [`/v1/snapshots/${linked.id}/disk.delta`, [404]],
      [`/v1/snapshots/${fakeId}/memory.bin`, [404]],
      [`/v1/snapshots/${fakeId}/${MANIFEST_NAME}`, [404]],
      ['/v1/snapshots/..%2fsecret.txt/memory.bin', [400, 404]],
      ['/etc/passwd', [404]],
      ['/v1/../etc/passwd', [404]],
      ['//etc/passwd', [404]],
    ];
    for (const [path, statuses] of attempts) {
      const res = await raw(server, path);
      t.diagnostic(`${path} → ${res.status} ${res.body.toString().trim()}`);
      assert.ok(statuses.includes(res.status), `${path} → ${res.status}, expected ${statuses.join(' or ')}`);
      assert.ok(!res.body.includes(SECRET), `${path} leaked bytes from outside`);
      assert.ok(!res.body.toString().includes('root:'), `${path} leaked /etc/passwd`);
    }
    assert.equal((await raw(server, `/v1/snapshots/${m.id}/memory.bin`, undefined, 'DELETE')).status, 405);
    assert.deepEqual(
      (await new PeerClient({ url: server.url, token: TOKEN }).list()).map((s) => s.id).sort(),
      [m.id, linked.id].sort(),
      'the list shows only real snapshot dirs',
    );
  },
);

test(
  'peer: range requests (206, Content-Range, suffix and open ranges, 416), HEAD, and the sha256 header',
  { timeout: 30_000 },
  async (t) => {
    const { a, serve } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 2 * MiB });
    const server = await serve();
    const file = (await snapshotBytes(a, m.id))['memory.bin'];
    const size = file.length;
    const sha = m.files.find((f) => f.name === 'memory.bin')!.sha256;
    const path = `/v1/snapshots/${m.id}/memory.bin`;
    const get = (range?: string, method = 'GET') =>
      raw(server, path, { Authorization: `Bearer ${TOKEN}`, ...(range ? { Range: range } : {}) }, method);

    let res = await get();
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(file));
    assert.equal(res.headers['x-embers-sha256'], sha);
    assert.equal(res.headers['accept-ranges'], 'bytes');

    res = await get('bytes=0-99');
    assert.equal(res.status, 206);
    assert.equal(res.headers['content-range'], `bytes 0-99/${size}`);
    assert.ok(res.body.equals(file.subarray(0, 100)));

    res = await get(`bytes=${MiB}-${MiB + 4095}`);
    assert.equal(res.status, 206);
    assert.ok(res.body.equals(file.subarray(MiB, MiB + 4096)));

    res = await get('bytes=-10');
    assert.equal(res.status, 206);
    assert.equal(res.headers['content-range'], `bytes ${size - 10}-${size - 1}/${size}`);
    assert.ok(res.body.equals(file.subarray(size - 10)));

    res = await get(`bytes=${size - 5}-`);
    assert.equal(res.status, 206);
    assert.ok(res.body.equals(file.subarray(size - 5)));

    res = await get(`bytes=${size - 5}-${size + 1000}`);
    assert.equal(res.status, 206, 'an end past the file is clamped');
    assert.ok(res.body.equals(file.subarray(size - 5)));

    res = await get(`bytes=${size}-`);
    assert.equal(res.status, 416);
    assert.equal(res.headers['content-range'], `bytes */${size}`);

    res = await get('bytes=0-1,5-6');
    assert.equal(res.status, 200, 'several ranges: the whole file (allowed by RFC 9110)');
    assert.equal(res.body.length, size);

    res = await get('bytes=10-20', 'HEAD');
    assert.equal(res.status, 206);
    assert.equal(res.headers['content-length'], '11');
    assert.equal(res.body.length, 0);

    res = await raw(server, `/v1/snapshots/${m.id}/${MANIFEST_NAME}`);
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(res.body.toString()), m);
  },
);

test(
  'peer: an interrupted download resumes from where it stopped, from a restarted peer',
  { timeout: 60_000 },
  async (t) => {
    const { a, b, serve } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 24 * MiB });
    const first = await serve();
    let closing: Promise<void> | undefined;
    await assert.rejects(
      new PeerClient({ url: first.url, token: TOKEN }).pull(b, m.id, {
        partSizeBytes: MiB,
        concurrency: 2,
        retry: FAST_RETRY,
        onProgress: (e) => {
          if (e.bytesDone >= 8 * MiB && !closing) closing = first.close();
        },
      }),
      code('EMB_REMOTE_UNREACHABLE', first.url),
    );
    await closing;
    assert.deepEqual(await visible(b), { ids: [], staging: [] }, 'nothing partial is visible');

    const second = await serve(); // another port: the resume state belongs to the local store and the snapshot, not to the source
    const resumed = await new PeerClient({ url: second.url, token: TOKEN }).pull(b, m.id, {
      partSizeBytes: MiB,
      concurrency: 2,
    });
    t.diagnostic(`second pull: fetched ${resumed.bytes}, kept ${resumed.resumedBytes} of ${resumed.totalBytes} bytes`);
    assert.ok(resumed.resumedBytes >= 6 * MiB, `completed ranges were kept (resumed ${resumed.resumedBytes})`);
    assert.ok(resumed.bytes < resumed.totalBytes);
    assert.deepEqual(await snapshotBytes(b, m.id), await snapshotBytes(a, m.id));
    await b.verify(await b.get(m.id));
    assert.deepEqual(await readdir(join(b.dir, '.transfers')), []);
  },
);

test(
  'peer: a file altered at the peer is refused (EMB_SNAPSHOT_CORRUPT naming it); two pulls of one snapshot at once: one pulls, the other is EMB_SNAPSHOT_TRANSFER_BUSY',
  { timeout: 60_000 },
  async (t) => {
    const { a, b, serve } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 4 * MiB });
    const server = await serve();
    const peer = new PeerClient({ url: server.url, token: TOKEN });

    // which of the two takes the transfer lock first is up to the scheduler: exactly one pulls, the other is refused
    const both = await Promise.allSettled([peer.pull(b, m.id), peer.pull(b, m.id)]);
    assert.deepEqual(both.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    code('EMB_SNAPSHOT_TRANSFER_BUSY')(both.find((r): r is PromiseRejectedResult => r.status === 'rejected')!.reason);
    await b.remove(m.id);

    const memory = join(a.pathOf(m.id), 'memory.bin');
    const bytes = await readFile(memory);
    bytes[12345] ^= 1;
    await writeFile(memory, bytes);
    await assert.rejects(peer.pull(b, m.id), (err: unknown) => {
      code('EMB_SNAPSHOT_CORRUPT', 'memory.bin', server.url)(err);
      assert.equal((err as EmbersError).details.file, 'memory.bin');
      return true;
    });
    assert.deepEqual(await visible(b), { ids: [], staging: [] });

    await appendFile(memory, 'x'); // now also the wrong size: caught from Content-Range, before any byte is written
    await assert.rejects(peer.pull(b, m.id), code('EMB_SNAPSHOT_CORRUPT', 'memory.bin'));
    assert.deepEqual(await visible(b), { ids: [], staging: [] });
  },
);

test(
  "peer: a snapshot's working set comes with it, byte-identical and verified; its files are served only as its manifest lists them",
  { timeout: 60_000 },
  async (t) => {
    const { a, b, serve } = await setup(t);
    const m = await makeSnapshot(a, { memoryBytes: 2 * MiB });
    const bare = await makeSnapshot(a, { memoryBytes: MiB });
    const wm = await addWorkingSet(a, m.id);
    const server = await serve();
    const peer = new PeerClient({ url: server.url, token: TOKEN });

    await peer.pull(b, m.id);
    assert.deepEqual(await workingSetBytes(b, m.id), await workingSetBytes(a, m.id));
    assert.deepEqual((await new WorkingSetStore(b).verify(m.id)).manifest, wm);
    await b.verify(await b.get(m.id));
    // a snapshot without one arrives without one
    await peer.pull(b, bare.id);
    assert.equal(await new WorkingSetStore(b).get(bare.id), undefined);

    assert.equal((await raw(server, `/v1/snapshots/${bare.id}/workingset/manifest.json`)).status, 404);
    assert.equal((await raw(server, `/v1/snapshots/${m.id}/workingset/unlisted`)).status, 404);
    assert.equal((await raw(server, `/v1/snapshots/${m.id}/workingset/..%2Fmemory.bin`)).status, 400);
    assert.equal((await raw(server, `/v1/snapshots/${m.id}/other/workingset.pages`)).status, 404);
    const ranges = await raw(server, `/v1/snapshots/${m.id}/workingset/workingset.ranges`);
    assert.equal(ranges.status, 200);
    assert.equal(ranges.headers['x-embers-sha256'], wm.files.find((f) => f.name === 'workingset.ranges')!.sha256);
    assert.equal((await raw(server, `/v1/snapshots/${m.id}/workingset/workingset.ranges`, {})).status, 401);
  },
);

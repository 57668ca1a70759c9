/**
 * The daemon's early start on Firecracker (issue 13 item 4), end to end: node A boots the test
 * function, snapshots it and records its working set, both pushed to the S3 store; node B's first
 * cold start restores that snapshot before its memory file has arrived (the request is answered
 * by the early clone), and the snapshot is then published and verified in B's store, so B's
 * later cold starts restore it from there.
 *
 * Needs: root, a Firecracker binary (EMBERS_FIRECRACKER_BIN, else ../shared/firecracker/bin/) and
 * hardware-backed KVM for the guest to run (on PVM, Firecracker loads snapshots but the guest
 * makes no progress). Elsewhere it says what is missing and skips; the daemon's handling of an
 * early start is tested without a guest in test/unit/early-cold-start.test.ts and the early
 * restore itself against the page server in test/integration/arriving-restore.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage, expectedFileSha256, reportedSha256 } from '../../src/examples/test-function.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotManifest } from '../../src/snapshot/manifest.js';
import { WORKING_SET_MANIFEST_PATH } from '../../src/snapshot/working-set-transfer.js';
import { exists } from '../../src/util/fs.js';
import { filesBelow, leakedSince, readHostResources } from '../helpers/leaks.js';
import { snapshotReady, startTestDaemon, waitFor, type TestDaemon } from '../helpers/daemon.js';
import { findRealFirecracker, guestUnavailable } from '../helpers/real-firecracker.js';
import { startS3Server } from '../helpers/s3-server.js';

async function unavailable(): Promise<string | undefined> {
  if (process.getuid?.() !== 0)
    return `needs root (netns, taps, userfaultfd): this process runs as uid ${process.getuid?.()}`;
  const real = await findRealFirecracker();
  if ('skip' in real) return real.skip;
  return guestUnavailable();
}

test('daemon on Firecracker: the first cold start of a remote snapshot with chunk digests and a working set is served before its memory file has arrived; the snapshot is then published here, verified', async (t) => {
  const missing = await unavailable();
  if (missing) return t.skip(missing);
  const real = await findRealFirecracker();
  if ('skip' in real) return t.skip(real.skip);
  const before = await readHostResources();
  const s3 = await startS3Server();
  const work = await mkdtemp(join(tmpdir(), 'embers-early-daemons-'));
  const env = s3.env();
  const args = ['--vmm', 'firecracker', '--firecracker-bin', real.binary];
  const daemons: TestDaemon[] = [];
  try {
    const image = await buildTestFunctionImage(join(work, 'fn'));
    const spec = { image, memoryMiB: 128, idleTimeoutSeconds: 600 };
    const a = await startTestDaemon({ home: join(work, 'a'), env, args });
    daemons.push(a);
    assert.equal((await a.api('PUT', '/v1/functions/early', spec)).status, 200);
    const first = await a.api('GET', '/v1/functions/early/invoke/cgi-bin/write?name=a.bin&size=20000&seed=a&sync=0');
    assert.equal(first.headers.get('x-embers-start'), 'boot', a.log());
    const id = await snapshotReady(a, 'early');
    // its working set is recorded (the page server's record mode) and pushed after it
    await waitFor(`the working set of ${id} in the store`, async () =>
      (await exists(s3.objectPath(`snapshots/${id}/${WORKING_SET_MANIFEST_PATH}`))) ? true : undefined,
    );
    const m = JSON.parse(await readFile(s3.objectPath(`snapshots/${id}/manifest.json`), 'utf8')) as SnapshotManifest;
    assert.ok(fileEntry(m, SNAPSHOT_FILES.memory)?.chunkSha256?.length, 'the memory file has chunk digests');
    assert.equal(await a.stop(), 0);

    const b = await startTestDaemon({ home: join(work, 'b'), env, args });
    daemons.push(b);
    assert.equal((await b.api('PUT', '/v1/functions/early', spec)).status, 200);
    const read = await b.api('GET', '/v1/functions/early/invoke/cgi-bin/read?name=a.bin');
    assert.equal(read.status, 200, `${read.text}\n${b.log()}`);
    assert.equal(read.headers.get('x-embers-start'), 'restore');
    assert.equal(reportedSha256(read.text), expectedFileSha256('a', 20000));
    assert.match(b.log(), new RegExp(`started before snapshot ${id} arrived`), 'an early start');
    await waitFor('the snapshot to arrive on node B', async () =>
      /arrived whole and verified/.test(b.log()) ? true : undefined,
    );
    const here = (await b.api('GET', '/v1/snapshots')).json.snapshots as { id: string }[];
    assert.deepEqual(
      here.map((s) => s.id),
      [id],
      'published in node B store',
    );
    assert.equal(await b.stop(), 0);
    // every file against its sha256 (and the memory file's chunks)
    const store = new LocalSnapshotStore(join(b.home, 'snapshots'));
    await store.verify(await store.get(id));
    for (const d of daemons) {
      assert.deepEqual(await filesBelow(join(d.home, 'instances')), []);
      assert.deepEqual(await filesBelow(join(d.home, 'daemon', 'owned')), []);
    }
    assert.deepEqual(await leakedSince(before), {}, 'host resources leaked');
  } finally {
    for (const d of daemons) await d.kill9();
    await s3.dispose();
    await rm(work, { recursive: true, force: true });
  }
});

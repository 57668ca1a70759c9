import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../src/examples/test-function.js';
import { EmbersNode } from '../src/node/node.js';
import { startS3Server } from '../test/helpers/s3-server.js';
import { benchRemoteTransfer } from './remote-transfer.js';
import { median, optionValue, printTable } from './table.js';

/**
 * Local restore vs remote restore to first response, side by side in one run: node A
 * snapshots the test function and uploads it to an S3-compatible server on loopback; node B
 * (its own home) restores it — remote: download + verify + rootfs + disk + clone, every
 * time (--cache-snapshots off); local: from its own store. Then transfer throughput of the
 * snapshot download vs one plain GET of the same bytes.
 */
export async function benchRemote(args: string[]): Promise<Record<string, unknown>> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  const repeats = optionValue(args, 'repeats', 3);
  const work = await mkdtemp(join(tmpdir(), 'embers-bench-remote-'));
  const s3 = await startS3Server();
  const quiet = { onProgress: () => undefined };
  const a = await EmbersNode.open({
    home: join(work, 'a'),
    netPoolSize: 2,
    snapshots: 'remote',
    s3: s3.storeOptions(),
    ...quiet,
  });
  const remoteB = await EmbersNode.open({
    home: join(work, 'b'),
    netPoolSize: 2,
    snapshots: 'remote',
    s3: s3.storeOptions(),
    cacheSnapshots: false,
    ...quiet,
  });
  const localB = await EmbersNode.open({ home: join(work, 'b'), netPoolSize: 2, snapshots: 'local', ...quiet });
  try {
    const image = await buildTestFunctionImage(join(work, 'fn'));
    await a.run({ image, vcpus: 1, memoryMiB: 256, port: 8080, env: [] }, { name: 'origin' });
    const snap = await a.snapshots.create('origin', { stop: true });
    const id = snap.manifest.id;
    const bytes = snap.manifest.files.reduce((n, f) => n + f.sizeBytes, 0);
    process.stdout.write(
      `remote: snapshot ${id}, ${(bytes / 1048576).toFixed(1)} MiB (memory file is sparse on disk), s3rver on loopback; ${repeats} repeats\n`,
    );

    const remote: number[] = [];
    const fetchMs: number[] = [];
    const local: number[] = [];
    for (let i = 0; i < repeats; i++) {
      await remoteB.settle();
      await remoteB.pool.fill();
      // remote: nothing of the snapshot on node B (dropped after each use)
      const r = await remoteB.snapshots.restore(id, { count: 1 });
      const rc = r.clones[0].record;
      remote.push(r.prepareMs + rc.timings.readyMs + (await remoteB.invoke(rc.name)).latencyMs);
      fetchMs.push(r.fetch?.ms ?? 0);
      await remoteB.stop(rc.name);
      // local: the snapshot already in node B's store (pulled once, outside the timing)
      await remoteB.snapshots.pull(id, { kind: 's3' });
      const l = await localB.snapshots.restore(id, { count: 1 });
      const lc = l.clones[0].record;
      local.push(l.prepareMs + lc.timings.readyMs + (await localB.invoke(lc.name)).latencyMs);
      await localB.stop(lc.name);
      await localB.snapshots.remove(id);
    }
    printTable(
      ['restore → first response', 'ms (median)', 'vs local'],
      [
        ['local (snapshot on this node)', median(local), 1],
        ['remote (download, verify, rootfs, disk)', median(remote), median(remote) / median(local)],
        ['  of which download + verify', median(fetchMs), median(fetchMs) / median(local)],
      ],
    );
    const transfer = await benchRemoteTransfer(args.filter((x) => x !== '--json'));
    return {
      bench: 'remote',
      snapshotBytes: bytes,
      localFirstResponseMs: local,
      remoteFirstResponseMs: remote,
      fetchMs,
      transfer,
    };
  } finally {
    await remoteB.down().catch(() => undefined);
    await localB.down().catch(() => undefined);
    await a.down().catch(() => undefined);
    await s3.dispose();
    await rm(work, { recursive: true, force: true });
  }
}

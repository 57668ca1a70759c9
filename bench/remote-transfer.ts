/**
 * Remote pull throughput: `S3SnapshotStore.pull` (parallel ranged GETs, journal, sha256 of every
 * file, atomic publish) against one plain GetObject of the same memory file streamed to disk,
 * from the same S3 server, side by side in one run (alternating which goes first).
 * By default the server is s3rver on loopback (test/helpers/s3-server.ts); pass `store` to
 * measure against another S3-compatible service.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { LocalSnapshotStore } from '../src/snapshot/local-store.js';
import { S3SnapshotStore, type S3StoreOptions } from '../src/snapshot/s3-store.js';
import { sha256File } from '../src/util/fs.js';
import { startS3Server } from '../test/helpers/s3-server.js';
import { MiB, makeSnapshot, tempDir } from '../test/helpers/snapshots.js';
import { median, optionValue, printTable } from './table.js';

export interface RemoteTransferBenchOptions {
  /** Size of the snapshot's memory file, in MiB. @default 64 */
  sizeMiB?: number;
  /** Range size of `pull`. @default 8 MiB */
  partSizeBytes?: number;
  /** Ranges in flight in `pull`. @default 4 */
  concurrency?: number;
  /** Measurements of each method (the median is reported). @default 3 */
  runs?: number;
  /** An S3-compatible service to use instead of a loopback s3rver (the bucket must exist). */
  store?: S3StoreOptions;
}

export interface TransferFigures {
  bytes: number;
  medianMs: number;
  mibPerSec: number;
  samplesMs: number[];
}

export interface RemoteTransferBenchResult {
  sizeMiB: number;
  partSizeBytes: number;
  concurrency: number;
  runs: number;
  endpoint: string;
  /** The whole snapshot through `pull` (manifest, every file, verification, publish). */
  pull: TransferFigures;
  /** The memory file alone through one GetObject, written to a file and fsynced. */
  getObject: TransferFigures;
  /** pull MiB/s ÷ GetObject MiB/s (> 1: pull is faster). */
  throughputRatio: number;
  /** For context: one sha256 pass over the memory file from the page cache (pull does one, GetObject none). */
  sha256Ms: number;
}

export async function measureRemoteTransfer(opts: RemoteTransferBenchOptions = {}): Promise<RemoteTransferBenchResult> {
  const sizeMiB = opts.sizeMiB ?? 64;
  const partSizeBytes = opts.partSizeBytes ?? 8 * MiB;
  const concurrency = opts.concurrency ?? 4;
  const runs = opts.runs ?? 3;
  const dir = await tempDir('bench-remote');
  const s3 = opts.store ? undefined : await startS3Server();
  const remote = new S3SnapshotStore(opts.store ?? s3!.storeOptions({ prefix: 'bench' }));
  try {
    const source = new LocalSnapshotStore(join(dir.path, 'source'));
    const m = await makeSnapshot(source, { memoryBytes: sizeMiB * MiB, deltaBytes: 4096, stateBytes: 64 * 1024 });
    await remote.push(source, m.id, { partSizeBytes: Math.max(partSizeBytes, 5 * MiB), concurrency });
    const memoryKey = remote.keyOf(m.id, 'memory.bin');

    const pullMs: number[] = [];
    const getMs: number[] = [];
    let pullBytes = 0;
    let getBytes = 0;
    const viaPull = async (i: number) => {
      const store = new LocalSnapshotStore(join(dir.path, `pull-${i}`));
      const t0 = performance.now();
      const r = await remote.pull(store, m.id, { partSizeBytes, concurrency });
      pullMs.push(performance.now() - t0);
      pullBytes = r.bytes;
      await rm(store.dir, { recursive: true, force: true });
    };
    const viaGet = async (i: number) => {
      const target = join(dir.path, `get-${i}`, 'memory.bin');
      await mkdir(join(dir.path, `get-${i}`), { recursive: true });
      const t0 = performance.now();
      const res = await remote.client.send(new GetObjectCommand({ Bucket: remote.config.bucket, Key: memoryKey }));
      await pipeline(res.Body as Readable, createWriteStream(target));
      const fh = await open(target, 'r');
      await fh.sync();
      await fh.close();
      getMs.push(performance.now() - t0);
      getBytes = (await stat(target)).size;
      await rm(join(dir.path, `get-${i}`), { recursive: true, force: true });
    };
    for (let i = 0; i < runs; i++) {
      if (i % 2 === 0) {
        await viaPull(i);
        await viaGet(i);
      } else {
        await viaGet(i);
        await viaPull(i);
      }
    }
    const figures = (bytes: number, samplesMs: number[]): TransferFigures => {
      const medianMs = median(samplesMs);
      return { bytes, medianMs, mibPerSec: bytes / MiB / (medianMs / 1000), samplesMs };
    };
    const pull = figures(pullBytes, pullMs);
    const getObject = figures(getBytes, getMs);
    const t0 = performance.now();
    await sha256File(join(source.pathOf(m.id), 'memory.bin'));
    const sha256Ms = performance.now() - t0;
    return {
      sizeMiB,
      partSizeBytes,
      concurrency,
      runs,
      endpoint: remote.endpoint,
      pull,
      getObject,
      throughputRatio: pull.mibPerSec / getObject.mibPerSec,
      sha256Ms,
    };
  } finally {
    remote.close();
    await s3?.dispose();
    await dir.dispose();
  }
}

/** `npm run bench -- remote-transfer [--size-mib N] [--part-mib N] [--concurrency N] [--runs N] [--json]` */
export async function benchRemoteTransfer(args: string[]): Promise<Record<string, unknown>> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const r = await measureRemoteTransfer({
    sizeMiB: optionValue(args, 'size-mib', 64),
    partSizeBytes: optionValue(args, 'part-mib', 8) * MiB,
    concurrency: optionValue(args, 'concurrency', 4),
    runs: optionValue(args, 'runs', 3),
  });
  printTable(
    ['method', 'MiB', 'median ms', 'MiB/s'],
    [
      [
        `pull (${r.concurrency} × ${r.partSizeBytes / MiB} MiB ranges, verified)`,
        r.pull.bytes / MiB,
        r.pull.medianMs,
        r.pull.mibPerSec,
      ],
      ['one GetObject (memory.bin)', r.getObject.bytes / MiB, r.getObject.medianMs, r.getObject.mibPerSec],
    ],
  );
  process.stdout.write(
    `pull / GetObject throughput: ${r.throughputRatio.toFixed(2)}× (${r.endpoint}); one sha256 pass over memory.bin: ${r.sha256Ms.toFixed(0)} ms\n`,
  );
  return { ...r };
}

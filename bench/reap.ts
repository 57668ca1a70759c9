/**
 * REAP working sets, `npm run bench -- reap [--repeats N] [--runs N] [--memory MiB] [--save-working-set DIR] [--only-a] [--json]`:
 * (a) QEMU restore to first response with the snapshot's memory file evicted from the page
 *     cache (posix_fadvise DONTNEED on that file), plain (the guest faults its memory in page by
 *     page through the private mapping) vs with the recorded working set prefetched (read in
 *     file order by 4 threads while QEMU starts, the VM resumed after it); alternated, so drift
 *     on a noisy host hits both; medians; and the working set's size against the memory's.
 * (b), (c): the Firecracker page server on its harness and remote early starts
 *     (bench/reap-pager.ts), on the same snapshot: its real memory file (copied out of the store
 *     before the node goes down) and the working set recorded from it in (a), so the ranges
 *     describe exactly these bytes. The QEMU recorder sees what the VM mapped, not in which
 *     order, so the harness's guest touches the working set in file order; --runs N repeats of each.
 */
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../src/examples/test-function.js';
import { EmbersNode } from '../src/node/node.js';
import { SNAPSHOT_FILES, fileEntry } from '../src/snapshot/manifest.js';
import { WORKING_SET_FILES } from '../src/memory/working-set.js';
import { WorkingSetStore } from '../src/snapshot/working-set-store.js';
import { run } from '../src/util/exec.js';
import { runPagerBench } from './reap-pager.js';
import { median, optionValue, printTable } from './table.js';

const MiB = 1024 * 1024;

export interface QemuReapResult {
  accelerator: string;
  memoryMiB: number;
  memoryFileBytes: number;
  /** Bytes of the memory file that are not zeros (its manifest's data map), when recorded. */
  memoryDataBytes: number | undefined;
  workingSetBytes: number;
  workingSetRanges: number;
  recordMs: number;
  residentAfterRecordBytes: number;
  plainFirstResponseMs: number[];
  prefetchFirstResponseMs: number[];
  prefetchMs: number[];
  prefetchWaitMs: number[];
}

/** The snapshot's memory file and the working set recorded from it, kept for (b) and (c). */
interface KeptSnapshot {
  dir: string;
  memoryFile: string;
  rangesPath: string;
  dataRanges: [number, number][] | undefined;
}

/** Part (a): QEMU, evicted memory file, plain vs working-set prefetch, to first response. */
export async function benchQemuReap(
  args: string[],
  keepIn?: string,
): Promise<QemuReapResult & { kept?: KeptSnapshot }> {
  const repeats = optionValue(args, 'repeats', 5);
  const memoryMiB = optionValue(args, 'memory', 256);
  const home = await mkdtemp(join(tmpdir(), 'embers-bench-reap-'));
  const node = await EmbersNode.open({
    home,
    vmm: 'qemu',
    netPoolSize: 2,
    onProgress: (m) => process.stderr.write(`${m}\n`),
  });
  try {
    const image = await buildTestFunctionImage(join(home, 'fn'));
    const accel = await node.driver.accelerator();
    process.stdout.write(
      `reap (a): QEMU under ${accel.accelerator}, ${memoryMiB} MiB guest, ${repeats} repeats each, memory file evicted before every restore\n`,
    );
    await node.run({ image, vcpus: 1, memoryMiB, port: 8080, env: [] }, { name: 'origin' });
    await node.invoke('origin');
    const snap = await node.snapshots.create('origin', { stop: true });
    const id = snap.manifest.id;
    const memory = fileEntry(snap.manifest, SNAPSHOT_FILES.memory)!;
    await node.snapshots.restore(id, { prefetch: 'off' }).then((r) => node.stop(r.clones[0].record.name)); // materialise the disk once
    const recorded = await node.snapshots.recordWorkingSet(id);
    const ws = recorded.manifest;
    const saveTo = optionString(args, 'save-working-set');
    if (saveTo) {
      // a real working set of the test function, e.g. for the page server's harness
      await mkdir(saveTo, { recursive: true });
      const dir = new WorkingSetStore(node.snapshots.store).dirOf(id);
      for (const f of ws.files) await copyFile(join(dir, f.name), join(saveTo, f.name));
      process.stdout.write(`working set saved to ${saveTo}\n`);
    }
    const rangesFile = ws.files.find((f) => f.name === 'workingset.ranges');
    const ranges = rangesFile ? (rangesFile.sizeBytes - 16) / 16 : 0;

    const plain: number[] = [];
    const prefetch: number[] = [];
    const prefetchMs: number[] = [];
    const waitMs: number[] = [];
    for (let i = 0; i < repeats; i++) {
      await node.settle();
      await node.pool.fill();
      const a = (await node.snapshots.restore(id, { prefetch: 'off', evictMemory: true })).clones[0].record;
      plain.push(a.timings.readyMs + (await node.invoke(a.name)).latencyMs);
      await node.stop(a.name);

      await node.settle();
      await node.pool.fill();
      const b = (await node.snapshots.restore(id, { prefetch: 'on', evictMemory: true })).clones[0].record;
      prefetch.push(b.timings.readyMs + (await node.invoke(b.name)).latencyMs);
      prefetchMs.push(b.timings.phases.prefetchMs ?? NaN);
      waitMs.push(b.timings.phases.prefetchWaitMs ?? NaN);
      await node.stop(b.name);
    }

    const wsBytes = ws.pages * ws.pageSize;
    const dataBytes = memory.dataRanges?.reduce((n, [, len]) => n + len, 0);
    let kept: KeptSnapshot | undefined;
    if (keepIn) {
      // a sparse copy (the file is mostly holes) of this snapshot's memory file, and its working set's ranges
      const memoryFile = join(keepIn, 'memory.bin');
      const rangesPath = join(keepIn, WORKING_SET_FILES.ranges);
      await run('cp', ['--sparse=always', join(node.snapshots.store.pathOf(id), SNAPSHOT_FILES.memory), memoryFile]);
      await copyFile(join(new WorkingSetStore(node.snapshots.store).dirOf(id), WORKING_SET_FILES.ranges), rangesPath);
      kept = { dir: keepIn, memoryFile, rangesPath, dataRanges: memory.dataRanges };
    }
    printTable(
      ['restore → first response (evicted)', 'p50 ms', 'min ms', 'max ms', 'speedup'],
      [
        ['plain (faults through the page cache)', median(plain), Math.min(...plain), Math.max(...plain), 1],
        [
          'working set prefetched',
          median(prefetch),
          Math.min(...prefetch),
          Math.max(...prefetch),
          median(plain) / median(prefetch),
        ],
      ],
    );
    process.stdout.write(
      `prefetch: ${median(prefetchMs).toFixed(1)} ms to read the working set (overlapping QEMU's start), the loaded VM waited ${median(waitMs).toFixed(1)} ms for it (p50)\n` +
        `working set: ${(wsBytes / MiB).toFixed(1)} MiB in ${ranges} ranges = ${((100 * wsBytes) / memory.sizeBytes).toFixed(1)}% of the ${(memory.sizeBytes / MiB).toFixed(0)} MiB memory file` +
        (dataBytes !== undefined
          ? ` (${((100 * wsBytes) / dataBytes).toFixed(1)}% of its ${(dataBytes / MiB).toFixed(1)} MiB of non-zero data)`
          : '') +
        `; recorded in ${recorded.ms} ms, in file order (pagemap shows what the VM mapped, not in which order)\n` +
        `page cache after the recording restore: ${(((recorded.residentPages ?? 0) * 4096) / MiB).toFixed(1)} MiB resident (mincore: the working set plus readahead around each fault)\n`,
    );
    return {
      accelerator: accel.accelerator,
      memoryMiB,
      memoryFileBytes: memory.sizeBytes,
      memoryDataBytes: dataBytes,
      workingSetBytes: wsBytes,
      workingSetRanges: ranges,
      recordMs: recorded.ms,
      residentAfterRecordBytes: (recorded.residentPages ?? 0) * 4096,
      plainFirstResponseMs: plain,
      prefetchFirstResponseMs: prefetch,
      prefetchMs,
      prefetchWaitMs: waitMs,
      kept,
    };
  } finally {
    await node.down().catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  }
}

export async function benchReap(args: string[]): Promise<Record<string, unknown>> {
  const onlyA = args.includes('--only-a');
  const keep = onlyA ? undefined : await mkdtemp(join(tmpdir(), 'embers-bench-reap-kept-'));
  try {
    const { kept, ...qemu } = await benchQemuReap(args, keep);
    if (!kept) return { bench: 'reap', qemu };
    const runs = optionValue(args, 'runs', 3);
    process.stdout.write(
      `\nreap (b), (c): the page server (native/uffd-handler.c) on its harness, this snapshot's memory file and the working set just recorded from it, ${runs} runs each\n`,
    );
    const pager = await runPagerBench({
      runs,
      real: { memoryFile: kept.memoryFile, rangesPath: kept.rangesPath, dataRanges: kept.dataRanges },
    });
    printTable(['what', 'figure', 'unit'], pager.rows);
    const { rows, ...figures } = pager;
    void rows;
    const a = median(qemu.plainFirstResponseMs) / median(qemu.prefetchFirstResponseMs);
    process.stdout.write(
      `\nreap summary: (a) QEMU evicted, plain / prefetch ${a.toFixed(2)}x (goal: >= 1); ` +
        `(b) page server, lazy / prefetch ${pager.ratio.toFixed(2)}x (goal: >= 3, ${pager.ratio >= 3 ? 'met' : 'NOT met'}); ` +
        `(c) remote start, whole / working set first ${pager.remoteRatio.toFixed(2)}x, ${(pager.remoteWsFirstBytes / MiB).toFixed(1)} MiB fetched by the start ` +
        `(goal: <= working set + one chunk = ${(pager.remoteGoalBytes / MiB).toFixed(1)} MiB, ${pager.remoteWsFirstBytes <= pager.remoteGoalBytes ? 'met' : 'NOT met'}); ` +
        `working set ${(pager.workingSetBytes / MiB).toFixed(1)} MiB of ${(pager.memoryBytes / MiB).toFixed(0)} MiB memory (${((100 * pager.workingSetBytes) / pager.memoryBytes).toFixed(1)}%)\n`,
    );
    return { bench: 'reap', qemu, pager: figures };
  } finally {
    if (keep) await rm(keep, { recursive: true, force: true });
  }
}

function optionString(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

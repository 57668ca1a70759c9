/**
 * REAP working sets, `npm run bench -- reap [--repeats N] [--memory MiB] [--save-working-set DIR] [--only-a] [--json]`:
 * (a) QEMU restore to first response with the snapshot's memory file evicted from the page
 *     cache (posix_fadvise DONTNEED on that file), plain (the guest faults its memory in page by
 *     page through the private mapping) vs with the recorded working set prefetched (read in
 *     file order by 4 threads while QEMU starts, the VM resumed after it); alternated, so drift
 *     on a noisy host hits both; medians; and the working set's size against the memory's.
 * (b), (c): the Firecracker page server on its harness and remote early starts, in
 *     bench/reap-pager.ts (owned with native/uffd-handler.c), run from here when present.
 */
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../src/examples/test-function.js';
import { EmbersNode } from '../src/node/node.js';
import { SNAPSHOT_FILES, fileEntry } from '../src/snapshot/manifest.js';
import { WorkingSetStore } from '../src/snapshot/working-set-store.js';
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

/** Part (a): QEMU, evicted memory file, plain vs working-set prefetch, to first response. */
export async function benchQemuReap(args: string[]): Promise<QemuReapResult> {
  const repeats = optionValue(args, 'repeats', 5);
  const memoryMiB = optionValue(args, 'memory', 256);
  const home = await mkdtemp(join(tmpdir(), 'embers-bench-reap-'));
  const node = await EmbersNode.open({ home, vmm: 'qemu', netPoolSize: 2, onProgress: (m) => process.stderr.write(`${m}\n`) });
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
    printTable(
      ['restore → first response (evicted)', 'p50 ms', 'min ms', 'max ms', 'speedup'],
      [
        ['plain (faults through the page cache)', median(plain), Math.min(...plain), Math.max(...plain), 1],
        ['working set prefetched', median(prefetch), Math.min(...prefetch), Math.max(...prefetch), median(plain) / median(prefetch)],
      ],
    );
    process.stdout.write(
      `prefetch: ${median(prefetchMs).toFixed(1)} ms to read the working set (overlapping QEMU's start), the loaded VM waited ${median(waitMs).toFixed(1)} ms for it (p50)\n` +
        `working set: ${(wsBytes / MiB).toFixed(1)} MiB in ${ranges} ranges = ${((100 * wsBytes) / memory.sizeBytes).toFixed(1)}% of the ${(memory.sizeBytes / MiB).toFixed(0)} MiB memory file` +
        (dataBytes !== undefined ? ` (${((100 * wsBytes) / dataBytes).toFixed(1)}% of its ${(dataBytes / MiB).toFixed(1)} MiB of non-zero data)` : '') +
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
    };
  } finally {
    await node.down().catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  }
}

/** Parts (b) and (c) live in bench/reap-pager.ts, when that file is part of the build. */
async function pagerParts(args: string[]): Promise<Record<string, unknown> | undefined> {
  const path = './reap-pager.js'; // not a literal import: this builds without that file
  const mod = (await import(path).catch(() => undefined)) as { benchReapPager?: (args: string[]) => Promise<Record<string, unknown>> } | undefined;
  if (!mod?.benchReapPager) {
    process.stdout.write('(b),(c): see bench reap-pager\n');
    return undefined;
  }
  return mod.benchReapPager(args);
}

export async function benchReap(args: string[]): Promise<Record<string, unknown>> {
  const only = args.includes('--only-a') ? 'a' : undefined;
  const qemu = await benchQemuReap(args);
  const pager = only ? undefined : await pagerParts(args);
  return { bench: 'reap', qemu, pager };
}

function optionString(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

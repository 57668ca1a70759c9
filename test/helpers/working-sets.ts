/**
 * A real working set, for tests and harnesses that need one (the Firecracker page server's
 * harness replays it): the test function booted under QEMU, snapshotted, restored with its
 * memory file out of the page cache, asked its first request, and the pages that restore read
 * recorded (snapshot record-ws). Takes a QEMU boot and two restores: an e2e-tier helper.
 * A recorded one is also kept as a fixture: test/fixtures/test-function-256m.workingset.ranges
 * (the test function in a 256 MiB guest under TCG, 2026-12-02: 4937 pages, 19.3 MiB, in 103
 * ranges, file order; from `npm run bench -- reap --save-working-set DIR`).
 */
import { cp, mkdir, readFile } from 'node:fs/promises';
import { run } from '../../src/util/exec.js';
import { join } from 'node:path';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import { WORKING_SET_FILES, parseWorkingSetRanges, type WorkingSetRanges } from '../../src/memory/working-set.js';
import { SNAPSHOT_FILES } from '../../src/snapshot/manifest.js';
import { WorkingSetStore } from '../../src/snapshot/working-set-store.js';
import { openTestNode } from './node.js';

export interface RecordedWorkingSet {
  /** The snapshot's guest memory file (a sparse copy). */
  memoryFile: string;
  /** `workingset.ranges` and `workingset.pages` as recorded (WS-FORMAT). */
  rangesFile: string;
  pagesFile: string;
  ranges: WorkingSetRanges;
  memoryBytes: number;
}

/**
 * Records the test function's working set on a throwaway node and copies the memory file and
 * the working-set files into `outDir` (the node is closed, with its leak checks, before this
 * returns).
 */
export async function recordTestFunctionWorkingSet(
  outDir: string,
  opts: { memoryMiB?: number } = {},
): Promise<RecordedWorkingSet> {
  await mkdir(outDir, { recursive: true });
  const t = await openTestNode({ vmm: 'qemu' });
  try {
    const image = await buildTestFunctionImage(join(t.home, 'fn'));
    await t.node.run({ image, vcpus: 1, memoryMiB: opts.memoryMiB ?? 128, port: 8080, env: [] }, { name: 'origin' });
    await t.node.invoke('origin', { path: '/' });
    const snap = await t.node.snapshots.create('origin', { stop: true });
    const id = snap.manifest.id;
    const r = await t.node.snapshots.recordWorkingSet(id);
    const sets = new WorkingSetStore(t.node.snapshots.store);
    const out = {
      memoryFile: join(outDir, SNAPSHOT_FILES.memory),
      rangesFile: join(outDir, WORKING_SET_FILES.ranges),
      pagesFile: join(outDir, WORKING_SET_FILES.pages),
    };
    await run('cp', [
      '--sparse=always',
      join(t.node.snapshots.store.pathOf(id), SNAPSHOT_FILES.memory),
      out.memoryFile,
    ]);
    await cp(join(sets.dirOf(id), WORKING_SET_FILES.ranges), out.rangesFile);
    await cp(join(sets.dirOf(id), WORKING_SET_FILES.pages), out.pagesFile);
    const ranges = parseWorkingSetRanges(await readFile(out.rangesFile), out.rangesFile, {
      memoryBytes: r.memoryBytes,
    });
    return { ...out, ranges, memoryBytes: r.memoryBytes };
  } finally {
    await t.close();
  }
}

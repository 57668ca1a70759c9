import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbersNode } from '../src/node/node.js';
import { buildTestFunctionImage } from '../src/examples/test-function.js';
import { median, optionValue, printTable } from './table.js';

/** Proportional and resident memory of a process, in KiB (smaps_rollup). */
async function memoryOf(pid: number): Promise<{ pssKiB: number; rssKiB: number }> {
  const text = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { pssKiB: field('Pss'), rssKiB: field('Rss') };
}

/**
 * Cold boot vs restore, to first response, side by side in one run on one node:
 * - cold boots (each from the cached rootfs, pooled slot) vs single restores;
 * - 1 vs N concurrent clones;
 * - restores with the slot pool pre-filled vs with no pool (slots made on the restore path);
 * - host memory: a cold-booted VM's PSS vs each restored clone's PSS (clones share the
 *   snapshot's memory file in the page cache).
 */
export async function benchRestore(args: string[]): Promise<Record<string, unknown>> {
  const repeats = optionValue(args, 'repeats', 3);
  const clones = optionValue(args, 'clones', 4);
  const home = await mkdtemp(join(tmpdir(), 'embers-bench-restore-'));
  const node = await EmbersNode.open({
    home,
    netPoolSize: clones + 1,
    onProgress: (m) => process.stderr.write(`${m}\n`),
  });
  const fn = { vcpus: 1, memoryMiB: 256, port: 8080, env: [] as string[] };
  try {
    const image = await buildTestFunctionImage(join(home, 'fn'));
    await node.settle();
    await node.pool.fill();
    const accel = await node.driver.accelerator();
    process.stdout.write(
      `restore: ${node.driver.kind} under ${accel.accelerator}; ${repeats} repeats, ${clones} concurrent clones, 256 MiB guests\n`,
    );

    // cold boots
    const cold: number[] = [];
    let coldPss = 0;
    let origin = '';
    for (let i = 0; i < repeats; i++) {
      const rec = await node.run({ ...fn, image }, { name: `cold-${i}` });
      const res = await node.invoke(rec.name);
      cold.push(rec.timings.readyMs + res.latencyMs);
      if (i === repeats - 1) {
        origin = rec.name;
        coldPss = (await memoryOf(rec.vm.pid)).pssKiB;
      } else await node.stop(rec.name);
    }
    const snap = await node.snapshots.create(origin, { stop: true });
    const id = snap.manifest.id;
    await node.snapshots.restore(id, { count: 1 }).then((r) => node.stop(r.clones[0].record.name)); // materialise the disk once

    // N concurrent restores, pool on
    await node.settle();
    await node.pool.fill();
    const t0 = performance.now();
    const many = await node.snapshots.restore(id, { count: clones });
    const concurrent: number[] = [];
    const concurrentFixupMs = many.clones.map((c) => c.record.timings.phases.fixupMs ?? 0);
    const concurrentReadyMs = many.clones.map((c) => c.record.timings.readyMs);
    for (const c of many.clones)
      concurrent.push(c.record.timings.readyMs + (await node.invoke(c.record.name)).latencyMs);
    const allReadyMs = performance.now() - t0;
    const clonePss: number[] = [];
    const cloneRss: number[] = [];
    for (const c of many.clones) {
      const m = await memoryOf(c.record.vm.pid);
      clonePss.push(m.pssKiB);
      cloneRss.push(m.rssKiB);
    }
    for (const c of many.clones) await node.stop(c.record.name);

    // single restores, pool on and pool off alternately (so drift on a noisy host hits both):
    // pool off = the slot is created on the restore path, as a node without a pool would
    const noPool = await EmbersNode.open({ home, netPoolSize: 0 });
    const single: number[] = [];
    // the restore fix-ups (guest clock, entropy, restore hook): their phase, and restore-to-ready
    // with them vs without them, alternately (under TCG the first work after a restore also
    // pays for translating the guest's code again, so the phase alone overstates their cost)
    const fixupMs: number[] = [];
    const singleReadyMs: number[] = [];
    const noFixupReadyMs: number[] = [];
    const unpooled: number[] = [];
    const slotMs: number[] = [];
    for (let i = 0; i < repeats; i++) {
      await node.settle();
      await node.pool.fill();
      const on = (await node.snapshots.restore(id, { count: 1 })).clones[0].record;
      single.push(on.timings.readyMs + (await node.invoke(on.name)).latencyMs);
      fixupMs.push(on.timings.phases.fixupMs ?? 0);
      singleReadyMs.push(on.timings.readyMs);
      await node.stop(on.name);

      await node.settle();
      await node.pool.fill();
      const bare = (await node.snapshots.restore(id, { count: 1, skipFixups: true })).clones[0].record;
      noFixupReadyMs.push(bare.timings.readyMs);
      await node.stop(bare.name);

      await node.settle(); // node's background refill must not race the teardown
      await noPool.pool.teardown();
      const off = (await noPool.snapshots.restore(id, { count: 1 })).clones[0].record;
      unpooled.push(off.timings.readyMs + (await noPool.invoke(off.name)).latencyMs);
      slotMs.push(off.timings.phases.slotMs ?? 0);
      await noPool.stop(off.name);
    }

    const rows = [
      ['cold boot → first response', median(cold), 1],
      ['restore (1 clone, pool on)', median(single), median(cold) / median(single)],
      [`restore (${clones} concurrent, median)`, median(concurrent), median(cold) / median(concurrent)],
      [`restore (${clones} concurrent, all ready)`, allReadyMs, median(cold) / allReadyMs],
      ['restore (1 clone, pool off)', median(unpooled), median(cold) / median(unpooled)],
    ];
    printTable(['what', 'ms', 'speedup vs cold'], rows as (string | number)[][]);
    process.stdout.write(
      `pool off vs on: ${(median(unpooled) / median(single)).toFixed(2)}× slower (slot creation on the path: ${median(slotMs).toFixed(1)} ms)\n` +
        `memory: cold-booted VM PSS ${(coldPss / 1024).toFixed(1)} MiB; restored clone PSS median ${(median(clonePss) / 1024).toFixed(1)} MiB, RSS ${(median(cloneRss) / 1024).toFixed(1)} MiB ` +
        `(${(coldPss / median(clonePss)).toFixed(2)}× less per extra clone)\n` +
        `fix-up phase (guest clock, entropy, restore hook, through the guest agent): 1 clone median ${median(fixupMs).toFixed(1)} ms of ` +
        `${median(singleReadyMs).toFixed(1)} ms restore-to-ready (${((100 * median(fixupMs)) / median(singleReadyMs)).toFixed(1)}%); ` +
        `${clones} concurrent median ${median(concurrentFixupMs).toFixed(1)} ms of ${median(concurrentReadyMs).toFixed(1)} ms ` +
        `(${((100 * median(concurrentFixupMs)) / median(concurrentReadyMs)).toFixed(1)}%)\n` +
        `restore-to-ready with fix-ups ${median(singleReadyMs).toFixed(1)} ms vs without ${median(noFixupReadyMs).toFixed(1)} ms: ` +
        `the fix-ups add ${(median(singleReadyMs) - median(noFixupReadyMs)).toFixed(1)} ms ` +
        `(${((100 * (median(singleReadyMs) - median(noFixupReadyMs))) / median(singleReadyMs)).toFixed(1)}% of restore time; target < 5%)\n`,
    );
    return {
      bench: 'restore',
      accelerator: accel.accelerator,
      coldFirstResponseMs: cold,
      restoreFirstResponseMs: single,
      concurrent: { clones, firstResponseMs: concurrent, allReadyMs },
      unpooledFirstResponseMs: unpooled,
      fixup: { singleMs: fixupMs, singleReadyMs, noFixupReadyMs, concurrentMs: concurrentFixupMs, concurrentReadyMs },
      memory: { coldPssKiB: coldPss, clonePssKiB: clonePss, cloneRssKiB: cloneRss },
    };
  } finally {
    await node.down().catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  }
}

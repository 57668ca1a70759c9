import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { EmbersError } from '../errors.js';
import { EmbersNode, type NodeOptions } from '../node/node.js';
import { buildTestFunctionImage, expectedFileSha256 } from '../examples/test-function.js';
import type { Output } from './output.js';
import { runLifecycleDemo } from './demo-lifecycle.js';
import { mib, roundMs } from '../util/format.js';
import { fileEntry, SNAPSHOT_FILES } from '../snapshot/manifest.js';

/**
 * The main job, end to end on this host: boot the example function from its OCI image,
 * call it, make it write a file, snapshot it, restore N clones concurrently, call each and
 * check the file, stop everything. Prints the latencies; with --json, one JSON object last.
 */
export async function runDemo(opts: NodeOptions, out: Output, o: { clones: number }): Promise<number> {
  const node = await EmbersNode.open(opts);
  const say = (m: string) => out.progress(m);
  const started: string[] = [];
  let snapshotId: string | undefined;
  let result: Record<string, unknown> = {};
  let ok = false;
  const imageDir = join(node.config.home, 'examples', 'test-function');
  try {
    // the boot and every clone each need a network slot: refused before anything starts
    const room = await node.pool.room();
    if (o.clones + 1 > room) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        {
          option: 'demo --clones',
          value: o.clones,
          problem: `needs ${o.clones + 1} network slots (clone IPs: the boot and ${o.clones} clones), this node has ${room} free`,
          room,
        },
        {
          hint: `pass --clones ${Math.max(1, room - 1)} or less, or stop instances you no longer need (\`embers ps\` lists them)`,
        },
      );
    }
    await buildTestFunctionImage(imageDir);
    await node.guestKit();
    const accel = await node.driver.accelerator();
    say(`accelerator: ${accel.accelerator} (${accel.reason})`);

    say('cold boot: image → rootfs → slot → disk → VMM → function answers …');
    const rec = await node.run(
      { image: imageDir, vcpus: 1, memoryMiB: 256, port: 8080, env: [] },
      { name: `demo-${randomBytes(2).toString('hex')}` },
    );
    started.push(rec.name);
    const first = await node.invoke(rec.name, { path: '/' });
    const coldBoot = {
      readyMs: rec.timings.readyMs,
      firstResponseMs: roundMs(rec.timings.readyMs + first.latencyMs),
      phases: rec.timings.phases,
    };
    say(
      `  ${rec.name} answered "${first.body.trim()}" — ready ${coldBoot.readyMs} ms, first response ${coldBoot.firstResponseMs} ms`,
    );

    // state that must survive: a file written (left in the guest's page cache) before the snapshot
    const seed = `demo-${rec.name}`;
    const size = 256 * 1024;
    const wrote = await node.invoke(rec.name, {
      path: `/cgi-bin/write?name=demo.bin&size=${size}&seed=${seed}&sync=0`,
    });
    const expected = expectedFileSha256(seed, size);

    await node.settle(); // the slot pool refills in the background, off the start path

    say('snapshot: pause → state + memory → disk delta → resume → publish …');
    const snap = await node.snapshots.create(rec.name);
    snapshotId = snap.manifest.id;
    const memoryBytes = fileEntry(snap.manifest, SNAPSHOT_FILES.memory)?.sizeBytes ?? 0;
    const deltaBytes = fileEntry(snap.manifest, SNAPSHOT_FILES.blockDelta)?.sizeBytes ?? 0;
    say(
      `  ${snapshotId}: ${snap.timings.createMs} ms (paused ${snap.timings.pausedMs} ms), memory file ${mib(memoryBytes)}, disk delta ${mib(deltaBytes)}`,
    );

    say(`restore: ${o.clones} clones concurrently from one snapshot …`);
    const restored = await node.snapshots.restore(snapshotId, { count: o.clones });
    const restores = [];
    for (const c of restored.clones) {
      started.push(c.record.name);
      const res = await node.invoke(c.record.name, { path: '/cgi-bin/read?name=demo.bin' });
      const fileOk = res.body.startsWith(expected) && wrote.body.startsWith(expected);
      const entry = {
        name: c.record.name,
        readyMs: c.record.timings.readyMs,
        firstResponseMs: roundMs(c.record.timings.readyMs + res.latencyMs),
        diskVerified: c.diskVerified,
        fileIntact: fileOk,
      };
      restores.push(entry);
      say(
        `  ${entry.name}: ready ${entry.readyMs} ms, first response ${entry.firstResponseMs} ms, disk verified ${entry.diskVerified}, file written before the snapshot ${fileOk ? 'intact' : 'WRONG'}`,
      );
    }
    const speedup = roundMs(coldBoot.firstResponseMs / median(restores.map((r) => r.firstResponseMs)));
    say(
      `restore is ${speedup}× faster than a cold boot to first response (median of ${restores.length} clones, restored concurrently)`,
    );
    result = {
      accelerator: accel.accelerator,
      vmm: node.driver.kind,
      coldBoot,
      snapshot: {
        id: snapshotId,
        createMs: snap.timings.createMs,
        pausedMs: snap.timings.pausedMs,
        memoryBytes,
        deltaBytes,
      },
      restorePrepareMs: restored.prepareMs,
      restores,
      speedupFirstResponse: speedup,
    };
    ok = restores.every((r) => r.fileIntact && r.diskVerified);
  } finally {
    for (const name of started) await node.stop(name).catch(() => undefined);
    if (snapshotId) await node.snapshots.remove(snapshotId).catch(() => undefined);
    await node.downIfIdle().catch(() => undefined);
  }
  const lifecycle = await runLifecycleDemo(opts, imageDir, say);
  const rows = [
    ['first invoke (boot)', lifecycle.firstInvoke.firstByteMs],
    ['invoke after scale to zero (restore)', lifecycle.restoreInvoke.firstByteMs],
    [`burst of ${lifecycle.burst.n} first requests (fan-out), all answered`, lifecycle.burst.allAnsweredMs],
  ] as const;
  say(`\n${'through the daemon'.padEnd(52)}first byte ms\n${rows.map(([k, v]) => `${k.padEnd(52)}${v}`).join('\n')}`);
  say(`restore is ${lifecycle.speedupFirstByte}× faster than boot to first byte, through the daemon`);
  out.result('', { ...result, lifecycle });
  return ok && lifecycle.restoreInvoke.fileIntact && lifecycle.restoreInvoke.start === 'restore' ? 0 : 1;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

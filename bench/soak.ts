/**
 * The soak: `npm run soak -- [--restores N] [--nodes 1|2] [--wave W] [--fsck-every K] [--json]`.
 *
 * Node A boots the test function, writes files (synced and unsynced), snapshots it (remote
 * mode: the snapshot is also uploaded to an S3-compatible server on loopback, the test server
 * of test/helpers/s3-server.ts) and serves its store as a peer. Then each node restores N
 * clones, the first half one by one and the rest in concurrent waves of W: node A from its own
 * store, node B (a second home on this machine, snapshots not cached) by downloading every
 * time, alternating S3 and the peer. Each clone:
 *   - drops its page cache (so that reads come from its disk);
 *   - re-reads every file written before the snapshot and checks its sha256;
 *   - writes, renames and deletes more (synced and not);
 *   - drops its caches again and checks the whole listing of its /data;
 *   - stops. Every K-th clone is stopped first alone, its disk copied and the copy checked
 *     offline with `e2fsck -fn` (the copy is removed afterwards).
 * At the end everything is stopped and the host is compared with the reading taken before:
 * processes, netns, links, nft tables, loop devices, mounts (test/helpers/leaks.ts, the same
 * check the tests use) and the files left in the homes' tmp and instances dirs.
 *
 * Prints `{restores, corrupt, failed, fsckChecked, fsckErrors, leaked, p50RestoreMs,
 * p95RestoreMs}` (and per-node figures); with --json one JSON object last on stdout.
 * A restore's time is from the restore call to the clone's first answer (prepare + ready).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildTestFunctionImage, expectedSha256, reportedSha256 } from '../src/examples/test-function.js';
import { EmbersNode } from '../src/node/node.js';
import type { SnapshotSource } from '../src/node/remote.js';
import { startPeerServer } from '../src/snapshot/peer-server.js';
import { run } from '../src/util/exec.js';
import { filesBelow, leakedSince, readHostResources } from '../test/helpers/leaks.js';
import { startS3Server } from '../test/helpers/s3-server.js';
import { fmt, optionValue, printTable } from './table.js';

export interface SoakOptions {
  /** Clones restored on each node. @default 20 */
  restoresPerNode?: number;
  /** 1: only the node that made the snapshot; 2: also a second node that downloads it. @default 2 */
  nodes?: 1 | 2;
  /** Clones per concurrent wave (the second half of each node's restores). @default 4 */
  wave?: number;
  /** Every K-th clone of a node (the first included) has its disk kept and checked with e2fsck. @default 5 */
  fsckEvery?: number;
  /** Guest memory of the function. @default 128 */
  memoryMiB?: number;
  /** A line per step (default: stderr). */
  log?: (line: string) => void;
}

export interface SoakNodeFigures {
  node: string;
  restores: number;
  /** How the snapshot reached the node: 'local', 's3', 'peer', with the count of restores each. */
  sources: Record<string, number>;
  p50RestoreMs: number;
  p95RestoreMs: number;
}

export interface SoakResult {
  restores: number;
  /** Clones whose files did not read back as written (a wrong sha256, a file missing or extra). */
  corrupt: number;
  /** Restores or checks that failed with an error (not a wrong answer). */
  failed: number;
  fsckChecked: number;
  fsckErrors: number;
  /** Host resources and home files left behind once everything stopped. */
  leaked: number;
  p50RestoreMs: number;
  p95RestoreMs: number;
  wallMs: number;
  perNode: SoakNodeFigures[];
  /** What went wrong, first 50 (empty on a clean run). */
  problems: string[];
  leaks: Record<string, string[]>;
}

/** A file the function holds in /data: the seed and size it was written with. */
interface DataFile {
  seed: string;
  size: number;
}

/** Written before the snapshot: the synced ones first, so the last ones stay dirty in the page cache. */
const BEFORE_SNAPSHOT: { name: string; size: number; sync: boolean }[] = [
  { name: 'synced-0.bin', size: 400_000, sync: true },
  { name: 'synced-1.bin', size: 70_001, sync: true },
  { name: 'unsynced-0.bin', size: 250_000, sync: false },
  { name: 'unsynced-1.bin', size: 4_097, sync: false },
  { name: 'unsynced-2.bin', size: 0, sync: false },
];

export async function runSoak(opts: SoakOptions = {}): Promise<SoakResult> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
  const perNode = opts.restoresPerNode ?? 20;
  const nodeCount = opts.nodes ?? 2;
  const wave = opts.wave ?? 4;
  const fsckEvery = opts.fsckEvery ?? 5;
  const memoryMiB = opts.memoryMiB ?? 128;
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const t0 = performance.now();

  const problems: string[] = [];
  const problem = (msg: string) => {
    if (problems.length < 50) problems.push(msg);
    log(`soak: PROBLEM ${msg}`);
  };
  let corrupt = 0;
  let failed = 0;
  let fsckChecked = 0;
  let fsckErrors = 0;
  const restoreMs: number[] = [];
  const figures: SoakNodeFigures[] = [];

  const before = await readHostResources();
  const work = await mkdtemp(join(tmpdir(), 'embers-soak-'));
  const kept = join(work, 'kept-disks');
  await mkdir(kept);
  const s3 = await startS3Server();
  const quiet = { onProgress: () => undefined };
  const nodes: EmbersNode[] = [];
  const homes: { tmp: string; instances: string }[] = [];
  const open = async (name: string, extra: { cacheSnapshots?: boolean }) => {
    const node = await EmbersNode.open({
      home: join(work, name),
      netPoolSize: wave,
      snapshots: 'remote',
      s3: s3.storeOptions(),
      ...extra,
      ...quiet,
    });
    nodes.push(node);
    homes.push({ tmp: node.config.paths.tmp, instances: node.config.paths.instances });
    return node;
  };
  let peer: Awaited<ReturnType<typeof startPeerServer>> | undefined;
  let leaks: Record<string, string[]> = {};
  try {
    const image = await buildTestFunctionImage(join(work, 'fn'));
    const a = await open('a', {});
    await a.run({ image, vcpus: 1, memoryMiB, port: 8080, env: [] }, { name: 'origin' });
    const files = new Map<string, DataFile>();
    for (const f of BEFORE_SNAPSHOT) {
      const seed = `before-${f.name.replace(/\W/g, '')}`;
      const answer = await a.invoke('origin', {
        path: `/cgi-bin/write?name=${f.name}&size=${f.size}&seed=${seed}&sync=${f.sync ? 1 : 0}`,
      });
      if (reportedSha256(answer.body) !== expectedSha256(seed, f.size))
        throw new Error(`the origin wrote ${f.name} wrong: ${answer.body}`);
      files.set(f.name, { seed, size: f.size });
    }
    const snap = await a.snapshots.create('origin', { stop: true });
    const id = snap.manifest.id;
    log(
      `soak: snapshot ${id} made on node A and uploaded; ${perNode} restores per node on ${nodeCount} node(s), waves of ${wave}`,
    );
    const token = randomBytes(16).toString('hex');
    peer = await startPeerServer({ store: a.snapshots.store, token });

    const plans: { label: string; node: EmbersNode; source: (i: number) => SnapshotSource }[] = [
      { label: 'A', node: a, source: () => ({ kind: 'local' }) },
    ];
    if (nodeCount === 2) {
      const b = await open('b', { cacheSnapshots: false });
      const peerSource: SnapshotSource = { kind: 'peer', url: peer.url, token };
      plans.push({ label: 'B', node: b, source: (i) => (i % 2 === 0 ? { kind: 's3' } : peerSource) });
    }

    for (const plan of plans) {
      const { node, label } = plan;
      const nodeMs: number[] = [];
      const sources: Record<string, number> = {};
      // the restore batches: half one by one, the rest in waves
      const batches: number[] = [];
      const single = Math.ceil(perNode / 2);
      for (let i = 0; i < single; i++) batches.push(1);
      for (let left = perNode - single; left > 0; left -= wave) batches.push(Math.min(wave, left));
      let index = 0;
      for (const [b, count] of batches.entries()) {
        const source = plan.source(b);
        const first = index;
        index += count;
        let restored;
        try {
          restored = await node.snapshots.restore(id, { count, source });
        } catch (err) {
          failed += count;
          problem(`node ${label}: restoring ${count} clone(s) from ${source.kind} failed: ${errText(err)}`);
          continue;
        }
        sources[source.kind] = (sources[source.kind] ?? 0) + count;
        await Promise.all(
          restored.clones.map(async (clone, k) => {
            const name = clone.record.name;
            const n = first + k;
            const ms = restored.prepareMs + clone.record.timings.readyMs;
            restoreMs.push(ms);
            nodeMs.push(ms);
            try {
              const wrong = await exerciseClone(node, name, files);
              if (wrong.length) {
                corrupt++;
                problem(`node ${label} clone ${n} (${name}, ${source.kind}): ${wrong.join('; ')}`);
              }
            } catch (err) {
              failed++;
              problem(`node ${label} clone ${n} (${name}, ${source.kind}): ${errText(err)}`);
            }
            try {
              if (n % fsckEvery === 0) {
                const rec = await node.instances.get(name);
                await node.driver.stop(rec.vm);
                await run('cp', ['--sparse=always', rec.diskPath, join(kept, `${label}-${n}.img`)]);
              }
              await node.stop(name);
            } catch (err) {
              failed++;
              problem(`node ${label} clone ${n} (${name}): stopping failed: ${errText(err)}`);
            }
            log(
              `soak: node ${label} clone ${n + 1}/${perNode} (${source.kind}, wave of ${count}) restored in ${fmt(ms)} ms, checked`,
            );
          }),
        );
      }
      figures.push({
        node: label,
        restores: nodeMs.length,
        sources,
        p50RestoreMs: percentile(nodeMs, 50),
        p95RestoreMs: percentile(nodeMs, 95),
      });
    }

    // offline: the kept disks, read-only, one at a time (each copy removed once checked)
    for (const disk of (await filesBelow(kept)).sort()) {
      const path = join(kept, disk);
      const fsck = await run('e2fsck', ['-fn', path], { okCodes: [1, 2, 4, 8, 12] });
      fsckChecked++;
      if (fsck.code !== 0) {
        fsckErrors++;
        problem(`e2fsck -fn ${disk}: exit ${fsck.code}\n${fsck.stdout.slice(-2000)}${fsck.stderr.slice(-500)}`);
      }
      await rm(path, { force: true });
    }
  } finally {
    await peer?.close();
    for (const node of nodes) await node.down().catch((err: unknown) => problem(`node down: ${errText(err)}`));
    for (const home of homes) {
      for (const [what, dir] of Object.entries(home)) {
        const left = await filesBelow(dir);
        if (left.length) leaks[`home ${what}`] = [...(leaks[`home ${what}`] ?? []), ...left.map((f) => join(dir, f))];
      }
    }
    await s3.dispose();
    await rm(work, { recursive: true, force: true });
  }
  leaks = { ...leaks, ...(await leakedSince(before)) };
  const leaked = Object.values(leaks).reduce((n, xs) => n + xs.length, 0);
  if (leaked) problem(`left behind: ${JSON.stringify(leaks)}`);
  return {
    restores: restoreMs.length,
    corrupt,
    failed,
    fsckChecked,
    fsckErrors,
    leaked,
    p50RestoreMs: percentile(restoreMs, 50),
    p95RestoreMs: percentile(restoreMs, 95),
    wallMs: Math.round(performance.now() - t0),
    perNode: figures,
    problems,
    leaks,
  };
}

/**
 * One clone's round: drop caches, check every file, write/rename/delete, drop caches, check the
 * whole listing. Returns what read back wrong (empty when all is well); throws on errors.
 */
async function exerciseClone(node: EmbersNode, name: string, before: Map<string, DataFile>): Promise<string[]> {
  const wrong: string[] = [];
  const call = async (path: string, expectStatus = 200) => {
    const res = await node.invoke(name, { path });
    if (res.status !== expectStatus) wrong.push(`${path} answered ${res.status}: ${res.body.trim().slice(0, 200)}`);
    return res.body;
  };
  const files = new Map(before);
  const checkAll = async (when: string) => {
    await call('/cgi-bin/dropcaches');
    for (const [file, f] of files) {
      const got = reportedSha256(await call(`/cgi-bin/read?name=${file}`));
      if (got !== expectedSha256(f.seed, f.size))
        wrong.push(`${when}: ${file} reads ${got}, was written as ${expectedSha256(f.seed, f.size)}`);
    }
    const listing = (await call('/cgi-bin/files')).trim();
    const expected = [...files.keys()]
      .sort()
      .map((file) => `${expectedSha256(files.get(file)!.seed, files.get(file)!.size)}  ${file}`)
      .join('\n');
    if (listing !== expected) wrong.push(`${when}: /data lists\n${listing}\ninstead of\n${expected}`);
  };

  await checkAll('after restore');
  // more: synced and not, a rename of a file from before the snapshot over another, deletes
  const tag = name.replace(/[^A-Za-z0-9]/g, '');
  const writes = [
    { file: 'after-0.bin', size: 123_457, sync: 1 },
    { file: 'after-1.bin', size: 65_536, sync: 0 },
    { file: 'after-2.bin', size: 9_999, sync: 0 },
  ];
  for (const w of writes) {
    const seed = `${tag}-${w.file.replace(/\W/g, '')}`;
    const got = reportedSha256(await call(`/cgi-bin/write?name=${w.file}&size=${w.size}&seed=${seed}&sync=${w.sync}`));
    if (got !== expectedSha256(seed, w.size)) wrong.push(`writing ${w.file} gave ${got}`);
    files.set(w.file, { seed, size: w.size });
  }
  const rename = async (from: string, to: string, sync: number) => {
    const moved = files.get(from)!;
    const got = reportedSha256(await call(`/cgi-bin/rename?from=${from}&to=${to}&sync=${sync}`));
    if (got !== expectedSha256(moved.seed, moved.size)) wrong.push(`renaming ${from} to ${to} gave ${got}`);
    files.delete(from);
    files.set(to, moved);
  };
  const remove = async (file: string, sync: number) => {
    await call(`/cgi-bin/delete?name=${file}&sync=${sync}`);
    files.delete(file);
  };
  await rename('unsynced-0.bin', 'renamed-0.bin', 0);
  await rename('after-1.bin', 'synced-1.bin', 1); // over a file from before the snapshot
  await remove('unsynced-1.bin', 0);
  await remove('after-2.bin', 1);
  await checkAll('after writes, renames and deletes');
  return wrong;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]);
}

function errText(err: unknown): string {
  if (err instanceof Error) return `${(err as { code?: string }).code ?? err.name}: ${err.message}`;
  return String(err);
}

async function main(args: string[]): Promise<number> {
  const nodes = optionValue(args, 'nodes', 2);
  if (nodes !== 1 && nodes !== 2) throw new Error('--nodes is 1 or 2');
  const result = await runSoak({
    restoresPerNode: optionValue(args, 'restores', 20),
    nodes,
    wave: optionValue(args, 'wave', 4),
    fsckEvery: optionValue(args, 'fsck-every', 5),
  });
  printTable(
    ['node', 'restores', 'sources', 'p50 restore ms', 'p95 restore ms'],
    result.perNode.map((n) => [n.node, n.restores, JSON.stringify(n.sources), n.p50RestoreMs, n.p95RestoreMs]),
  );
  const { perNode: _, problems, leaks: __, ...summary } = result;
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (problems.length) process.stdout.write(`problems:\n${problems.join('\n')}\n`);
  if (args.includes('--json')) process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.corrupt || result.failed || result.fsckErrors || result.leaked ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}

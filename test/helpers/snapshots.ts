/**
 * Synthetic snapshots for transfer tests: real bundles (random bytes, a valid manifest), no VM.
 * And the dirs a VMM driver test takes its snapshots into.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GUEST_NET } from '../../src/net/addressing.js';
import { LocalSnapshotStore } from '../../src/snapshot/local-store.js';
import type { SnapshotManifest } from '../../src/snapshot/manifest.js';
import { WorkingSetStore, type WorkingSetManifest } from '../../src/snapshot/working-set-store.js';
import { totalPages, writeWorkingSet, type WorkingSetRanges } from '../../src/memory/working-set.js';

export const MiB = 1024 * 1024;

export const TEST_META: Omit<SnapshotManifest, 'id' | 'files' | 'formatVersion'> = {
  createdAt: '2026-01-01T00:00:00.000Z',
  function: { image: '/img', vcpus: 1, memoryMiB: 128, port: 8080, env: [] },
  image: {
    reference: '/img',
    manifestDigest: `sha256:${'a'.repeat(64)}`,
    rootfsSha256: 'b'.repeat(64),
    flattenerVersion: 1,
  },
  disk: { diff: 'block', sha256AtPause: 'c'.repeat(64), sizeBytes: 4096, changedBytes: 0 },
  vmm: { kind: 'qemu', version: '7.2', snapshotFormat: 'qemu-7.2', accelerator: 'tcg' },
  machine: { vcpus: 1, memoryMiB: 128 },
  guestNetwork: { ...GUEST_NET },
  guestKit: { kind: 'debian', kernelVersion: 'x', cacheKey: 'y' },
};

export interface SyntheticSnapshotOptions {
  /** @default 20 MiB */
  memoryBytes?: number;
  /** @default 1 MiB + 123 bytes */
  deltaBytes?: number;
  /** @default 64 KiB + 7 bytes */
  stateBytes?: number;
}

/** Publishes a snapshot of random bytes (memory.bin, vmstate.bin, disk.delta) into `store`. */
export async function makeSnapshot(
  store: LocalSnapshotStore,
  opts: SyntheticSnapshotOptions = {},
): Promise<SnapshotManifest> {
  const staging = await store.staging();
  await writeFile(join(staging, 'memory.bin'), randomBytes(opts.memoryBytes ?? 20 * MiB));
  await writeFile(join(staging, 'vmstate.bin'), randomBytes(opts.stateBytes ?? 64 * 1024 + 7));
  await writeFile(join(staging, 'disk.delta'), randomBytes(opts.deltaBytes ?? MiB + 123));
  return store.publish(staging, TEST_META);
}

/** A temp dir removed by `dispose`. */
export async function tempDir(prefix: string): Promise<{ path: string; dispose(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `embers-${prefix}-`));
  return { path, dispose: () => rm(path, { recursive: true, force: true }) };
}

/** The dirs `root/<name>`, one per name in order, made (they must not exist yet) for a driver's snapshots. */
export async function snapshotDirs(root: string, ...names: string[]): Promise<string[]> {
  const dirs = names.map((name) => join(root, name));
  for (const dir of dirs) await mkdir(dir);
  return dirs;
}

/** Every file of snapshot `id` in `store`, manifest included, by name. */
export async function snapshotBytes(store: LocalSnapshotStore, id: string): Promise<Record<string, Buffer>> {
  const dir = store.pathOf(id);
  const out: Record<string, Buffer> = {};
  for (const name of (await readdir(dir)).sort()) out[name] = await readFile(join(dir, name));
  return out;
}

/** What a reader of the store sees: published snapshot ids, staging dirs (none may be left). */
export async function visible(store: LocalSnapshotStore): Promise<{ ids: string[]; staging: string[] }> {
  const names = await readdir(store.dir).catch(() => [] as string[]);
  return { ids: (await store.list()).map((m) => m.id), staging: names.filter((n) => n.startsWith('.staging-')) };
}

/** Records a working set of `ranges` (default: two ranges out of file order) for snapshot `id`, from its memory file. */
export async function addWorkingSet(
  store: LocalSnapshotStore,
  id: string,
  ranges?: WorkingSetRanges,
): Promise<WorkingSetManifest> {
  const ws = ranges ?? {
    pageSize: 4096,
    ranges: [
      { firstPage: 40, pageCount: 9 },
      { firstPage: 1, pageCount: 3 },
    ],
  };
  const sets = new WorkingSetStore(store);
  const staging = await sets.staging(id);
  await writeWorkingSet(staging, join(store.pathOf(id), 'memory.bin'), ws);
  return sets.publish(id, staging, {
    recordedAt: new Date().toISOString(),
    recorder: 'test',
    order: 'first-touch',
    pageSize: 4096,
    pages: totalPages(ws),
  });
}

/** Every file of the working set of snapshot `id`, its manifest included, by name. */
export async function workingSetBytes(store: LocalSnapshotStore, id: string): Promise<Record<string, Buffer>> {
  const dir = new WorkingSetStore(store).dirOf(id);
  const out: Record<string, Buffer> = {};
  for (const name of (await readdir(dir)).sort()) out[name] = await readFile(join(dir, name));
  return out;
}

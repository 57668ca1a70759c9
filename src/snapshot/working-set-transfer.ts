/**
 * Moving a snapshot's working set (snapshot/working-set-store.ts) with the snapshot. Remotes
 * hold its files under `<id>/workingset/` beside the snapshot's (S3 keys, peer URLs), its
 * manifest written last on a push. A pull reads the manifest (none: the snapshot has no working
 * set there), downloads each file whole (working sets are small: the pages a function touches),
 * proves it against the manifest's sha256 and publishes the set atomically into the snapshot's
 * dir. Nothing unverified is ever published.
 */
import { createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { retry } from '../util/retry.js';
import type { LocalSnapshotStore } from './local-store.js';
import { MANIFEST_NAME, type SnapshotFile } from './manifest.js';
import { fetchSnapshot } from './fetch-snapshot.js';
import {
  compileTransferOptions,
  type CompiledTransferOptions,
  isTransientTransferError,
  type RangeSource,
  type TransferOptions,
  type TransferResult,
} from './transfer.js';
import {
  WorkingSetStore,
  parseWorkingSetManifest,
  workingSetPath,
  type WorkingSetManifest,
} from './working-set-store.js';

/** A RangeSource that can also say whether the snapshot has a working set there. */
export interface WorkingSetSource extends RangeSource {
  /** The working-set manifest of snapshot `id` at the source, or undefined when it has none. */
  readWorkingSetManifest(id: string, signal: AbortSignal | undefined): Promise<string | undefined>;
}

/**
 * A remote snapshots are pulled from (a peer, a bucket): what it adds is its `source`; pulling a
 * snapshot, or only its working set, goes through it the same way for every remote.
 */
export abstract class SnapshotRemote {
  /** Where this remote's snapshot bytes come from (ranged reads): an early restore reads the memory file chunk by chunk through it. */
  abstract readonly source: WorkingSetSource;

  /** Pulls snapshot `id` into `store`, under the same id, and its working set if the remote has one (see `pullSnapshot`). */
  pull(store: LocalSnapshotStore, id: string, options: TransferOptions = {}): Promise<TransferResult> {
    return pullSnapshot(store, this.source, id, options);
  }

  /** Fetches the working set of local snapshot `id`, if the remote has one and the store does not (see fetchWorkingSet). */
  pullWorkingSet(
    store: LocalSnapshotStore,
    id: string,
    options: TransferOptions = {},
  ): Promise<{ bytes: number } | undefined> {
    return fetchWorkingSet(store, this.source, id, options);
  }
}

/** The working-set manifest's name as remotes store it (`workingset/manifest.json`). */
export const WORKING_SET_MANIFEST_PATH = workingSetPath(MANIFEST_NAME);

/**
 * Pulls snapshot `id` from `source` into `store` (see fetchSnapshot), then its working set if
 * the source has one and the store does not (see fetchWorkingSet); `bytes` counts both.
 */
export async function pullSnapshot(
  store: LocalSnapshotStore,
  source: WorkingSetSource,
  id: string,
  options: TransferOptions = {},
): Promise<TransferResult> {
  const result = await fetchSnapshot(store, source, id, options);
  const ws = await fetchWorkingSet(store, source, id, options);
  return ws ? { ...result, bytes: result.bytes + ws.bytes } : result;
}

/** The working-set manifest of snapshot `id` at `source`, read (with retries) and checked; undefined when it has none. */
export async function readRemoteWorkingSetManifest(
  source: WorkingSetSource,
  id: string,
  o: Pick<CompiledTransferOptions, 'retry' | 'signal'>,
): Promise<{ text: string; manifest: WorkingSetManifest } | undefined> {
  const text = await retry(
    () => source.readWorkingSetManifest(id, o.signal),
    isTransientTransferError,
    o.retry,
    o.signal,
  );
  if (text === undefined) return undefined;
  return { text, manifest: parseWorkingSetManifest(text, `${source.location} ${id}/${WORKING_SET_MANIFEST_PATH}`, id) };
}

/**
 * Fetches the working set of snapshot `id` (which must be in `store`) from `source`, unless the
 * store already has one. Returns the bytes moved, or undefined when nothing was fetched (here
 * already, or the source has none).
 */
export async function fetchWorkingSet(
  store: LocalSnapshotStore,
  source: WorkingSetSource,
  id: string,
  options: TransferOptions = {},
): Promise<{ manifest: WorkingSetManifest; bytes: number } | undefined> {
  const o = compileTransferOptions(options);
  const sets = new WorkingSetStore(store);
  if (await sets.has(id)) return undefined;
  const remote = await readRemoteWorkingSetManifest(source, id, o);
  if (remote === undefined) return undefined;
  const { text, manifest } = remote;
  const staging = await sets.staging(id);
  let bytes = Buffer.byteLength(text);
  try {
    for (const f of manifest.files) {
      bytes += await retry(
        () => downloadWhole(source, id, f, join(staging, f.name), o.signal),
        isTransientTransferError,
        o.retry,
        o.signal,
      );
    }
    return { manifest: await sets.publishFetched(id, staging, manifest), bytes };
  } catch (err) {
    await rm(staging, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Reads file `remote` of snapshot `id` whole from `source` into `path` (synced), hashing it on the
 * way, and checks its size and sha256 against `remote`: a difference is `mismatch` (the caller's
 * code: EMB_SNAPSHOT_CORRUPT for a snapshot's file, EMB_WORKING_SET_INVALID for a working set's),
 * naming the file `name`. A connection that breaks is EMB_REMOTE_UNREACHABLE. Returns the size.
 */
export async function readRemoteFile(
  source: WorkingSetSource,
  id: string,
  remote: SnapshotFile,
  path: string,
  signal: AbortSignal | undefined,
  mismatch: 'EMB_SNAPSHOT_CORRUPT' | 'EMB_WORKING_SET_INVALID',
  name = remote.name,
): Promise<number> {
  const fh = await open(path, 'w', 0o644);
  const hash = createHash('sha256');
  let got = 0;
  try {
    if (remote.sizeBytes > 0) {
      for await (const chunk of await source.readRange(id, remote, 0, remote.sizeBytes, signal)) {
        if (got + chunk.length > remote.sizeBytes) break;
        await fh.write(chunk, 0, chunk.length, got);
        hash.update(chunk);
        got += chunk.length;
      }
    }
    await fh.sync();
  } catch (err) {
    if (isEmbersError(err)) throw err;
    throw EmbersError.of(
      'EMB_REMOTE_UNREACHABLE',
      { problem: 'broken', endpoint: source.location, file: remote.name, id },
      { cause: err },
    );
  } finally {
    await fh.close();
  }
  const digest = hash.digest('hex');
  if (got !== remote.sizeBytes || digest !== remote.sha256) {
    const details = {
      problem: 'fetched-mismatch',
      id,
      file: name,
      source: source.location,
      expected: remote.sha256,
      actual: digest,
      actualBytes: got,
      sizeBytes: remote.sizeBytes,
    } as const;
    throw EmbersError.of(mismatch, details);
  }
  return got;
}

/** Downloads file `f` of the working set into `path`, checking its size and sha256. */
async function downloadWhole(
  source: WorkingSetSource,
  id: string,
  f: SnapshotFile,
  path: string,
  signal: AbortSignal | undefined,
): Promise<number> {
  const remote: SnapshotFile = { name: workingSetPath(f.name), sizeBytes: f.sizeBytes, sha256: f.sha256 };
  return readRemoteFile(source, id, remote, path, signal, 'EMB_WORKING_SET_INVALID', f.name);
}

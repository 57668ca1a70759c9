/**
 * The snapshots the lifecycle restores from, tracked per snapshot key (see functions.ts):
 * which snapshot serves a key, the search of the S3 store and the peers for one, the shared
 * preparation of a snapshot for restores (fetch, verify, restored disk), and the recording
 * of a new snapshot's working set (REAP).
 */
import { randomBytes } from 'node:crypto';
import { asEmbersError } from '../errors.js';
import { roundMs } from '../util/format.js';
import type { SnapshotManifest } from '../snapshot/manifest.js';
import type { EmbersNode } from './node.js';
import { snapshotKey } from './functions.js';
import { functionOfSnapshot } from './function-spec.js';
import type { NodeMetrics } from './metrics.js';
import type { SnapshotSource } from './remote.js';
import { SnapshotFinder, type Peer } from './snapshot-finder.js';
import type { KeySnapshot, LifecycleLog } from './lifecycle-model.js';
import type { OwnedMarks } from './owned-marks.js';
import type { BackgroundTasks } from './background-tasks.js';

export interface RevisionSnapshotsOptions {
  node: EmbersNode;
  metrics: NodeMetrics;
  log: LifecycleLog;
  owned: OwnedMarks;
  background: BackgroundTasks;
  peers: Peer[];
  /** See LifecycleOptions.recordWorkingSets. */
  recordWorkingSets: boolean;
  /** True once the engine shuts down: no new working-set recording starts then. */
  closing: () => boolean;
}

export class RevisionSnapshots {
  /** Searches the store and the peers for snapshots of a key. */
  readonly finder: SnapshotFinder;
  private readonly byKey = new Map<string, KeySnapshot>();
  /** Shared preparation of a snapshot for restores (fetch, verify, restored disk). */
  private readonly prepared = new Map<string, Promise<{ fetchedBytes: number; ms: number }>>();
  private readonly node: EmbersNode;
  private readonly log: LifecycleLog;

  constructor(private readonly opts: RevisionSnapshotsOptions) {
    this.node = opts.node;
    this.log = opts.log;
    this.finder = new SnapshotFinder({
      remote: this.node.remote,
      useStore: this.node.remote.mode === 'remote',
      peers: opts.peers,
      log: (l, m, f) => this.log(l, m, f),
    });
  }

  /** The tracked snapshot of `key` (state 'none' until one is known). */
  of(key: string): KeySnapshot {
    let s = this.byKey.get(key);
    if (!s) {
      s = { state: 'none' };
      this.byKey.set(key, s);
    }
    return s;
  }

  forget(key: string): void {
    this.byKey.delete(key);
  }

  /** Drops the shared preparation of `id`, so the next restore prepares it again. */
  unprepare(id: string): void {
    this.prepared.delete(id);
  }

  /**
   * Records the working set of a new snapshot (see LifecycleOptions.recordWorkingSets) with a
   * clone of its own, marked as owned like every instance the daemon starts. A failure (e.g. a
   * cold start restored the snapshot first, so its pages could not be evicted) only costs the
   * prefetch: it is logged, and restores go on without one.
   */
  async recordWorkingSet(fn: string, id: string): Promise<void> {
    if (!this.opts.recordWorkingSets || this.opts.closing()) return; // QEMU: pagemap; Firecracker: the page server's record mode
    const name = `ws-${id.slice(5, 13)}-${randomBytes(2).toString('hex')}`;
    await this.opts.owned.mark(name);
    try {
      const r = await this.node.snapshots.recordWorkingSet(id, { name });
      if (r.recorded && this.node.remote.mode === 'remote') await this.node.snapshots.push(id);
      this.log('info', `function ${fn}: working set of ${id} recorded: ${r.manifest.pages} pages in ${r.ms} ms`, {
        function: fn,
        snapshot: id,
        pages: r.manifest.pages,
      });
    } catch (err) {
      const e = asEmbersError(err);
      this.log('warn', `function ${fn}: no working set recorded for ${id}: ${e.code} ${e.message}`, {
        function: fn,
        snapshot: id,
        code: e.code,
      });
    } finally {
      await this.opts.owned.unmark(name);
    }
  }

  /**
   * Makes a snapshot local (fetched from the first of `sources` that delivers it whole and
   * verified) and its restored disk ready, once for all the restores that need it.
   */
  prepare(id: string, sources: SnapshotSource[] | undefined): Promise<{ fetchedBytes: number; ms: number }> {
    let p = this.prepared.get(id);
    if (!p) {
      p = (async () => {
        const t0 = performance.now();
        const fetched = await this.fetchFirst(id, sources ?? [{ kind: 'local' }]);
        if (fetched) this.opts.metrics.transferBytes.inc({ direction: 'download' }, fetched.bytes);
        // the restored disk (rootfs + delta, digest-checked) is made once, here, not by each clone
        await this.node.snapshots.restoredDisk(await this.node.snapshots.store.get(id));
        return { fetchedBytes: fetched?.bytes ?? 0, ms: roundMs(performance.now() - t0) };
      })();
      this.prepared.set(id, p);
      // only the first restore pays; a failure is retried by the next one
      p.then(
        () => this.prepared.set(id, Promise.resolve({ fetchedBytes: 0, ms: 0 })),
        () => this.prepared.delete(id),
      );
    }
    return p;
  }

  /** Fetches `id` unless it is here, trying each source in turn; the last failure is the error. */
  private async fetchFirst(id: string, sources: SnapshotSource[]): Promise<{ bytes: number } | undefined> {
    let lastError: unknown;
    for (const source of sources) {
      try {
        return (await this.node.remote.ensureLocal(this.node.snapshots.store, id, source)).fetched;
      } catch (err) {
        lastError = err;
        const e = asEmbersError(err);
        const where = source.kind === 'peer' ? `peer ${source.url}` : source.kind === 's3' ? 'the S3 store' : 'here';
        this.log('warn', `fetching snapshot ${id} from ${where} failed: ${e.code} ${e.message}`, {
          snapshot: id,
          code: e.code,
        });
      }
    }
    throw lastError;
  }

  /** Finds the newest local snapshot of every key. */
  async scanLocal(): Promise<void> {
    const newest = new Map<string, SnapshotManifest>();
    for (const m of await this.node.snapshots.store.list()) {
      const key = snapshotKey(m.image.manifestDigest, functionOfSnapshot(m));
      const prev = newest.get(key);
      if (!prev || prev.createdAt < m.createdAt) newest.set(key, m);
    }
    for (const [key, m] of newest) Object.assign(this.of(key), { state: 'ready', id: m.id });
  }

  /** Searches the store and the peers for a snapshot of `key`, then calls `settled` (which lets the waiting functions go on). */
  lookupRemote(key: string, settled: () => void): void {
    const snap = this.of(key);
    snap.lookingUp = true;
    this.opts.background.track(
      (async () => {
        try {
          const found = await this.finder.find(key);
          if (found && snap.state === 'none') {
            Object.assign(snap, { state: 'ready', id: found.id, sources: found.sources });
            const where = found.sources
              .map((src) => (src.kind === 'peer' ? `peer ${src.url}` : 'the S3 store'))
              .join(', ');
            this.log('info', `found snapshot ${found.id} on ${where}`, { snapshot: found.id });
          }
        } finally {
          snap.lookingUp = false;
          snap.lookedUpAt = Date.now();
          settled();
        }
      })(),
    );
  }
}

/**
 * The snapshots the lifecycle restores from, tracked per snapshot key (see functions.ts):
 * which snapshot serves a key, the search of the S3 store and the peers for one, the shared
 * preparation of a snapshot for restores (fetch, verify, restored disk), the early start of a
 * cold start from a remote snapshot (its clone up before the memory file has arrived, see
 * coldStartRoute), and the recording of a new snapshot's working set (REAP).
 */
import { randomBytes } from 'node:crypto';
import { asEmbersError } from '../errors.js';
import { roundMs } from '../util/format.js';
import type { SnapshotManifest } from '../snapshot/manifest.js';
import type { VmmKind } from '../vmm/driver.js';
import type { EmbersNode } from './node.js';
import { snapshotKey } from './functions.js';
import { functionOfSnapshot } from './function-spec.js';
import type { NodeMetrics } from './metrics.js';
import type { SnapshotSource } from './remote.js';
import { SnapshotFinder, type Peer } from './snapshot-finder.js';
import type { KeySnapshot, LifecycleLog } from './lifecycle-model.js';
import type { OwnedMarks } from './owned-marks.js';
import type { BackgroundTasks } from './background-tasks.js';
import type { RestoreResult } from './snapshot-types.js';

/** How a cold start restores its snapshot (see coldStartRoute). */
export type ColdStartRoute =
  /** The clone starts before the memory file has arrived (arriving-snapshot.ts), fetching from `source`. */
  | { route: 'early'; source: SnapshotSource }
  /** The snapshot is made local whole and verified first (RevisionSnapshots.prepare), then restored. */
  | { route: 'whole'; why: string };

/** What a cold start's route depends on. */
export interface ColdStartFacts {
  /** The node's hypervisor. */
  vmm: VmmKind;
  /** Where the snapshot can be fetched from, in the order to try (absent: it is here). */
  sources: SnapshotSource[] | undefined;
  /** What the search read of it there (KeySnapshot.found; absent: not found by a search). */
  found: { memoryChunked: boolean; workingSet: boolean } | undefined;
  /** This node already fetches it (whole, or for another early start) or has prepared it. */
  underWay: boolean;
}

/**
 * Whether a cold start restores early: on Firecracker (its page server serves a memory file
 * still arriving), for a snapshot that is not here and not already on its way here, whose
 * manifest gives the memory file's chunk digests and whose first source has a working set.
 * Anything else goes the whole way first, as before.
 */
export function coldStartRoute(f: ColdStartFacts): ColdStartRoute {
  const source = f.sources?.[0];
  if (f.vmm !== 'firecracker') return { route: 'whole', why: `${f.vmm} restores from a whole memory file` };
  if (!source || source.kind === 'local') return { route: 'whole', why: 'the snapshot is here' };
  if (f.underWay) return { route: 'whole', why: 'it is already on its way here: the restore waits for it' };
  if (!f.found?.memoryChunked)
    return { route: 'whole', why: 'its manifest gives no chunk digests for the memory file' };
  const where = source.kind === 'peer' ? `peer ${source.url}` : 'the S3 store';
  if (!f.found.workingSet) return { route: 'whole', why: `${where} has no working set for it` };
  return { route: 'early', source };
}

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
  /** Snapshots arriving for an early start (id → settles when the download ends, published or not). */
  private readonly arriving = new Map<string, Promise<void>>();
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

  /** True while snapshot `id` is arriving for an early start. */
  isArriving(id: string): boolean {
    return this.arriving.has(id);
  }

  /**
   * A cold start's restore of snapshot `snap.id` as instance `name`, started early when
   * coldStartRoute says so: resolves once the clone is up, with `arrived`, which settles when the
   * rest of the memory file has come: resolved once the snapshot is published here (verified
   * whole) and prepared, so later cold starts restore it from here; rejected, nothing published
   * nor prepared, when the download failed (`stop` was called first: it stops the clone) or the
   * clone stopped first. Undefined when the route is the whole one, or when the early start failed
   * before its clone was up (logged): restore as before (prepare).
   * While it arrives, prepare() of the same snapshot waits for it (never reading its unverified data).
   */
  async startEarly(
    id: string,
    snap: KeySnapshot,
    name: string,
    stop: (name: string) => Promise<void>,
  ): Promise<{ restore: RestoreResult; arrived: Promise<void> } | undefined> {
    const route = coldStartRoute({
      vmm: this.node.driver.kind,
      sources: snap.id === id ? snap.sources : undefined,
      found: snap.found,
      underWay: this.prepared.has(id) || this.arriving.has(id),
    });
    if (route.route !== 'early') return undefined;
    // registered before anything is awaited: a concurrent cold start sees it and waits
    let ended!: () => void;
    this.arriving.set(id, new Promise<void>((resolve) => (ended = resolve)));
    const end = (): void => {
      this.arriving.delete(id);
      ended();
    };
    let early;
    try {
      early = await this.node.snapshots.restoreEarly(id, { names: [name], source: route.source }, stop);
    } catch (err) {
      // before its clone was up (the source unreachable, its manifest refused, the launch failed):
      // the whole way then, which tries every source in turn and fails the cold start as before
      end();
      const e = asEmbersError(err);
      const where = route.source.kind === 'peer' ? `peer ${route.source.url}` : 'the S3 store';
      this.log(
        'warn',
        `early start of snapshot ${id} from ${where} failed: ${e.code} ${e.message}; fetching it whole`,
        {
          snapshot: id,
          code: e.code,
        },
      );
      return undefined;
    }
    if (!early) {
      end();
      return undefined;
    }
    const arrived = early.arrived
      .then((done) => {
        this.opts.metrics.transferBytes.inc({ direction: 'download' }, done.bytes);
        if (this.node.remote.cacheSnapshots) {
          // here now, its restored disk made for the clone: later restores need no preparation
          this.prepared.set(id, Promise.resolve({ fetchedBytes: 0, ms: 0 }));
          for (const s of this.byKey.values()) if (s.id === id) s.sources = undefined;
        }
        this.log(
          'info',
          `snapshot ${id} arrived whole and verified in ${done.ms} ms (${done.bytes} bytes): published`,
          {
            snapshot: id,
          },
        );
      })
      .finally(end);
    arrived.catch(() => undefined); // the caller awaits it when it likes
    return { restore: early.result, arrived };
  }

  /**
   * Makes a snapshot local (fetched from the first of `sources` that delivers it whole and
   * verified) and its restored disk ready, once for all the restores that need it. A snapshot
   * arriving for an early start is waited for first (then it is here; after a failure it is
   * fetched whole).
   */
  prepare(id: string, sources: SnapshotSource[] | undefined): Promise<{ fetchedBytes: number; ms: number }> {
    const arriving = this.arriving.get(id);
    if (arriving) return arriving.then(() => this.prepare(id, sources));
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
            Object.assign(snap, {
              state: 'ready',
              id: found.id,
              sources: found.sources,
              found: { memoryChunked: found.memoryChunked, workingSet: found.workingSet },
            });
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

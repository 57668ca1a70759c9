/**
 * The automatic snapshot lifecycle of a node's functions (what `embers serve` runs):
 *
 * - An invocation takes a free warm instance of the function's current revision. Without one
 *   it waits in the function's queue (bounded: `maxQueue` beyond what instances that exist or
 *   may still start will absorb; one more is EMB_FUNCTION_QUEUE_FULL) until an instance frees
 *   up or a cold start ends, or its deadline passes (EMB_FUNCTION_TIMEOUT).
 * - A cold start restores a clone when the revision has a snapshot (local, or in remote mode
 *   found in the S3-compatible store by its snapshot key and fetched with every digest
 *   checked), and boots otherwise.
 * - A booted instance is snapshotted after its first successful invocation (after the answer
 *   went out, before it takes another request), or as soon as it is ready. At most one
 *   snapshot per revision is in flight.
 * - Cold starts of one revision fan out: while its first boot has not been snapshotted yet,
 *   no second boot starts; the waiting requests are served by clones restored from that
 *   snapshot once it is ready (or by boots, if it fails).
 * - An instance idle for `idleTimeoutSeconds` stops (scale to zero), except `minInstances`
 *   of the current revision. Instances of an old revision stop as soon as they are idle.
 *
 * The engine sits on the node facade (`EmbersNode.run/stop`, `node.snapshots.create/restore`,
 * `node.remote`). Every instance it starts is marked as owned in `<home>/daemon/owned/`
 * before it starts; a daemon that restarts after a crash stops what those marks name.
 */
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, asEmbersError, type ErrorCode } from '../errors.js';
import { roundMs } from '../util/format.js';
import type { SnapshotManifest } from '../snapshot/manifest.js';
import type { EmbersNode } from './node.js';
import { FunctionStore, runtimeSpec, snapshotKey, validateFunctionConfig, validateFunctionName, type FunctionRecord } from './functions.js';
import { functionOfSnapshot } from './function-spec.js';
import { NodeMetrics, type StartKind } from './metrics.js';
import type { SnapshotMode, SnapshotSource } from './remote.js';
import { SnapshotFinder, type Peer } from './snapshot-finder.js';
import { SpareConnections } from './upstream.js';
import { crashPoint } from '../util/crash-point.js';

export type InstanceState = 'starting' | 'idle' | 'busy' | 'snapshotting' | 'stopping';
export type SnapshotState = 'none' | 'creating' | 'ready' | 'failed';

/** One instance the engine owns. */
interface ManagedInstance {
  name: string;
  fn: string;
  revision: string;
  key: string;
  origin: 'boot' | 'restore';
  /** The snapshot a restored instance came from. */
  snapshotId?: string;
  state: 'starting' | 'ready' | 'snapshotting' | 'stopping';
  active: number;
  served: number;
  cloneIp: string;
  port: number;
  concurrency: number;
  /** A boot whose snapshot is still to be taken: it takes one request at a time until then. */
  pendingSnapshot: boolean;
  /** The cold-start phases (ms), reported to the request that first uses the instance. */
  startPhases: Record<string, number>;
  startMs: number;
  createdAt: string;
  lastUsed: number;
  idleTimer?: NodeJS.Timeout;
}

interface Waiter {
  enqueuedAt: number;
  resolve: (lease: Lease) => void;
  reject: (err: EmbersError) => void;
  timer: NodeJS.Timeout;
}

interface FunctionState {
  record: FunctionRecord;
  key: string;
  queue: Waiter[];
  draining: boolean;
}

/** A snapshot as the engine tracks it, per snapshot key (see functions.ts). */
interface KeySnapshot {
  state: SnapshotState;
  id?: string;
  error?: string;
  /** Where a snapshot found on other nodes can be fetched from, in the order to try (absent: it is here). */
  sources?: SnapshotSource[];
  /** A remote lookup is running. */
  lookingUp?: boolean;
  /** When the remote store was last searched for this key (ms since epoch). */
  lookedUpAt?: number;
}

/** An instance lent to one request; `release` gives it back. */
export interface Lease {
  instance: { name: string; cloneIp: string; port: number };
  /** A connection to the instance: one opened in advance while the instance is warm (see upstream.ts), else a new one. */
  connect(): { socket: Socket; preopened: boolean };
  start: StartKind;
  /** Server-Timing entries (ms): the wait, and the cold-start phases for the request that caused the start. */
  timing: Record<string, number>;
  /** Gives the instance back; `ok` when the function answered successfully (status < 400). */
  release(ok: boolean): void;
}

export interface InstanceView {
  name: string;
  function: string;
  revision: string;
  origin: 'boot' | 'restore';
  snapshotId?: string;
  state: InstanceState;
  activeRequests: number;
  servedRequests: number;
  cloneIp: string;
  createdAt: string;
  startMs: number;
}

export interface FunctionView {
  name: string;
  spec: FunctionRecord['spec'];
  revision: FunctionRecord['revision'];
  createdAt: string;
  updatedAt: string;
  instances: InstanceView[];
  queued: number;
  snapshot: { state: SnapshotState; id?: string; error?: string };
}

export interface LifecycleOptions {
  node: EmbersNode;
  /** Logs what the engine decides (cold starts, snapshots, scale to zero). */
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /** How long a remote search (store and peers) for a key is trusted before searching again. @default 10000 */
  remoteLookupTtlMs?: number;
  /** Peer nodes whose snapshots cold starts may restore from (their peer endpoints and token). @default [] */
  peers?: Peer[];
  /**
   * REAP: once a snapshot is ready, record its working set in the background (QEMU nodes): a
   * clone restored with the memory file out of the page cache answers its first request, the
   * pages it read are kept with the snapshot (and uploaded in remote mode), and later restores
   * prefetch them. @default true
   */
  recordWorkingSets?: boolean;
}

export class Lifecycle {
  readonly node: EmbersNode;
  readonly functions: FunctionStore;
  readonly metrics: NodeMetrics;
  private readonly fns = new Map<string, FunctionState>();
  private readonly instancesByName = new Map<string, ManagedInstance>();
  private readonly snaps = new Map<string, KeySnapshot>();
  /** Searches the store and the peers for snapshots of a key. */
  private readonly finder: SnapshotFinder;
  /** The snapshot mode functions default to: remote when snapshots can be shared (a store, or peers). */
  private readonly sharedMode: SnapshotMode;
  /** Shared preparation of a snapshot for restores (fetch, verify, restored disk). */
  private readonly prepared = new Map<string, Promise<{ fetchedBytes: number; ms: number }>>();
  private readonly background = new Set<Promise<unknown>>();
  /** Connections to warm instances opened ahead of their requests. */
  private readonly spares = new SpareConnections();
  private readonly ownedDir: string;
  private readonly log: NonNullable<LifecycleOptions['log']>;
  private readonly lookupTtlMs: number;
  private readonly recordWorkingSets: boolean;
  private closing = false;

  private constructor(opts: LifecycleOptions) {
    this.node = opts.node;
    this.functions = new FunctionStore(join(opts.node.config.home, 'functions'));
    this.ownedDir = join(opts.node.config.home, 'daemon', 'owned');
    this.log = opts.log ?? (() => undefined);
    this.lookupTtlMs = opts.remoteLookupTtlMs ?? 10_000;
    const peers = opts.peers ?? [];
    this.finder = new SnapshotFinder({ remote: this.node.remote, useStore: this.node.remote.mode === 'remote', peers, log: (l, m, f) => this.log(l, m, f) });
    const mode = this.node.remote.mode;
    this.sharedMode = mode === 'local' && peers.length > 0 ? 'remote' : mode;
    this.recordWorkingSets = opts.recordWorkingSets ?? true;
    this.metrics = new NodeMetrics({
      instances: () => {
        const counts = new Map<string, { function: string; state: string; count: number }>();
        for (const i of this.instancesByName.values()) {
          const state = viewState(i);
          const k = `${i.fn}\0${state}`;
          const c = counts.get(k) ?? { function: i.fn, state, count: 0 };
          c.count++;
          counts.set(k, c);
        }
        return [...counts.values()];
      },
      queued: () => [...this.fns.values()].map((f) => ({ function: f.record.name, count: f.queue.length })),
      freeSlots: async () => (await this.node.pool.stats()).free,
    });
  }

  /**
   * Starts the engine on an opened node: stops instances a previous daemon of this home left
   * (after kill -9), loads the functions and the local snapshots, starts min instances.
   */
  static async start(opts: LifecycleOptions): Promise<Lifecycle> {
    const engine = new Lifecycle(opts);
    await engine.reconcileOwned();
    for (const record of await engine.functions.list()) engine.fns.set(record.name, engine.stateFor(record));
    await engine.scanLocalSnapshots();
    for (const f of engine.fns.values()) engine.pump(f);
    return engine;
  }

  // ---- functions ----

  /** Creates or updates a function: validates the spec, resolves the image, stores a new revision if anything changed. */
  async deploy(name: string, rawSpec: unknown): Promise<{ function: FunctionView; changed: boolean }> {
    this.requireOpen();
    validateFunctionName(name);
    const spec = validateFunctionConfig(rawSpec, this.sharedMode);
    const image = await this.node.images.ensure(spec.image, { onProgress: (m) => this.node.progressLine(m) });
    const { record, changed } = await this.functions.put(name, spec, image.manifestDigest);
    const existing = this.fns.get(name);
    if (existing && !existing.draining) {
      existing.record = record;
      existing.key = snapshotKey(record.revision.manifestDigest, runtimeSpec(record.spec));
    } else {
      this.fns.set(name, this.stateFor(record, existing?.queue));
    }
    const f = this.fns.get(name)!;
    if (changed) {
      this.log('info', `function ${name}: revision ${record.revision.id}`, { function: name, revision: record.revision.id });
      // instances of older revisions drain: idle ones stop now, busy ones when they are given back
      for (const i of this.instancesByName.values()) if (i.fn === name && i.revision !== record.revision.id && isIdle(i)) this.stopInstance(i, 'old revision');
    }
    this.pump(f);
    return { function: this.view(f), changed };
  }

  get(name: string): FunctionView {
    return this.view(this.requireFunction(name));
  }

  list(): FunctionView[] {
    return [...this.fns.values()].sort((a, b) => (a.record.name < b.record.name ? -1 : 1)).map((f) => this.view(f));
  }

  instances(): InstanceView[] {
    return [...this.instancesByName.values()].map(instanceView).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** The local snapshots, with the functions whose current revision they serve. */
  async snapshots(): Promise<{ id: string; createdAt: string; image: string; manifestDigest: string; functions: string[]; sizeBytes: number }[]> {
    const out = [];
    for (const m of await this.node.snapshots.store.list()) {
      const key = snapshotKey(m.image.manifestDigest, functionOfSnapshot(m));
      out.push({
        id: m.id,
        createdAt: m.createdAt,
        image: m.image.reference,
        manifestDigest: m.image.manifestDigest,
        functions: [...this.fns.values()].filter((f) => f.key === key).map((f) => f.record.name),
        sizeBytes: m.files.reduce((n, f) => n + f.sizeBytes, 0),
      });
    }
    return out;
  }

  /**
   * Removes a function: new requests are refused, queued ones get EMB_FUNCTION_DRAINING,
   * in-flight ones finish (up to `graceMs`), then its instances stop and its spec goes.
   * With `deleteSnapshots`, the snapshots of its revision go too (local and remote).
   */
  async remove(name: string, opts: { deleteSnapshots?: boolean; graceMs?: number } = {}): Promise<{ removedSnapshots: string[] }> {
    const f = this.requireFunction(name);
    f.draining = true;
    for (const w of f.queue.splice(0)) this.rejectWaiter(f, w, drainingError(name));
    await this.drainInstances((i) => i.fn === name, opts.graceMs ?? 30_000);
    if (this.fns.get(name) !== f) return { removedSnapshots: [] }; // deployed again meanwhile: the new one stays
    await this.functions.remove(name);
    this.fns.delete(name);
    const removedSnapshots: string[] = [];
    if (opts.deleteSnapshots) {
      const stillUsed = [...this.fns.values()].some((o) => o.key === f.key);
      if (!stillUsed) {
        for (const m of await this.node.snapshots.store.list()) {
          if (snapshotKey(m.image.manifestDigest, functionOfSnapshot(m)) !== f.key) continue;
          await this.node.snapshots.remove(m.id);
          removedSnapshots.push(m.id);
        }
        for (const id of await this.finder.idsInStore(f.key)) {
          await this.node.remote.s3().remove(id);
          if (!removedSnapshots.includes(id)) removedSnapshots.push(id);
        }
        this.snaps.delete(f.key);
      }
    }
    return { removedSnapshots };
  }

  // ---- invocations ----

  /** Lends an instance of the function to one request (see the file comment for how). */
  acquire(name: string): Promise<Lease> {
    const f = this.fns.get(name);
    if (!f) return Promise.reject(notFound(name));
    if (f.draining || this.closing) return Promise.reject(drainingError(name));
    const spec = f.record.spec;
    const free = this.freeInstance(f);
    if (free && f.queue.length === 0) return Promise.resolve(this.lend(f, free, performance.now()));
    // capacity that existing or startable instances will bring; beyond it, maxQueue may wait
    const live = this.liveOf(f);
    const coming = (live.filter((i) => i.state === 'starting').length + Math.max(0, spec.maxInstances - live.length)) * spec.concurrency;
    if (f.queue.length - coming >= spec.maxQueue) {
      this.metrics.rejected.inc({ function: name, code: 'EMB_FUNCTION_QUEUE_FULL' });
      return Promise.reject(
        new EmbersError(
          'EMB_FUNCTION_QUEUE_FULL',
          `function ${name}: all ${live.length} instance(s) are busy (maxInstances ${spec.maxInstances}) and ${f.queue.length} request(s) already wait`,
          { function: name, queued: f.queue.length, retryAfterSeconds: this.retryAfterSeconds(f) },
        ),
      );
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        enqueuedAt: performance.now(),
        resolve,
        reject,
        timer: setTimeout(() => {
          const at = f.queue.indexOf(waiter);
          if (at < 0) return;
          f.queue.splice(at, 1);
          this.rejectWaiter(
            f,
            waiter,
            new EmbersError('EMB_FUNCTION_TIMEOUT', `function ${name}: no instance was free within ${spec.requestTimeoutSeconds} s`, {
              function: name,
              requestTimeoutSeconds: spec.requestTimeoutSeconds,
            }),
          );
        }, spec.requestTimeoutSeconds * 1000),
      };
      f.queue.push(waiter);
      this.pump(f);
    });
  }

  /** Seconds a client should wait before retrying a full queue: about one idle-free cycle. */
  retryAfterSeconds(f: FunctionState | string): number {
    const state = typeof f === 'string' ? this.fns.get(f) : f;
    return Math.max(1, Math.min(30, Math.ceil((state?.queue.length ?? 0) / Math.max(1, state?.record.spec.concurrency ?? 1))));
  }

  private lend(f: FunctionState, inst: ManagedInstance, since: number): Lease {
    clearTimeout(inst.idleTimer);
    inst.idleTimer = undefined;
    const first = inst.served === 0 && inst.active === 0;
    inst.active++;
    const start: StartKind = first ? inst.origin : 'warm';
    const timing: Record<string, number> = { queue: roundMs(performance.now() - since) };
    if (first) for (const [k, v] of Object.entries(inst.startPhases)) timing[k.replace(/Ms$/, '')] = v;
    let released = false;
    const upstream = { host: inst.cloneIp, port: inst.port };
    return {
      instance: { name: inst.name, cloneIp: inst.cloneIp, port: inst.port },
      connect: () => this.spares.take(inst.name, upstream),
      start,
      timing,
      release: (ok: boolean) => {
        if (released) return;
        released = true;
        inst.active--;
        inst.served++;
        inst.lastUsed = Date.now();
        this.metrics.invocations.inc({ function: inst.fn, start });
        this.afterRelease(f, inst, ok);
      },
    };
  }

  private afterRelease(f: FunctionState, inst: ManagedInstance, ok: boolean): void {
    const current = this.fns.get(inst.fn);
    if (!current || current.draining || current.record.revision.id !== inst.revision) {
      if (inst.active === 0 && inst.state === 'ready') this.stopInstance(inst, 'draining');
      if (current) this.pump(current);
      return;
    }
    // another instance's snapshot (or its failure) settled this key: no snapshot of this one
    if (inst.pendingSnapshot && this.snapshotFor(inst.key).state !== 'none') inst.pendingSnapshot = false;
    if (inst.pendingSnapshot && ok && inst.active === 0) {
      this.snapshotInstance(f, inst);
      return;
    }
    this.armIdle(f, inst);
    this.pump(f);
  }

  // ---- the scheduler ----

  /** Serves the queue from free instances, starts instances for the rest (or waits for a snapshot), keeps min instances. */
  private pump(f: FunctionState): void {
    // while the node shuts down, queued requests are still served (within the grace period)
    if (f.draining) return;
    for (;;) {
      if (f.queue.length === 0) break;
      const inst = this.freeInstance(f);
      if (!inst) break;
      const w = f.queue.shift()!;
      clearTimeout(w.timer);
      w.resolve(this.lend(f, inst, w.enqueuedAt));
    }
    const spec = f.record.spec;
    const live = this.liveOf(f);
    const starting = live.filter((i) => i.state === 'starting').length;
    // waiters that no starting instance will take, and instances to keep warm
    let wanted = Math.ceil(f.queue.length / spec.concurrency) - starting;
    if (!this.closing) wanted = Math.max(wanted, spec.minInstances - live.length);
    let count = live.length;
    while (wanted > 0 && count < spec.maxInstances) {
      const how = this.coldStartKind(f);
      if (how.kind === 'wait') break;
      if (how.kind === 'restore') this.startInstance(f, 'restore', how.id);
      else this.startInstance(f, 'boot');
      wanted--;
      count++;
    }
  }

  /** How the next cold start of `f` goes: restore, boot, or wait (for the revision's first snapshot, or a remote search). */
  private coldStartKind(f: FunctionState): { kind: 'restore'; id: string } | { kind: 'boot' } | { kind: 'wait' } {
    if (f.record.spec.snapshots === 'disabled') return { kind: 'boot' };
    const snap = this.snapshotFor(f.key);
    if (snap.state === 'ready' && snap.id) return { kind: 'restore', id: snap.id };
    if (snap.state === 'creating' || snap.lookingUp) return { kind: 'wait' };
    if (snap.state === 'none') {
      // fan-out: one boot per revision until its snapshot exists
      const bootPending = [...this.instancesByName.values()].some((i) => i.key === f.key && i.pendingSnapshot && i.state !== 'stopping');
      if (bootPending) return { kind: 'wait' };
      if (f.record.spec.snapshots === 'remote' && this.finder.searches && Date.now() - (snap.lookedUpAt ?? 0) > this.lookupTtlMs) {
        this.lookupRemote(f.key);
        return { kind: 'wait' };
      }
    }
    return { kind: 'boot' };
  }

  private freeInstance(f: FunctionState): ManagedInstance | undefined {
    let best: ManagedInstance | undefined;
    for (const i of this.instancesByName.values()) {
      if (i.fn !== f.record.name || i.revision !== f.record.revision.id || i.state !== 'ready') continue;
      const cap = i.pendingSnapshot ? 1 : i.concurrency;
      if (i.active >= cap) continue;
      // the most recently used first: the others reach their idle timeout sooner
      if (!best || i.lastUsed > best.lastUsed) best = i;
    }
    return best;
  }

  /** Instances of the function's current revision that are not stopping. */
  private liveOf(f: FunctionState): ManagedInstance[] {
    return [...this.instancesByName.values()].filter((i) => i.fn === f.record.name && i.revision === f.record.revision.id && i.state !== 'stopping');
  }

  private startInstance(f: FunctionState, kind: 'boot' | 'restore', snapshotId?: string): void {
    const record = f.record;
    const inst: ManagedInstance = {
      name: `${record.name}-${randomBytes(4).toString('hex')}`,
      fn: record.name,
      revision: record.revision.id,
      key: f.key,
      origin: kind,
      snapshotId,
      state: 'starting',
      active: 0,
      served: 0,
      cloneIp: '',
      port: record.spec.port,
      concurrency: record.spec.concurrency,
      pendingSnapshot: kind === 'boot' && record.spec.snapshots !== 'disabled',
      startPhases: {},
      startMs: 0,
      createdAt: new Date().toISOString(),
      lastUsed: Date.now(),
    };
    this.instancesByName.set(inst.name, inst);
    this.log('info', `function ${record.name}: cold start (${kind}${snapshotId ? ` of ${snapshotId}` : ''}) as ${inst.name}`, {
      function: record.name,
      instance: inst.name,
      kind,
    });
    this.track(
      (async () => {
        const t0 = performance.now();
        try {
          await this.markOwned(inst.name);
          if (kind === 'boot') {
            const rec = await this.node.run(runtimeSpec(record.spec), { name: inst.name });
            await crashPoint('lifecycle.cold-start.after-boot');
            inst.cloneIp = rec.cloneIp;
            inst.startPhases = { ...rec.timings.phases };
          } else {
            const prep = await this.prepareSnapshot(snapshotId!, this.snapshotFor(inst.key).sources);
            const r = await this.node.snapshots.restore(snapshotId!, { count: 1, names: [inst.name] });
            const rec = r.clones[0].record;
            inst.cloneIp = rec.cloneIp;
            // the shared preparation counts for the instance that waited for it
            inst.startPhases = { prepareMs: roundMs(prep.ms + r.prepareMs), ...rec.timings.phases };
          }
          inst.startMs = roundMs(performance.now() - t0);
          this.metrics.observeStart(kind, inst.startMs, inst.startPhases);
          inst.startPhases = { [kind]: inst.startMs, ...inst.startPhases };
          await this.afterStart(inst);
        } catch (err) {
          await this.startFailed(inst, kind, asEmbersError(err));
        }
      })(),
    );
  }

  private async afterStart(inst: ManagedInstance): Promise<void> {
    const f = this.fns.get(inst.fn);
    if (!f || f.draining || f.record.revision.id !== inst.revision) {
      inst.state = 'ready';
      this.stopInstance(inst, 'no longer wanted');
      return;
    }
    inst.state = 'ready';
    if (inst.pendingSnapshot && f.record.spec.snapshotWhen === 'ready' && this.snapshotFor(inst.key).state === 'none') {
      this.snapshotInstance(f, inst);
      return;
    }
    this.armIdle(f, inst);
    this.pump(f);
  }

  private async startFailed(inst: ManagedInstance, kind: 'boot' | 'restore', err: EmbersError): Promise<void> {
    this.instancesByName.delete(inst.name);
    await this.unmarkOwned(inst.name);
    this.log('error', `function ${inst.fn}: ${kind} of ${inst.name} failed: ${err.code} ${err.message}`, { function: inst.fn, code: err.code });
    const f = this.fns.get(inst.fn);
    if (!f) return;
    if (kind === 'restore' && inst.snapshotId) {
      const snap = this.snapshotFor(inst.key);
      this.prepared.delete(inst.snapshotId);
      if (snap.id === inst.snapshotId) {
        if (err.code === 'EMB_SNAPSHOT_NOT_FOUND' || err.code === 'EMB_REMOTE_NOT_FOUND') {
          // removed meanwhile (`embers snapshot rm` on this home): forgotten, so the next boot is snapshotted again
          Object.assign(snap, { state: 'none', id: undefined, sources: undefined, error: undefined, lookedUpAt: undefined });
        } else {
          // a snapshot that cannot be restored here is not used again: later cold starts boot
          Object.assign(snap, { state: 'failed', error: `${err.code}: ${err.message}` });
        }
      }
      this.pump(f);
      return;
    }
    // a boot that fails: the requests it would have served get the error (502), unless other instances will take them
    const others = this.liveOf(f).filter((i) => i.state !== 'stopping').length;
    const victims = others > 0 ? f.queue.splice(0, 1) : f.queue.splice(0);
    for (const w of victims) this.rejectWaiter(f, w, startError(inst.fn, err));
    this.pump(f);
  }

  private rejectWaiter(f: FunctionState, w: Waiter, err: EmbersError): void {
    clearTimeout(w.timer);
    this.metrics.rejected.inc({ function: f.record.name, code: err.code });
    w.reject(err);
  }

  // ---- snapshots ----

  private snapshotFor(key: string): KeySnapshot {
    let s = this.snaps.get(key);
    if (!s) {
      s = { state: 'none' };
      this.snaps.set(key, s);
    }
    return s;
  }

  /** Snapshots a booted instance in the background; it takes no request until this ends. */
  private snapshotInstance(f: FunctionState, inst: ManagedInstance): void {
    const snap = this.snapshotFor(inst.key);
    snap.state = 'creating';
    inst.state = 'snapshotting';
    this.spares.drop(inst.name); // no connection of ours may be caught in the snapshot
    this.log('info', `function ${inst.fn}: snapshot of ${inst.name} (revision ${inst.revision})`, { function: inst.fn, instance: inst.name });
    this.track(
      (async () => {
        try {
          await crashPoint('lifecycle.snapshot.before-create');
          const r = await this.node.snapshots.create(inst.name);
          await crashPoint('lifecycle.snapshot.after-create');
          Object.assign(snap, { state: 'ready', id: r.manifest.id, error: undefined, sources: undefined });
          // warm up for the first restore: its disk is materialised and checked now, off the cold-start path
          this.track(
            this.prepareSnapshot(r.manifest.id, undefined)
              .then(() => this.recordWorkingSet(inst.fn, r.manifest.id))
              .catch(() => undefined),
          );
          this.metrics.snapshotCreate.observe(r.timings.createMs / 1000);
          if (this.node.remote.mode === 'remote') this.metrics.transferBytes.inc({ direction: 'upload' }, bundleBytes(r.manifest));
          this.finder.note(r.manifest, inst.key);
          this.log('info', `function ${inst.fn}: snapshot ${r.manifest.id} ready in ${r.timings.createMs} ms`, { function: inst.fn, snapshot: r.manifest.id });
        } catch (err) {
          const e = asEmbersError(err);
          Object.assign(snap, { state: 'failed', error: `${e.code}: ${e.message}` });
          this.metrics.snapshotFailures.inc();
          this.log('error', `function ${inst.fn}: snapshot of ${inst.name} failed: ${e.code} ${e.message}`, { function: inst.fn, code: e.code });
        } finally {
          inst.pendingSnapshot = false;
          if (inst.state === 'snapshotting') inst.state = 'ready';
          const current = this.fns.get(inst.fn) ?? f;
          for (const other of this.fns.values()) if (other !== current && other.key === inst.key) this.pump(other);
          this.afterRelease(current, inst, true);
        }
      })(),
    );
  }

  /**
   * Records the working set of a new snapshot (see LifecycleOptions.recordWorkingSets) with a
   * clone of its own, marked as owned like every instance the daemon starts. A failure (e.g. a
   * cold start restored the snapshot first, so its pages could not be evicted) only costs the
   * prefetch: it is logged, and restores go on without one.
   */
  private async recordWorkingSet(fn: string, id: string): Promise<void> {
    if (!this.recordWorkingSets || this.closing) return; // QEMU: pagemap; Firecracker: the page server's record mode
    const name = `ws-${id.slice(5, 13)}-${randomBytes(2).toString('hex')}`;
    await this.markOwned(name);
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
      this.log('warn', `function ${fn}: no working set recorded for ${id}: ${e.code} ${e.message}`, { function: fn, snapshot: id, code: e.code });
    } finally {
      await this.unmarkOwned(name);
    }
  }

  /**
   * Makes a snapshot local (fetched from the first of `sources` that delivers it whole and
   * verified) and its restored disk ready, once for all the restores that need it.
   */
  private prepareSnapshot(id: string, sources: SnapshotSource[] | undefined): Promise<{ fetchedBytes: number; ms: number }> {
    let p = this.prepared.get(id);
    if (!p) {
      p = (async () => {
        const t0 = performance.now();
        const fetched = await this.fetchFirst(id, sources ?? [{ kind: 'local' }]);
        if (fetched) this.metrics.transferBytes.inc({ direction: 'download' }, fetched.bytes);
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
        this.log('warn', `fetching snapshot ${id} from ${where} failed: ${e.code} ${e.message}`, { snapshot: id, code: e.code });
      }
    }
    throw lastError;
  }

  /** Finds the newest local snapshot of every key. */
  private async scanLocalSnapshots(): Promise<void> {
    const newest = new Map<string, SnapshotManifest>();
    for (const m of await this.node.snapshots.store.list()) {
      const key = snapshotKey(m.image.manifestDigest, functionOfSnapshot(m));
      const prev = newest.get(key);
      if (!prev || prev.createdAt < m.createdAt) newest.set(key, m);
    }
    for (const [key, m] of newest) Object.assign(this.snapshotFor(key), { state: 'ready', id: m.id });
  }

  /** Searches the store and the peers for a snapshot of `key`, then lets the waiting functions go on. */
  private lookupRemote(key: string): void {
    const snap = this.snapshotFor(key);
    snap.lookingUp = true;
    this.track(
      (async () => {
        try {
          const found = await this.finder.find(key);
          if (found && snap.state === 'none') {
            Object.assign(snap, { state: 'ready', id: found.id, sources: found.sources });
            const where = found.sources.map((src) => (src.kind === 'peer' ? `peer ${src.url}` : 'the S3 store')).join(', ');
            this.log('info', `found snapshot ${found.id} on ${where}`, { snapshot: found.id });
          }
        } finally {
          snap.lookingUp = false;
          snap.lookedUpAt = Date.now();
          for (const f of this.fns.values()) if (f.key === key) this.pump(f);
        }
      })(),
    );
  }

  // ---- scale to zero and stopping ----

  private armIdle(f: FunctionState, inst: ManagedInstance): void {
    clearTimeout(inst.idleTimer);
    if (inst.state !== 'ready' || inst.active > 0) return;
    // warm and never to be snapshotted (any more): its next request finds a connection open
    if (!inst.pendingSnapshot) this.spares.prime(inst.name, { host: inst.cloneIp, port: inst.port });
    inst.idleTimer = setTimeout(() => {
      inst.idleTimer = undefined;
      if (!isIdle(inst)) return;
      const current = this.fns.get(inst.fn);
      const keep = current && current.record.revision.id === inst.revision && this.liveOf(current).length <= current.record.spec.minInstances;
      if (keep) return;
      this.stopInstance(inst, `idle for ${f.record.spec.idleTimeoutSeconds} s`);
    }, f.record.spec.idleTimeoutSeconds * 1000);
    inst.idleTimer.unref();
  }

  private stopInstance(inst: ManagedInstance, why: string): void {
    if (inst.state === 'stopping') return;
    clearTimeout(inst.idleTimer);
    this.spares.drop(inst.name);
    inst.state = 'stopping';
    this.log('info', `function ${inst.fn}: stopping ${inst.name} (${why})`, { function: inst.fn, instance: inst.name });
    this.track(
      (async () => {
        try {
          await this.node.stop(inst.name);
          await this.unmarkOwned(inst.name);
        } catch (err) {
          const e = asEmbersError(err);
          this.log('error', `stopping ${inst.name} failed: ${e.code} ${e.message}`, { instance: inst.name });
        } finally {
          this.instancesByName.delete(inst.name);
          const f = this.fns.get(inst.fn);
          if (f) this.pump(f);
        }
      })(),
    );
  }

  /** Waits (up to graceMs) for the matching instances' requests and starts to finish, then stops them all. */
  private async drainInstances(match: (i: ManagedInstance) => boolean, graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    const busy = () => [...this.instancesByName.values()].filter((i) => match(i) && (i.active > 0 || i.state === 'starting' || i.state === 'snapshotting'));
    while (busy().length > 0 && Date.now() < deadline) await sleep(50);
    for (const i of [...this.instancesByName.values()]) if (match(i)) this.stopInstance(i, 'drain');
    while ([...this.instancesByName.values()].some(match)) {
      if (Date.now() > deadline + 60_000) break;
      await this.settleBackground();
      await sleep(20);
    }
  }

  /**
   * Shuts down: refuses new requests, answers queued ones EMB_FUNCTION_DRAINING, lets
   * in-flight ones finish (up to graceMs), stops every instance it owns and tears the
   * network pool down when nothing else uses it.
   */
  async close(graceMs = 30_000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const deadline = Date.now() + graceMs;
    const inFlight = () => [...this.fns.values()].some((f) => f.queue.length > 0) || [...this.instancesByName.values()].some((i) => i.active > 0);
    while (inFlight() && Date.now() < deadline) await sleep(50);
    for (const f of this.fns.values()) for (const w of f.queue.splice(0)) this.rejectWaiter(f, w, drainingError(f.record.name));
    await this.drainInstances(() => true, Math.max(0, deadline - Date.now()));
    this.spares.closeAll();
    await this.settleBackground();
    await this.node.downIfIdle();
    this.node.remote.close();
  }

  private async settleBackground(): Promise<void> {
    while (this.background.size > 0) await Promise.allSettled([...this.background]);
  }

  private track(p: Promise<unknown>): void {
    this.background.add(p);
    void p.finally(() => this.background.delete(p));
  }

  // ---- ownership marks (crash recovery) ----

  private async markOwned(name: string): Promise<void> {
    await mkdir(this.ownedDir, { recursive: true });
    await writeFile(join(this.ownedDir, name), `${process.pid}\n`);
  }

  private async unmarkOwned(name: string): Promise<void> {
    await rm(join(this.ownedDir, name), { force: true });
  }

  /** Stops the instances a previous daemon of this home started and never stopped (it was killed). */
  private async reconcileOwned(): Promise<void> {
    for (const name of await readdir(this.ownedDir).catch(() => [] as string[])) {
      const rec = await this.node.instances.get(name).catch(() => undefined);
      if (rec) {
        this.log('warn', `stopping ${name}, left running by a daemon that did not shut down`, { instance: name });
        await this.node.stop(name).catch((err: Error) => this.log('error', `could not stop ${name}: ${err.message}`));
      }
      await this.unmarkOwned(name);
    }
  }

  // ---- views ----

  private stateFor(record: FunctionRecord, queue: Waiter[] = []): FunctionState {
    return { record, key: snapshotKey(record.revision.manifestDigest, runtimeSpec(record.spec)), queue, draining: false };
  }

  private view(f: FunctionState): FunctionView {
    const snap = this.snapshotFor(f.key);
    return {
      name: f.record.name,
      spec: f.record.spec,
      revision: f.record.revision,
      createdAt: f.record.createdAt,
      updatedAt: f.record.updatedAt,
      instances: [...this.instancesByName.values()].filter((i) => i.fn === f.record.name).map(instanceView),
      queued: f.queue.length,
      snapshot: { state: snap.state, id: snap.id, error: snap.error },
    };
  }

  private requireFunction(name: string): FunctionState {
    validateFunctionName(name);
    const f = this.fns.get(name);
    if (!f) throw notFound(name);
    return f;
  }

  private requireOpen(): void {
    if (this.closing) throw new EmbersError('EMB_FUNCTION_DRAINING', 'the node is shutting down', {});
  }
}

function isIdle(i: ManagedInstance): boolean {
  return i.state === 'ready' && i.active === 0;
}

function viewState(i: ManagedInstance): InstanceState {
  if (i.state === 'ready') return i.active > 0 ? 'busy' : 'idle';
  return i.state;
}

function instanceView(i: ManagedInstance): InstanceView {
  return {
    name: i.name,
    function: i.fn,
    revision: i.revision,
    origin: i.origin,
    snapshotId: i.snapshotId,
    state: viewState(i),
    activeRequests: i.active,
    servedRequests: i.served,
    cloneIp: i.cloneIp,
    createdAt: i.createdAt,
    startMs: i.startMs,
  };
}

function bundleBytes(m: SnapshotManifest): number {
  return m.files.reduce((n, f) => n + f.sizeBytes, 0);
}

function notFound(name: string): EmbersError {
  return new EmbersError('EMB_FUNCTION_NOT_FOUND', `no function named ${name}`, { function: name });
}

function drainingError(name: string): EmbersError {
  return new EmbersError('EMB_FUNCTION_DRAINING', `function ${name} takes no new requests: it is being removed or the node is shutting down`, {
    function: name,
  });
}

/** A start failure as the invoking client sees it: the code of what failed, the function named. */
function startError(fn: string, err: EmbersError): EmbersError {
  const code: ErrorCode = err.code;
  return new EmbersError(
    code,
    `function ${fn} failed to start: ${err.message}`,
    { ...err.details, function: fn, startFailed: true },
    { cause: err, hint: err.hint },
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

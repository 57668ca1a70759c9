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
 *
 * This file is the facade (functions, admission of requests, views, shutdown); the scheduler
 * of instances is scheduler.ts, the snapshots it restores from revision-snapshots.ts, the
 * records and views lifecycle-model.ts, the ownership marks owned-marks.ts.
 */
import { sleep } from '../util/sleep.js';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import type { EmbersNode } from './node.js';
import {
  FunctionStore,
  runtimeSpec,
  snapshotKey,
  validateFunctionConfig,
  validateFunctionName,
  type FunctionRecord,
} from './functions.js';
import { functionOfSnapshot } from './function-spec.js';
import type { NodeMetrics } from './metrics.js';
import type { SnapshotMode } from './remote.js';
import { InstanceScheduler } from './scheduler.js';
import {
  drainingError,
  instanceView,
  isIdle,
  notFound,
  type FunctionState,
  type FunctionView,
  type InstanceView,
  type Lease,
  type LifecycleLog,
  type LifecycleOptions,
  type Waiter,
} from './lifecycle-model.js';

export type {
  FunctionView,
  InstanceState,
  InstanceView,
  Lease,
  LifecycleOptions,
  SnapshotState,
} from './lifecycle-model.js';

export class Lifecycle {
  readonly node: EmbersNode;
  readonly functions: FunctionStore;
  readonly metrics: NodeMetrics;
  /** The instances and the snapshots they restore from (see scheduler.ts). */
  private readonly scheduler: InstanceScheduler;
  /** The snapshot mode functions default to: remote when snapshots can be shared (a store, or peers). */
  private readonly sharedMode: SnapshotMode;
  private readonly log: LifecycleLog;

  private constructor(opts: LifecycleOptions) {
    this.node = opts.node;
    this.log = opts.log ?? (() => undefined);
    this.functions = new FunctionStore(join(opts.node.config.home, 'functions'));
    const peers = opts.peers ?? [];
    this.scheduler = new InstanceScheduler({
      node: this.node,
      log: this.log,
      lookupTtlMs: opts.remoteLookupTtlMs ?? 10_000,
      peers,
      recordWorkingSets: opts.recordWorkingSets ?? true,
    });
    const mode = this.node.remote.mode;
    this.sharedMode = mode === 'local' && peers.length > 0 ? 'remote' : mode;
    this.metrics = this.scheduler.metrics;
  }

  /**
   * Starts the engine on an opened node: stops instances a previous daemon of this home left
   * (after kill -9), loads the functions and the local snapshots, starts min instances.
   */
  static async start(opts: LifecycleOptions): Promise<Lifecycle> {
    const engine = new Lifecycle(opts);
    const s = engine.scheduler;
    await s.owned.reconcile();
    for (const record of await engine.functions.list()) s.fns.set(record.name, engine.stateFor(record));
    await s.snapshots.scanLocal();
    for (const f of s.fns.values()) s.pump(f);
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
    const s = this.scheduler;
    const existing = s.fns.get(name);
    if (existing && !existing.draining) {
      existing.record = record;
      existing.key = snapshotKey(record.revision.manifestDigest, runtimeSpec(record.spec));
    } else {
      s.fns.set(name, this.stateFor(record, existing?.queue));
    }
    const f = s.fns.get(name)!;
    if (changed) {
      this.log('info', `function ${name}: revision ${record.revision.id}`, {
        function: name,
        revision: record.revision.id,
      });
      // instances of older revisions drain: idle ones stop now, busy ones when they are given back
      for (const i of s.instancesByName.values())
        if (i.fn === name && i.revision !== record.revision.id && isIdle(i)) s.stopInstance(i, 'old revision');
    }
    s.pump(f);
    return { function: this.view(f), changed };
  }

  get(name: string): FunctionView {
    return this.view(this.requireFunction(name));
  }

  list(): FunctionView[] {
    return [...this.scheduler.fns.values()]
      .sort((a, b) => (a.record.name < b.record.name ? -1 : 1))
      .map((f) => this.view(f));
  }

  instances(): InstanceView[] {
    return [...this.scheduler.instancesByName.values()].map(instanceView).sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** The local snapshots, with the functions whose current revision they serve. */
  async snapshots(): Promise<
    { id: string; createdAt: string; image: string; manifestDigest: string; functions: string[]; sizeBytes: number }[]
  > {
    const out = [];
    for (const m of await this.node.snapshots.store.list()) {
      const key = snapshotKey(m.image.manifestDigest, functionOfSnapshot(m));
      out.push({
        id: m.id,
        createdAt: m.createdAt,
        image: m.image.reference,
        manifestDigest: m.image.manifestDigest,
        functions: [...this.scheduler.fns.values()].filter((f) => f.key === key).map((f) => f.record.name),
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
  async remove(
    name: string,
    opts: { deleteSnapshots?: boolean; graceMs?: number } = {},
  ): Promise<{ removedSnapshots: string[] }> {
    const s = this.scheduler;
    const f = this.requireFunction(name);
    f.draining = true;
    for (const w of f.queue.splice(0)) s.rejectWaiter(f, w, drainingError(name));
    await s.drainInstances((i) => i.fn === name, opts.graceMs ?? 30_000);
    if (s.fns.get(name) !== f) return { removedSnapshots: [] }; // deployed again meanwhile: the new one stays
    await this.functions.remove(name);
    s.fns.delete(name);
    const removedSnapshots: string[] = [];
    if (opts.deleteSnapshots) {
      const stillUsed = [...s.fns.values()].some((o) => o.key === f.key);
      if (!stillUsed) {
        for (const m of await this.node.snapshots.store.list()) {
          if (snapshotKey(m.image.manifestDigest, functionOfSnapshot(m)) !== f.key) continue;
          await this.node.snapshots.remove(m.id);
          removedSnapshots.push(m.id);
        }
        for (const id of await s.snapshots.finder.idsInStore(f.key)) {
          await this.node.remote.s3().remove(id);
          if (!removedSnapshots.includes(id)) removedSnapshots.push(id);
        }
        s.snapshots.forget(f.key);
      }
    }
    return { removedSnapshots };
  }

  // ---- invocations ----

  /** Lends an instance of the function to one request (see the file comment for how). */
  acquire(name: string): Promise<Lease> {
    const s = this.scheduler;
    const f = s.fns.get(name);
    if (!f) return Promise.reject(notFound(name));
    if (f.draining || s.closing) return Promise.reject(drainingError(name));
    const spec = f.record.spec;
    const free = s.freeInstance(f);
    if (free && f.queue.length === 0) return Promise.resolve(s.lend(f, free, performance.now()));
    // capacity that existing or startable instances will bring; beyond it, maxQueue may wait
    const live = s.liveOf(f);
    const coming =
      (live.filter((i) => i.state === 'starting').length + Math.max(0, spec.maxInstances - live.length)) *
      spec.concurrency;
    if (f.queue.length - coming >= spec.maxQueue) {
      this.metrics.rejected.inc({ function: name, code: 'EMB_FUNCTION_QUEUE_FULL' });
      return Promise.reject(
        EmbersError.of('EMB_FUNCTION_QUEUE_FULL', {
          function: name,
          instances: live.length,
          maxInstances: spec.maxInstances,
          queued: f.queue.length,
          retryAfterSeconds: this.retryAfterSeconds(f),
        }),
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
          s.rejectWaiter(
            f,
            waiter,
            EmbersError.of('EMB_FUNCTION_TIMEOUT', {
              function: name,
              requestTimeoutSeconds: spec.requestTimeoutSeconds,
            }),
          );
        }, spec.requestTimeoutSeconds * 1000),
      };
      f.queue.push(waiter);
      s.pump(f);
    });
  }

  /** Seconds a client should wait before retrying a full queue: about one idle-free cycle. */
  retryAfterSeconds(f: FunctionState | string): number {
    const state = typeof f === 'string' ? this.scheduler.fns.get(f) : f;
    return Math.max(
      1,
      Math.min(30, Math.ceil((state?.queue.length ?? 0) / Math.max(1, state?.record.spec.concurrency ?? 1))),
    );
  }

  /**
   * Shuts down: refuses new requests, answers queued ones EMB_FUNCTION_DRAINING, lets
   * in-flight ones finish (up to graceMs), stops every instance it owns and tears the
   * network pool down when nothing else uses it.
   */
  async close(graceMs = 30_000): Promise<void> {
    const s = this.scheduler;
    if (s.closing) return;
    s.closing = true;
    const deadline = Date.now() + graceMs;
    const inFlight = () =>
      [...s.fns.values()].some((f) => f.queue.length > 0) || [...s.instancesByName.values()].some((i) => i.active > 0);
    while (inFlight() && Date.now() < deadline) await sleep(50);
    for (const f of s.fns.values())
      for (const w of f.queue.splice(0)) s.rejectWaiter(f, w, drainingError(f.record.name));
    await s.drainInstances(() => true, Math.max(0, deadline - Date.now()));
    s.spares.closeAll();
    await s.background.settle();
    await this.node.downIfIdle();
    this.node.remote.close();
  }

  // ---- views ----

  private stateFor(record: FunctionRecord, queue: Waiter[] = []): FunctionState {
    return {
      record,
      key: snapshotKey(record.revision.manifestDigest, runtimeSpec(record.spec)),
      queue,
      draining: false,
    };
  }

  private view(f: FunctionState): FunctionView {
    const snap = this.scheduler.snapshots.of(f.key);
    return {
      name: f.record.name,
      spec: f.record.spec,
      revision: f.record.revision,
      createdAt: f.record.createdAt,
      updatedAt: f.record.updatedAt,
      instances: [...this.scheduler.instancesByName.values()].filter((i) => i.fn === f.record.name).map(instanceView),
      queued: f.queue.length,
      snapshot: { state: snap.state, id: snap.id, error: snap.error },
    };
  }

  private requireFunction(name: string): FunctionState {
    validateFunctionName(name);
    const f = this.scheduler.fns.get(name);
    if (!f) throw notFound(name);
    return f;
  }

  private requireOpen(): void {
    if (this.scheduler.closing) throw EmbersError.of('EMB_FUNCTION_DRAINING', {});
  }
}

/**
 * The lifecycle's scheduler: the instances of every function and what happens to them. It
 * serves queued requests from free instances, decides each cold start (restore a snapshot,
 * boot, or wait for the revision's first snapshot), snapshots a boot after its first
 * successful invocation, stops idle instances (scale to zero) and drains them on removal or
 * shutdown. lifecycle.ts is the facade over it (functions, admission, views, close).
 */
import { randomBytes } from 'node:crypto';
import { EmbersError, asEmbersError } from '../errors.js';
import { roundMs } from '../util/format.js';
import { crashPoint } from '../util/crash-point.js';
import { sleep } from '../util/sleep.js';
import type { EmbersNode } from './node.js';
import { runtimeSpec } from './functions.js';
import { NodeMetrics, type StartKind } from './metrics.js';
import type { Peer } from './snapshot-finder.js';
import { SpareConnections } from './upstream.js';
import { OwnedMarks } from './owned-marks.js';
import { BackgroundTasks } from './background-tasks.js';
import { RevisionSnapshots } from './revision-snapshots.js';
import {
  bundleBytes,
  isIdle,
  startError,
  viewState,
  type FunctionState,
  type Lease,
  type LifecycleLog,
  type ManagedInstance,
  type Waiter,
} from './lifecycle-model.js';

export interface SchedulerOptions {
  node: EmbersNode;
  log: LifecycleLog;
  /** See LifecycleOptions. */
  lookupTtlMs: number;
  peers: Peer[];
  recordWorkingSets: boolean;
}

export class InstanceScheduler {
  readonly node: EmbersNode;
  readonly metrics: NodeMetrics;
  /** The functions by name (their current revision, queue, draining flag). */
  readonly fns = new Map<string, FunctionState>();
  readonly instancesByName = new Map<string, ManagedInstance>();
  /** The snapshot each key restores from, and their preparation. */
  readonly snapshots: RevisionSnapshots;
  readonly owned: OwnedMarks;
  readonly background = new BackgroundTasks();
  /** Connections to warm instances opened ahead of their requests. */
  readonly spares = new SpareConnections();
  /** Set once the node shuts down: no min instances are started any more. */
  closing = false;
  private readonly log: LifecycleLog;
  private readonly lookupTtlMs: number;

  constructor(opts: SchedulerOptions) {
    this.node = opts.node;
    this.log = opts.log;
    this.lookupTtlMs = opts.lookupTtlMs;
    this.owned = new OwnedMarks(this.node, this.log);
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
    this.snapshots = new RevisionSnapshots({
      node: this.node,
      metrics: this.metrics,
      log: this.log,
      owned: this.owned,
      background: this.background,
      peers: opts.peers,
      recordWorkingSets: opts.recordWorkingSets,
      closing: () => this.closing,
    });
  }

  // ---- lending instances ----

  lend(f: FunctionState, inst: ManagedInstance, since: number): Lease {
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
    if (inst.pendingSnapshot && this.snapshots.of(inst.key).state !== 'none') inst.pendingSnapshot = false;
    if (inst.pendingSnapshot && ok && inst.active === 0) {
      this.snapshotInstance(f, inst);
      return;
    }
    this.armIdle(f, inst);
    this.pump(f);
  }

  rejectWaiter(f: FunctionState, w: Waiter, err: EmbersError): void {
    clearTimeout(w.timer);
    this.metrics.rejected.inc({ function: f.record.name, code: err.code });
    w.reject(err);
  }

  // ---- the scheduler ----

  /** Serves the queue from free instances, starts instances for the rest (or waits for a snapshot), keeps min instances. */
  pump(f: FunctionState): void {
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
    const snap = this.snapshots.of(f.key);
    if (snap.state === 'ready' && snap.id) return { kind: 'restore', id: snap.id };
    if (snap.state === 'creating' || snap.lookingUp) return { kind: 'wait' };
    if (snap.state === 'none') {
      // fan-out: one boot per revision until its snapshot exists
      const bootPending = [...this.instancesByName.values()].some(
        (i) => i.key === f.key && i.pendingSnapshot && i.state !== 'stopping',
      );
      if (bootPending) return { kind: 'wait' };
      if (
        f.record.spec.snapshots === 'remote' &&
        this.snapshots.finder.searches &&
        Date.now() - (snap.lookedUpAt ?? 0) > this.lookupTtlMs
      ) {
        this.snapshots.lookupRemote(f.key, () => {
          for (const other of this.fns.values()) if (other.key === f.key) this.pump(other);
        });
        return { kind: 'wait' };
      }
    }
    return { kind: 'boot' };
  }

  freeInstance(f: FunctionState): ManagedInstance | undefined {
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
  liveOf(f: FunctionState): ManagedInstance[] {
    return [...this.instancesByName.values()].filter(
      (i) => i.fn === f.record.name && i.revision === f.record.revision.id && i.state !== 'stopping',
    );
  }

  // ---- cold starts ----

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
    this.log(
      'info',
      `function ${record.name}: cold start (${kind}${snapshotId ? ` of ${snapshotId}` : ''}) as ${inst.name}`,
      {
        function: record.name,
        instance: inst.name,
        kind,
      },
    );
    this.background.track(
      (async () => {
        const t0 = performance.now();
        try {
          await this.owned.mark(inst.name);
          if (kind === 'boot') {
            const rec = await this.node.run(runtimeSpec(record.spec), { name: inst.name });
            await crashPoint('lifecycle.cold-start.after-boot');
            inst.cloneIp = rec.cloneIp;
            inst.startPhases = { ...rec.timings.phases };
          } else if (!(await this.restoreEarly(inst))) {
            const prep = await this.snapshots.prepare(snapshotId!, this.snapshots.of(inst.key).sources);
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

  /**
   * Restores `inst` before its snapshot has arrived when RevisionSnapshots.startEarly does (see
   * coldStartRoute); false when it does not. The instance is ready once its clone is up; the rest
   * of the memory file keeps coming in the background (tracked, so shutdown waits for it; stopping
   * the instance ends it). A download that fails stops the instance and goes through startFailed;
   * one ended by the instance's own stop (drain, shutdown) is only logged: the snapshot stays usable.
   */
  private async restoreEarly(inst: ManagedInstance): Promise<boolean> {
    let failedHere = false;
    const snap = this.snapshots.of(inst.key);
    const early = await this.snapshots.startEarly(inst.snapshotId!, snap, inst.name, async (name) => {
      if (inst.state === 'stopping') return; // stopped by the scheduler: that stop ended the download
      failedHere = true;
      clearTimeout(inst.idleTimer);
      this.spares.drop(inst.name);
      inst.state = 'stopping';
      await this.node.stop(name).catch((err: unknown) => {
        const e = asEmbersError(err);
        this.log('error', `stopping ${name} failed: ${e.code} ${e.message}`, { instance: name });
        throw err;
      });
    });
    if (!early) return false;
    const rec = early.restore.clones[0].record;
    inst.cloneIp = rec.cloneIp;
    inst.arriving = true;
    inst.startPhases = { prepareMs: early.restore.prepareMs, ...rec.timings.phases };
    this.log('info', `function ${inst.fn}: ${inst.name} started before snapshot ${inst.snapshotId} arrived`, {
      function: inst.fn,
      instance: inst.name,
      snapshot: inst.snapshotId,
      bytesBeforeStart: early.restore.earlyStart?.bytesBeforeStart,
    });
    this.background.track(
      early.arrived.then(
        () => {
          inst.arriving = false;
        },
        async (err: unknown) => {
          inst.arriving = false;
          const e = asEmbersError(err);
          if (failedHere) return this.startFailed(inst, 'restore', e);
          this.log(
            'warn',
            `function ${inst.fn}: the download of snapshot ${inst.snapshotId} ended with ${inst.name}, stopped before it was complete: ${e.code} ${e.message}`,
            { function: inst.fn, snapshot: inst.snapshotId, code: e.code },
          );
        },
      ),
    );
    return true;
  }

  private async afterStart(inst: ManagedInstance): Promise<void> {
    const f = this.fns.get(inst.fn);
    if (!f || f.draining || f.record.revision.id !== inst.revision) {
      inst.state = 'ready';
      this.stopInstance(inst, 'no longer wanted');
      return;
    }
    inst.state = 'ready';
    if (
      inst.pendingSnapshot &&
      f.record.spec.snapshotWhen === 'ready' &&
      this.snapshots.of(inst.key).state === 'none'
    ) {
      this.snapshotInstance(f, inst);
      return;
    }
    this.armIdle(f, inst);
    this.pump(f);
  }

  private async startFailed(inst: ManagedInstance, kind: 'boot' | 'restore', err: EmbersError): Promise<void> {
    this.instancesByName.delete(inst.name);
    await this.owned.unmark(inst.name);
    this.log('error', `function ${inst.fn}: ${kind} of ${inst.name} failed: ${err.code} ${err.message}`, {
      function: inst.fn,
      code: err.code,
    });
    const f = this.fns.get(inst.fn);
    if (!f) return;
    if (kind === 'restore' && inst.snapshotId) {
      const snap = this.snapshots.of(inst.key);
      this.snapshots.unprepare(inst.snapshotId);
      if (snap.id === inst.snapshotId) {
        if (err.code === 'EMB_SNAPSHOT_NOT_FOUND' || err.code === 'EMB_REMOTE_NOT_FOUND') {
          // removed meanwhile (`embers snapshot rm` on this home): forgotten, so the next boot is snapshotted again
          Object.assign(snap, {
            state: 'none',
            id: undefined,
            sources: undefined,
            error: undefined,
            lookedUpAt: undefined,
          });
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

  // ---- snapshot after the first invocation ----

  /** Snapshots a booted instance in the background; it takes no request until this ends. */
  private snapshotInstance(f: FunctionState, inst: ManagedInstance): void {
    const snap = this.snapshots.of(inst.key);
    snap.state = 'creating';
    inst.state = 'snapshotting';
    this.spares.drop(inst.name); // no connection of ours may be caught in the snapshot
    this.log('info', `function ${inst.fn}: snapshot of ${inst.name} (revision ${inst.revision})`, {
      function: inst.fn,
      instance: inst.name,
    });
    this.background.track(
      (async () => {
        try {
          await crashPoint('lifecycle.snapshot.before-create');
          const r = await this.node.snapshots.create(inst.name);
          await crashPoint('lifecycle.snapshot.after-create');
          Object.assign(snap, { state: 'ready', id: r.manifest.id, error: undefined, sources: undefined });
          // warm up for the first restore: its disk is materialised and checked now, off the cold-start path
          this.background.track(
            this.snapshots
              .prepare(r.manifest.id, undefined)
              .then(() => this.snapshots.recordWorkingSet(inst.fn, r.manifest.id))
              .catch(() => undefined),
          );
          this.metrics.snapshotCreate.observe(r.timings.createMs / 1000);
          if (this.node.remote.mode === 'remote')
            this.metrics.transferBytes.inc({ direction: 'upload' }, bundleBytes(r.manifest));
          this.snapshots.finder.note(r.manifest, inst.key);
          this.log('info', `function ${inst.fn}: snapshot ${r.manifest.id} ready in ${r.timings.createMs} ms`, {
            function: inst.fn,
            snapshot: r.manifest.id,
          });
        } catch (err) {
          const e = asEmbersError(err);
          Object.assign(snap, { state: 'failed', error: `${e.code}: ${e.message}` });
          this.metrics.snapshotFailures.inc();
          this.log('error', `function ${inst.fn}: snapshot of ${inst.name} failed: ${e.code} ${e.message}`, {
            function: inst.fn,
            code: e.code,
          });
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

  // ---- scale to zero and stopping ----

  private armIdle(f: FunctionState, inst: ManagedInstance): void {
    clearTimeout(inst.idleTimer);
    if (inst.state !== 'ready' || inst.active > 0) return;
    // warm and never to be snapshotted (any more): its next request finds a connection open
    if (!inst.pendingSnapshot) this.spares.prime(inst.name, { host: inst.cloneIp, port: inst.port });
    inst.idleTimer = setTimeout(() => {
      inst.idleTimer = undefined;
      if (!isIdle(inst)) return;
      // its snapshot is still arriving, fed through this clone's page server: kept until it is here
      if (inst.arriving) return this.armIdle(f, inst);
      const current = this.fns.get(inst.fn);
      const keep =
        current &&
        current.record.revision.id === inst.revision &&
        this.liveOf(current).length <= current.record.spec.minInstances;
      if (keep) return;
      this.stopInstance(inst, `idle for ${f.record.spec.idleTimeoutSeconds} s`);
    }, f.record.spec.idleTimeoutSeconds * 1000);
    inst.idleTimer.unref();
  }

  stopInstance(inst: ManagedInstance, why: string): void {
    if (inst.state === 'stopping') return;
    clearTimeout(inst.idleTimer);
    this.spares.drop(inst.name);
    inst.state = 'stopping';
    this.log('info', `function ${inst.fn}: stopping ${inst.name} (${why})`, { function: inst.fn, instance: inst.name });
    this.background.track(
      (async () => {
        try {
          await this.node.stop(inst.name);
          await this.owned.unmark(inst.name);
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
  async drainInstances(match: (i: ManagedInstance) => boolean, graceMs: number): Promise<void> {
    const deadline = Date.now() + graceMs;
    const busy = () =>
      [...this.instancesByName.values()].filter(
        (i) => match(i) && (i.active > 0 || i.state === 'starting' || i.state === 'snapshotting'),
      );
    while (busy().length > 0 && Date.now() < deadline) await sleep(50);
    for (const i of [...this.instancesByName.values()]) if (match(i)) this.stopInstance(i, 'drain');
    while ([...this.instancesByName.values()].some(match)) {
      if (Date.now() > deadline + 60_000) break;
      await this.background.settle();
      await sleep(20);
    }
  }
}

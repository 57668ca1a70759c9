/**
 * The node's Prometheus metrics, in one registry of their own (never prom-client's global
 * one, so two nodes in one process never mix). The lifecycle records events; gauges that
 * describe current state (instances, queue, free network slots) are read when scraped.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Cold starts under TCG take 0.1–10 s; warm calls a few ms. */
const START_BUCKETS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60];
const PHASE_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export type StartKind = 'warm' | 'restore' | 'boot';

/** What the scrape-time gauges read from. */
export interface MetricsSources {
  /** Instances by function and state. */
  instances(): { function: string; state: string; count: number }[];
  /** Requests waiting for an instance, by function. */
  queued(): { function: string; count: number }[];
  /** Free pre-created network slots. */
  freeSlots(): Promise<number>;
}

export class NodeMetrics {
  readonly registry = new Registry();
  readonly coldStart = new Histogram({
    name: 'embers_cold_start_seconds',
    help: 'Cold starts: from the decision to start an instance until its function answered, by kind (boot or restore)',
    labelNames: ['kind'] as const,
    buckets: START_BUCKETS,
    registers: [this.registry],
  });
  readonly bootPhase = this.phaseHistogram(
    'embers_boot_phase_seconds',
    'Phases of boots (image, slot, disk, initrd, vmm, toReady)',
  );
  readonly restorePhase = this.phaseHistogram(
    'embers_restore_phase_seconds',
    'Phases of restores (prepare: fetch and verify; slot, disk, vmm, toReady)',
  );
  readonly invocations = new Counter({
    name: 'embers_invocations_total',
    help: 'Invocations answered by an instance, by function and how the instance was started for it (warm, restore, boot)',
    labelNames: ['function', 'start'] as const,
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: 'embers_invocations_rejected_total',
    help: 'Invocations not served, by function and EMB code (queue full, deadline, start failed)',
    labelNames: ['function', 'code'] as const,
    registers: [this.registry],
  });
  readonly snapshotCreate = new Histogram({
    name: 'embers_snapshot_create_seconds',
    help: 'Snapshot creation, pause to publish (and upload in remote mode)',
    buckets: START_BUCKETS,
    registers: [this.registry],
  });
  readonly snapshotFailures = new Counter({
    name: 'embers_snapshot_failures_total',
    help: 'Snapshots that could not be created',
    registers: [this.registry],
  });
  readonly transferBytes = new Counter({
    name: 'embers_snapshot_transfer_bytes_total',
    help: 'Snapshot bytes moved to (upload: the bundle size) or from (download: bytes received) remote stores',
    labelNames: ['direction'] as const,
    registers: [this.registry],
  });

  constructor(sources: MetricsSources) {
    new Gauge({
      name: 'embers_instances',
      help: 'Instances by function and state (starting, idle, busy, snapshotting, stopping)',
      labelNames: ['function', 'state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const i of sources.instances()) this.set({ function: i.function, state: i.state }, i.count);
      },
    });
    new Gauge({
      name: 'embers_queued_requests',
      help: 'Requests waiting for an instance, by function',
      labelNames: ['function'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const q of sources.queued()) this.set({ function: q.function }, q.count);
      },
    });
    new Gauge({
      name: 'embers_network_free_slots',
      help: 'Pre-created network slots free for new instances',
      registers: [this.registry],
      async collect() {
        this.set(await sources.freeSlots());
      },
    });
  }

  /** A histogram of the phases of one kind of start, labelled by phase, in this node's registry. */
  private phaseHistogram(name: string, help: string): Histogram<'phase'> {
    return new Histogram({
      name,
      help,
      labelNames: ['phase'] as const,
      buckets: PHASE_BUCKETS,
      registers: [this.registry],
    });
  }

  /** Records a cold start and its phases (ms, as the node reports them). */
  observeStart(kind: 'boot' | 'restore', totalMs: number, phases: Record<string, number>): void {
    this.coldStart.observe({ kind }, totalMs / 1000);
    const hist = kind === 'boot' ? this.bootPhase : this.restorePhase;
    for (const [name, ms] of Object.entries(phases)) hist.observe({ phase: name.replace(/Ms$/, '') }, ms / 1000);
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * The records the lifecycle engine keeps (instances it owns, queued requests, functions,
 * snapshots per key), the views and leases it hands out, and the errors it answers with.
 * The engine itself is lifecycle.ts (the facade) over scheduler.ts.
 */
import type { Socket } from 'node:net';
import { EmbersError } from '../errors.js';
import type { SnapshotManifest } from '../snapshot/manifest.js';
import type { EmbersNode } from './node.js';
import type { FunctionRecord } from './functions.js';
import type { StartKind } from './metrics.js';
import type { SnapshotSource } from './remote.js';
import type { Peer } from './snapshot-finder.js';

export type InstanceState = 'starting' | 'idle' | 'busy' | 'snapshotting' | 'stopping';
export type SnapshotState = 'none' | 'creating' | 'ready' | 'failed';

/** One instance the engine owns. */
export interface ManagedInstance {
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
  /** Restored before its snapshot had arrived: the rest of the memory file is still downloading (scheduler.ts). */
  arriving?: boolean;
  /** The cold-start phases (ms), reported to the request that first uses the instance. */
  startPhases: Record<string, number>;
  startMs: number;
  createdAt: string;
  lastUsed: number;
  idleTimer?: NodeJS.Timeout;
}

export interface Waiter {
  enqueuedAt: number;
  resolve: (lease: Lease) => void;
  reject: (err: EmbersError) => void;
  timer: NodeJS.Timeout;
}

export interface FunctionState {
  record: FunctionRecord;
  key: string;
  queue: Waiter[];
  draining: boolean;
}

/** A snapshot as the engine tracks it, per snapshot key (see functions.ts). */
export interface KeySnapshot {
  state: SnapshotState;
  id?: string;
  error?: string;
  /** Where a snapshot found on other nodes can be fetched from, in the order to try (absent: it is here). */
  sources?: SnapshotSource[];
  /** What the search read of a snapshot found on other nodes that an early start needs (see FoundSnapshot). */
  found?: { memoryChunked: boolean; workingSet: boolean };
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

export type LifecycleLog = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export interface LifecycleOptions {
  node: EmbersNode;
  /** Logs what the engine decides (cold starts, snapshots, scale to zero). */
  log?: LifecycleLog;
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

export function isIdle(i: ManagedInstance): boolean {
  return i.state === 'ready' && i.active === 0;
}

export function viewState(i: ManagedInstance): InstanceState {
  if (i.state === 'ready') return i.active > 0 ? 'busy' : 'idle';
  return i.state;
}

export function instanceView(i: ManagedInstance): InstanceView {
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

export function bundleBytes(m: SnapshotManifest): number {
  return m.files.reduce((n, f) => n + f.sizeBytes, 0);
}

export function notFound(name: string): EmbersError {
  return EmbersError.of('EMB_FUNCTION_NOT_FOUND', { function: name });
}

export function drainingError(name: string): EmbersError {
  return EmbersError.of('EMB_FUNCTION_DRAINING', { function: name });
}

/** A start failure as the invoking client sees it: the code of what failed, the function named. */
export function startError(fn: string, err: EmbersError): EmbersError {
  return err.within(`function ${fn} failed to start`, { function: fn, startFailed: true });
}

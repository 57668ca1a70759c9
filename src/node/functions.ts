/**
 * Functions and their revisions, as the node daemon keeps them.
 *
 * A function is a name plus its spec (`FunctionConfig`: what the VM runs, and how it scales
 * and snapshots). A revision is the resolved image manifest digest plus the whole spec: a
 * change of either gives a new revision id. Specs persist as `<home>/functions/<name>.json`,
 * written atomically (temp file, fsync, rename), so a restarted daemon serves the same
 * functions and a crash never leaves half a spec.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { sha256, writeJsonAtomic } from '../util/fs.js';
import { hostLimits, type FunctionSpec, type HostLimits } from './function-spec.js';
import type { SnapshotMode } from './remote.js';

/** When a revision's snapshot is taken. */
export type SnapshotWhen = 'first-invocation' | 'ready';

/** A function's spec, every field with its default applied (see `validateFunctionConfig`). */
export interface FunctionConfig {
  /** The OCI image reference (registry reference or local layout). */
  image: string;
  /** @default 1 */
  vcpus: number;
  /** @default 256 */
  memoryMiB: number;
  /** The guest port the function serves HTTP on. @default 8080 */
  port: number;
  /** Extra environment, "K=V". @default [] */
  env: string[];
  /** Instances kept warm even when idle. @default 0 */
  minInstances: number;
  /** @default 10 */
  maxInstances: number;
  /** Requests one instance serves at a time. @default 1 */
  concurrency: number;
  /** An idle instance stops after this long (scale to zero). @default 60 */
  idleTimeoutSeconds: number;
  /** disabled: never snapshot; local or remote: the node's snapshot modes. @default the node's mode */
  snapshots: SnapshotMode;
  /** Snapshot after the first successful invocation, or as soon as a booted instance is ready. @default 'first-invocation' */
  snapshotWhen: SnapshotWhen;
  /** Requests that may wait for an instance; one more gets 429. @default 100 */
  maxQueue: number;
  /** How long a request may wait for an instance (including a cold start) before 504. @default 60 */
  requestTimeoutSeconds: number;
  /** Run after every restore of its snapshots (see FunctionSpec.restoreHook). @default the image's label, if any */
  restoreHook?: { path: string; timeoutMs?: number };
}

/** What the daemon stores per function. */
export interface FunctionRecord {
  name: string;
  spec: FunctionConfig;
  revision: Revision;
  createdAt: string;
  updatedAt: string;
}

export interface Revision {
  /** `rev-` + 16 hex digits of sha256(manifest digest + canonical spec). */
  id: string;
  /** The image manifest digest the reference resolved to when the revision was made. */
  manifestDigest: string;
  createdAt: string;
}

export const FUNCTION_DEFAULTS = {
  vcpus: 1,
  memoryMiB: 256,
  port: 8080,
  minInstances: 0,
  maxInstances: 10,
  concurrency: 1,
  idleTimeoutSeconds: 60,
  snapshotWhen: 'first-invocation',
  maxQueue: 100,
  requestTimeoutSeconds: 60,
} as const;

/** Limits of each numeric field: [min, max, integer]. */
export const FUNCTION_LIMITS = {
  vcpus: [1, 32, true],
  memoryMiB: [64, 65536, true],
  port: [1, 65535, true],
  minInstances: [0, 100, true],
  maxInstances: [1, 100, true],
  concurrency: [1, 1000, true],
  idleTimeoutSeconds: [0.1, 86400, false],
  maxQueue: [0, 10000, true],
  requestTimeoutSeconds: [0.1, 3600, false],
} as const satisfies Record<string, readonly [number, number, boolean]>;

/** Function names: short enough that `<name>-<8 hex>-<4 hex>` is a valid instance name. */
export const FUNCTION_NAME_RE = /^[a-z][a-z0-9-]{0,39}$/;
const ENV_RE = /^[A-Za-z_][A-Za-z0-9_]*=[^\0]*$/;
const MAX_ENV = 128;
const MAX_IMAGE_REF = 512;

export function validateFunctionName(name: unknown): string {
  if (typeof name !== 'string' || !FUNCTION_NAME_RE.test(name)) {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      option: 'function name',
      value: name,
      problem: "is invalid: use 1-40 of a-z, 0-9 and '-', starting with a letter",
      name,
    });
  }
  return name;
}

/**
 * Checks a spec as sent by a client and applies the defaults. Unknown fields, wrong types and
 * out-of-range values are EMB_FUNCTION_SPEC_INVALID naming the field, and so are vcpus or
 * memory beyond what `host` has (refused at deploy, not at the first cold start). `nodeMode`
 * is the node's snapshot mode: the default, and the ceiling (remote needs a node with a store).
 */
export function validateFunctionConfig(
  input: unknown,
  nodeMode: SnapshotMode,
  host: HostLimits = hostLimits(),
): FunctionConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', { expected: 'a JSON object' });
  const raw = input as Record<string, unknown>;
  const known = new Set([...Object.keys(FUNCTION_DEFAULTS), 'image', 'env', 'snapshots', 'restoreHook']);
  for (const key of Object.keys(raw))
    if (!known.has(key))
      throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
        option: 'the function spec',
        problem: `has an unknown field "${key}"`,
        field: key,
      });

  const image = raw.image;
  if (typeof image !== 'string' || image.length === 0 || image.length > MAX_IMAGE_REF || /[\s\0]/.test(image)) {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      field: 'image',
      value: image,
      expected: `an image reference (1-${MAX_IMAGE_REF} characters, no spaces)`,
    });
  }
  const num = (field: keyof typeof FUNCTION_LIMITS): number => {
    const v = raw[field] ?? (FUNCTION_DEFAULTS as Record<string, unknown>)[field];
    const [min, max, integer] = FUNCTION_LIMITS[field];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
      throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
        field,
        value: v,
        expected: `${integer ? 'an integer' : 'a number'} from ${min} to ${max}`,
      });
    }
    return v;
  };
  const env = raw.env ?? [];
  if (!Array.isArray(env) || env.length > MAX_ENV || !env.every((e) => typeof e === 'string' && ENV_RE.test(e))) {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      field: 'env',
      expected: `a list of at most ${MAX_ENV} "NAME=value" strings`,
    });
  }
  const snapshots = raw.snapshots ?? nodeMode;
  if (snapshots !== 'disabled' && snapshots !== 'local' && snapshots !== 'remote') {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      field: 'snapshots',
      value: snapshots,
      expected: 'disabled, local or remote',
    });
  }
  if (snapshots !== 'disabled' && nodeMode === 'disabled')
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      field: 'snapshots',
      value: snapshots,
      problem: 'is not possible: snapshots are disabled on this node (use snapshots "disabled")',
    });
  if (snapshots === 'remote' && nodeMode !== 'remote') {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      field: 'snapshots',
      value: snapshots,
      problem: 'needs a node with an S3-compatible store (embers serve --snapshots remote, EMBERS_S3_*)',
    });
  }
  const snapshotWhen = raw.snapshotWhen ?? FUNCTION_DEFAULTS.snapshotWhen;
  if (snapshotWhen !== 'first-invocation' && snapshotWhen !== 'ready') {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      field: 'snapshotWhen',
      value: snapshotWhen,
      expected: 'first-invocation or ready',
    });
  }
  const spec: FunctionConfig = {
    image,
    vcpus: num('vcpus'),
    memoryMiB: num('memoryMiB'),
    port: num('port'),
    env: [...(env as string[])],
    minInstances: num('minInstances'),
    maxInstances: num('maxInstances'),
    concurrency: num('concurrency'),
    idleTimeoutSeconds: num('idleTimeoutSeconds'),
    snapshots,
    snapshotWhen,
    maxQueue: num('maxQueue'),
    requestTimeoutSeconds: num('requestTimeoutSeconds'),
  };
  if (spec.vcpus > host.cpus) {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      problem: `is not possible here: this host has ${host.cpus} CPU(s)`,
      field: 'vcpus',
      value: spec.vcpus,
      hostCpus: host.cpus,
    });
  }
  if (spec.memoryMiB > host.memoryMiB) {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      problem: `is not possible here: this host has ${host.memoryMiB} MiB`,
      field: 'memoryMiB',
      value: spec.memoryMiB,
      hostMemoryMiB: host.memoryMiB,
    });
  }
  if (raw.restoreHook !== undefined) {
    const h = raw.restoreHook as { path?: unknown; timeoutMs?: unknown };
    const keys = typeof h === 'object' && h !== null && !Array.isArray(h) ? Object.keys(h) : ['?'];
    const timeoutOk =
      h?.timeoutMs === undefined ||
      (Number.isInteger(h.timeoutMs) && (h.timeoutMs as number) >= 1 && (h.timeoutMs as number) <= 3_600_000);
    if (
      keys.some((k) => k !== 'path' && k !== 'timeoutMs') ||
      typeof h.path !== 'string' ||
      !/^\/[^\0]{0,4095}$/.test(h.path) ||
      !timeoutOk
    ) {
      throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
        field: 'restoreHook',
        value: raw.restoreHook,
        expected: '{"path": an absolute path in the image, "timeoutMs": 1 to 3600000 (optional)}',
      });
    }
    spec.restoreHook = { path: h.path, ...(h.timeoutMs !== undefined ? { timeoutMs: h.timeoutMs as number } : {}) };
  }
  if (spec.minInstances > spec.maxInstances) {
    throw EmbersError.of('EMB_FUNCTION_SPEC_INVALID', {
      field: 'minInstances',
      value: spec.minInstances,
      problem: `must not exceed maxInstances (${spec.maxInstances})`,
    });
  }
  return spec;
}

/** What the VM runs: the part of the spec a snapshot captures (the scaling fields are not in it). */
export function runtimeSpec(spec: FunctionConfig): FunctionSpec {
  return {
    image: spec.image,
    vcpus: spec.vcpus,
    memoryMiB: spec.memoryMiB,
    port: spec.port,
    env: [...spec.env],
    ...(spec.restoreHook ? { restoreHook: { ...spec.restoreHook } } : {}),
  };
}

/** The revision id of a spec resolved to an image manifest digest. */
export function revisionId(manifestDigest: string, spec: FunctionConfig): string {
  return `rev-${sha256(canonicalJson({ manifestDigest, spec })).slice(0, 16)}`;
}

/**
 * The key that ties a snapshot to the revisions it can serve: the image manifest digest plus
 * what the VM runs. Two revisions that differ only in scaling share their VM, so they share
 * snapshots; another node computes the same key from the same spec and image, which is how
 * it finds a remote snapshot of the revision.
 */
export function snapshotKey(manifestDigest: string, fn: FunctionSpec): string {
  const { image, vcpus, memoryMiB, port, env, entrypoint, cmd, restoreHook } = fn;
  // restoreHook only when set: the keys of snapshots without one stay what they were
  return sha256(
    canonicalJson({
      manifestDigest,
      image,
      vcpus,
      memoryMiB,
      port,
      env,
      entrypoint: entrypoint ?? null,
      cmd: cmd ?? null,
      restoreHook,
    }),
  );
}

/** JSON with object keys sorted at every level, so equal values give equal bytes. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The function records of one home. */
export class FunctionStore {
  constructor(readonly dir: string) {}

  private pathOf(name: string): string {
    return join(this.dir, `${validateFunctionName(name)}.json`);
  }

  async get(name: string): Promise<FunctionRecord | undefined> {
    const text = await readFile(this.pathOf(name), 'utf8').catch(() => undefined);
    return text ? (JSON.parse(text) as FunctionRecord) : undefined;
  }

  async list(): Promise<FunctionRecord[]> {
    const out: FunctionRecord[] = [];
    for (const file of (await readdir(this.dir).catch(() => [] as string[])).sort()) {
      const name = file.endsWith('.json') ? file.slice(0, -5) : '';
      if (!FUNCTION_NAME_RE.test(name)) continue; // temp files of an interrupted write
      const rec = await this.get(name);
      if (rec) out.push(rec);
    }
    return out;
  }

  /**
   * Creates or updates a function. The revision changes when the manifest digest or the spec
   * does; putting the same spec again keeps the revision (and its createdAt).
   */
  async put(
    name: string,
    spec: FunctionConfig,
    manifestDigest: string,
  ): Promise<{ record: FunctionRecord; changed: boolean }> {
    const now = new Date().toISOString();
    const previous = await this.get(name);
    const id = revisionId(manifestDigest, spec);
    if (previous && previous.revision.id === id) return { record: previous, changed: false };
    const record: FunctionRecord = {
      name,
      spec,
      revision: { id, manifestDigest, createdAt: now },
      createdAt: previous?.createdAt ?? now,
      updatedAt: now,
    };
    await writeJsonAtomic(this.pathOf(name), record);
    return { record, changed: true };
  }

  async remove(name: string): Promise<boolean> {
    const path = this.pathOf(name);
    const had = (await readFile(path).catch(() => undefined)) !== undefined;
    await rm(path, { force: true });
    return had;
  }
}

import { availableParallelism, totalmem } from 'node:os';
import { EmbersError } from '../errors.js';
import type { FlattenedImage } from '../image/types.js';

/**
 * What a function is: an image plus its run config. Only node/ knows functions: below it a
 * snapshot manifest carries the spec as opaque JSON and the VMM sees only a VmSpec.
 */
export interface FunctionSpec {
  image: string;
  vcpus: number;
  memoryMiB: number;
  /** The guest port the function serves HTTP on. */
  port: number;
  /** Extra environment, "K=V", added to the image's. */
  env: string[];
  /** Replaces the image's Entrypoint (and drops its Cmd) when given, as `docker run --entrypoint` does. */
  entrypoint?: string[];
  /** Replaces the image's Cmd when given. */
  cmd?: string[];
  /**
   * Run after every restore, before the clone is ready: an executable in the function's root,
   * run as root with the function's env by the guest agent (after it has set the clock and fed
   * the RNG). A function re-seeds its own generators and re-opens connections here. A hook that
   * fails, times out or cannot start fails the restore (EMB_RESTORE_HOOK_FAILED).
   */
  restoreHook?: { path: string; /** @default 30000 */ timeoutMs?: number };
}

/** How long a restore hook may run unless its spec says. */
export const DEFAULT_RESTORE_HOOK_TIMEOUT_MS = 30_000;

/** What this host can give one guest. */
export interface HostLimits {
  cpus: number;
  memoryMiB: number;
}

export function hostLimits(): HostLimits {
  return { cpus: availableParallelism(), memoryMiB: Math.floor(totalmem() / 1024 / 1024) };
}

/** Smallest guest memory the guest kit boots in. */
export const MIN_MEMORY_MIB = 64;

/** "NAME=value", NAME as a shell variable name. */
const ENV_ENTRY_RE = /^[A-Za-z_][A-Za-z0-9_]*=/;

/**
 * Refuses, before any resource is taken, a spec this host cannot run: vCPUs or memory beyond
 * what the host has, a port outside 1-65535, an env entry that is not NAME=value. Without this
 * the VMM fails late and obscurely (a QMP timeout, a refused socket, a 60 s ready timeout).
 */
export function validateFunctionSpec(fn: FunctionSpec, host: HostLimits = hostLimits()): void {
  if (typeof fn.image !== 'string' || fn.image === '')
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      { option: 'image', field: 'image', value: fn.image, problem: 'is missing: the function has no image' },
      { hint: 'name an image reference or a local OCI layout' },
    );
  if (!Number.isInteger(fn.vcpus) || fn.vcpus < 1 || fn.vcpus > host.cpus) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      {
        option: 'vcpus',
        field: 'vcpus',
        value: fn.vcpus,
        problem: `is not possible here: this host has ${host.cpus} CPU(s)`,
      },
      { hint: `pass --vcpus from 1 to ${host.cpus}` },
    );
  }
  if (!Number.isInteger(fn.memoryMiB) || fn.memoryMiB < MIN_MEMORY_MIB || fn.memoryMiB > host.memoryMiB) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      {
        option: 'memory',
        field: 'memoryMiB',
        value: fn.memoryMiB,
        problem: `MiB is not possible here: a guest needs at least ${MIN_MEMORY_MIB} MiB and this host has ${host.memoryMiB} MiB`,
      },
      { hint: `pass --memory from ${MIN_MEMORY_MIB} to ${host.memoryMiB}` },
    );
  }
  if (!Number.isInteger(fn.port) || fn.port < 1 || fn.port > 65535) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      { option: 'port', field: 'port', value: fn.port, problem: 'is not a TCP port (1-65535)' },
      { hint: 'pass --port with the port the function listens on, from 1 to 65535' },
    );
  }
  if (!Array.isArray(fn.env))
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      { option: 'env', field: 'env', value: fn.env, expected: 'a list of NAME=value entries' },
      { hint: 'pass each entry as --env NAME=value' },
    );
  if (fn.restoreHook !== undefined) {
    const h = fn.restoreHook as { path?: unknown; timeoutMs?: unknown };
    if (
      typeof h !== 'object' ||
      h === null ||
      typeof h.path !== 'string' ||
      !h.path.startsWith('/') ||
      h.path.includes('\0') ||
      h.path.length > 4096
    ) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        {
          option: 'restoreHook.path',
          field: 'restoreHook',
          value: h?.path,
          expected: "an absolute path in the function's root",
        },
        { hint: 'pass --restore-hook /path/to/executable' },
      );
    }
    if (
      h.timeoutMs !== undefined &&
      (!Number.isInteger(h.timeoutMs) || (h.timeoutMs as number) < 1 || (h.timeoutMs as number) > 3_600_000)
    ) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        {
          option: 'restoreHook.timeoutMs',
          field: 'restoreHook',
          value: h.timeoutMs,
          problem: 'is not a whole number of ms from 1 to 3600000',
        },
        { hint: 'pass --restore-hook-timeout as a duration (e.g. 30s)' },
      );
    }
  }
  for (const entry of fn.env) {
    if (typeof entry !== 'string' || !ENV_ENTRY_RE.test(entry) || entry.includes('\0')) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        {
          option: 'env entry',
          field: 'env',
          value: entry,
          problem: 'is not NAME=value (NAME of letters, digits and _, not starting with a digit)',
        },
        { hint: 'pass each entry as --env NAME=value' },
      );
    }
  }
}

/** The function spec a snapshot was made of, sized as the snapshot's machine (its memory file fixes both). */
export function functionOfSnapshot(m: {
  function: object;
  machine: { vcpus: number; memoryMiB: number };
}): FunctionSpec {
  return { ...(m.function as FunctionSpec), vcpus: m.machine.vcpus, memoryMiB: m.machine.memoryMiB };
}

/** The guest's run config: the image's entrypoint/cmd/env/user/workdir with the function's overrides. */
export function runConfigFor(image: FlattenedImage, fn: FunctionSpec, hostname: string) {
  const env = new Map<string, string>();
  for (const kv of [...image.config.env, ...fn.env]) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv);
  }
  const argv = fn.entrypoint
    ? [...fn.entrypoint, ...(fn.cmd ?? [])]
    : [...image.config.entrypoint, ...(fn.cmd ?? image.config.cmd)];
  if (argv.length === 0) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'image',
      value: image.reference,
      problem: 'has no entrypoint or cmd, and none was given',
    });
  }
  return {
    argv,
    env: [...env.values()],
    workingDir: image.config.workingDir || '/',
    user: image.config.user,
    hostname,
  };
}

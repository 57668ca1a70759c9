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
}

/** The function spec a snapshot was made of, sized as the snapshot's machine (its memory file fixes both). */
export function functionOfSnapshot(m: { function: object; machine: { vcpus: number; memoryMiB: number } }): FunctionSpec {
  return { ...(m.function as FunctionSpec), vcpus: m.machine.vcpus, memoryMiB: m.machine.memoryMiB };
}

/** The guest's run config: the image's entrypoint/cmd/env/user/workdir with the function's overrides. */
export function runConfigFor(image: FlattenedImage, fn: FunctionSpec, hostname: string) {
  const env = new Map<string, string>();
  for (const kv of [...image.config.env, ...fn.env]) {
    const eq = kv.indexOf('=');
    if (eq > 0) env.set(kv.slice(0, eq), kv);
  }
  const argv = fn.entrypoint ? [...fn.entrypoint, ...(fn.cmd ?? [])] : [...image.config.entrypoint, ...(fn.cmd ?? image.config.cmd)];
  if (argv.length === 0) {
    throw new EmbersError('EMB_CONFIG_INVALID', `image ${image.reference} has no entrypoint or cmd, and none was given`, { image: image.reference });
  }
  return { argv, env: [...env.values()], workingDir: image.config.workingDir || '/', user: image.config.user, hostname };
}

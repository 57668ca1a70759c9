/** The set-up every registry-*.test.ts file shares: a work dir and its registries, as node:test hooks. */
import { after, before } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { registrySkipReason, startRegistry, type StartRegistryOptions, type TestRegistry } from './registry.js';

/**
 * Registers the file's `before` and `after` hooks. Before: a work dir `/tmp/embers-<name>-…`,
 * then a registry per entry of `options`, started together; `ready` gets both (the dir and the
 * registries in the order of `options`) and keeps them in the file's variables. After: every
 * registry stopped, the dir removed.
 * Returns the tests' `skip`: `registrySkipReason()`; when it is set, nothing is started.
 */
export function useTestRegistries<const O extends StartRegistryOptions[]>(
  name: string,
  options: O,
  ready: (base: string, registries: { [K in keyof O]: TestRegistry }) => void,
): string | false {
  const skip = registrySkipReason();
  let base: string | undefined;
  let registries: TestRegistry[] = [];
  before(async () => {
    if (skip) return;
    base = await mkdtemp(`/tmp/embers-${name}-`);
    registries = await Promise.all(options.map((o) => startRegistry(o)));
    ready(base, registries as { [K in keyof O]: TestRegistry });
  });
  after(async () => {
    await Promise.all(registries.map((r) => r.stop()));
    if (base) await rm(base, { recursive: true, force: true });
  });
  return skip;
}

/**
 * Where the guest kit's source files (init script, exec helper, kernel config) live. They
 * are not compiled by tsc, so both src/guest/*.ts and dist/src/guest/*.js find them in the
 * package's src/guest/ folder: walk up from this module to the folder with package.json.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EmbersError } from '../errors.js';

let root: string | undefined;

/** The embers package root (the folder holding package.json). */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'src', 'guest'))) return (root = dir);
    const up = dirname(dir);
    if (up === dir)
      throw EmbersError.of('EMB_INTERNAL', {
        problem: `cannot find the embers package root above ${fileURLToPath(import.meta.url)}`,
      });
    dir = up;
  }
}

/** src/guest/init: the init script and the exec helper's C source. */
export function guestInitDir(): string {
  return join(packageRoot(), 'src', 'guest', 'init');
}

/** Firecracker's guest kernel config shipped with embers. */
export function firecrackerConfigPath(): string {
  return join(packageRoot(), 'src', 'guest', 'firecracker', 'microvm-kernel-ci-x86_64-6.1.config');
}

/** embers' Kconfig lines applied on top of Firecracker's config (see SOURCE.md there). */
export function firecrackerOverridesPath(): string {
  return join(packageRoot(), 'src', 'guest', 'firecracker', 'embers-overrides.config');
}

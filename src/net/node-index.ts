import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { environment } from '../config.js';
import { exists } from '../util/fs.js';
import { MAX_NODES } from './addressing.js';

/**
 * Each embers home on a machine is a node with its own index k (0..31), which picks its
 * netns names, veth names and address ranges. Claims live in a tmpfs registry (/run), so
 * they vanish on reboot together with the namespaces they name.
 */
export const RUN_DIR = environment().runDir;
const NODES_DIR = join(RUN_DIR, 'nodes');

export interface NodeClaim {
  index: number;
  /** True when a stale claim (its home is gone) was taken over: its leftovers must be swept. */
  tookOverStale: boolean;
}

export async function claimNodeIndex(home: string): Promise<NodeClaim> {
  await mkdir(NODES_DIR, { recursive: true });
  const owners = new Map<number, string>();
  for (const { index, owner } of await readClaims()) {
    if (owner === home) return { index, tookOverStale: false };
    owners.set(index, owner);
  }
  // Prefer a never-used index; take over a stale one (its home was deleted) only if needed.
  for (let index = 0; index < MAX_NODES; index++) {
    if (owners.has(index)) continue;
    try {
      await writeFile(join(NODES_DIR, String(index)), `${home}\n`, { flag: 'wx' });
      return { index: await settleDuplicateClaims(home, index), tookOverStale: false };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  for (const [index, owner] of owners) {
    if (owner && (await exists(owner))) continue;
    await writeFile(join(NODES_DIR, String(index)), `${home}\n`);
    return { index, tookOverStale: true };
  }
  throw EmbersError.of(
    'EMB_NET_EXHAUSTED',
    { registry: NODES_DIR, limit: MAX_NODES },
    {
      hint: `run \`embers down\` in homes no longer needed, or remove stale entries from ${NODES_DIR}`,
    },
  );
}

/**
 * Two processes opening the same fresh home at once may each claim an index: both then keep
 * the lowest one the home holds, and the holder of a higher one gives it back.
 */
async function settleDuplicateClaims(home: string, mine: number): Promise<number> {
  const held = (await readClaims()).filter((c) => c.owner === home).map((c) => c.index);
  const lowest = Math.min(mine, ...held);
  if (lowest !== mine) await rm(join(NODES_DIR, String(mine)), { force: true });
  return lowest;
}

/** The index this home holds, if it holds one (claims nothing). */
export async function lookupNodeIndex(home: string): Promise<number | undefined> {
  // readClaims throws only when NODES_DIR cannot be listed: no registry, no index
  const claims = await readClaims().catch(() => []);
  return claims.find((c) => c.owner === home)?.index;
}

export async function releaseNodeIndex(home: string, index: number): Promise<void> {
  if ((await ownerOf(index)) === home) await rm(join(NODES_DIR, String(index)), { force: true });
}

/** The home recorded in registry entry `entry` (an index or a listed name); '' when it is gone or unreadable. */
async function ownerOf(entry: number | string): Promise<string> {
  return (await readFile(join(NODES_DIR, String(entry)), 'utf8').catch(() => '')).trim();
}

/** Every registry entry whose name is an integer, with its owner, in listing order. Throws when NODES_DIR cannot be listed. */
async function readClaims(): Promise<{ index: number; owner: string }[]> {
  const claims: { index: number; owner: string }[] = [];
  for (const name of await readdir(NODES_DIR)) {
    const index = Number(name);
    // read by the listed name: a non-canonical one ("01") names another file than String(index)
    if (Number.isInteger(index)) claims.push({ index, owner: await ownerOf(name) });
  }
  return claims;
}

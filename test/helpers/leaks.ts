import { readdir } from 'node:fs/promises';
import { run } from '../../src/util/exec.js';

/**
 * What embers can leave on a host: netns, links, nft tables, loop devices, mounts, VMM
 * processes and files in a home's tmp dir. Tests take one reading before and one after and
 * assert that nothing of ours was added.
 */
export interface HostResources {
  netns: string[];
  links: string[];
  nftTables: string[];
  loops: string[];
  mounts: string[];
  processes: string[];
}

export async function readHostResources(): Promise<HostResources> {
  const lines = async (cmd: string, args: string[]) =>
    (await run(cmd, args, { okCodes: [1] })).stdout
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
  const netns = (await lines('ip', ['netns', 'list'])).map((l) => l.split(/\s+/)[0]);
  const links = (await lines('ip', ['-o', 'link', 'show'])).map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? l);
  const nftTables = await lines('nft', ['list', 'tables']);
  const loops = await lines('losetup', ['-a']);
  const mounts = (await lines('cat', ['/proc/mounts'])).filter((l) => l.includes('embers'));
  const processes: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmd = (await run('cat', [`/proc/${entry}/cmdline`], { okCodes: [1] }).catch(() => ({ stdout: '' }))).stdout.replace(/\0/g, ' ').trim();
    // flock/timeout wrappers queued on the shared host-test lock name the test files they will run, not a VMM
    if (/^(\S*\/)?(flock|timeout) /.test(cmd)) continue;
    if (/qemu-system|firecracker/.test(cmd)) processes.push(`${entry} ${cmd.slice(0, 200)}`);
  }
  return { netns, links, nftTables, loops, mounts, processes };
}

/** What `after` has that `before` had not. */
export function leaked(before: HostResources, after: HostResources): Partial<HostResources> {
  const out: Partial<HostResources> = {};
  for (const key of Object.keys(before) as (keyof HostResources)[]) {
    const added = after[key].filter((x) => !before[key].includes(x));
    if (added.length) out[key] = added;
  }
  return out;
}

/**
 * What is still added since `before`, after letting the kernel finish teardown it defers
 * (a deleted netns frees its devices on a work queue; an autoclear loop device detaches on
 * its last close): re-read a few times, for at most `graceMs`, while something shows. A real
 * leak stays and is returned.
 */
export async function leakedSince(before: HostResources, graceMs = 3000): Promise<Partial<HostResources>> {
  const deadline = Date.now() + graceMs;
  for (;;) {
    const added = leaked(before, await readHostResources());
    if (Object.keys(added).length === 0 || Date.now() >= deadline) return added;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** Files left below a dir (recursively), e.g. a home's tmp. */
export async function filesBelow(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return entries.map(String);
}

import { mkdir, readdir, rm, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { MAX_SLOTS, netnsPrefix, slotAddressing, vethPrefix, type SlotAddressing } from './addressing.js';
import { claimNodeIndex, lookupNodeIndex, releaseNodeIndex } from './node-index.js';
import { createSlot, destroySlot, listLinks, listNetns } from './slot.js';

export interface SlotPoolOptions {
  /** The node's net state dir (EMBERS_HOME/net). */
  dir: string;
  /** The node's home, which owns the node index. */
  home: string;
  /** Free slots kept ready off the cold-start path. @default 10 */
  poolSize?: number;
}

export interface Lease {
  slot: SlotAddressing;
  owner: string;
}

/**
 * The network slots of one node. A slot exists when `slots/<i>` is recorded and its netns is
 * up; it is in use when `leases/<i>` exists (created with O_EXCL, so concurrent `embers`
 * processes never share a slot). Released slots go back to the pool (up to `poolSize`
 * free ones) and are reused; the rest are torn down.
 */
export class SlotPool {
  private readonly slotsDir: string;
  private readonly leasesDir: string;
  readonly poolSize: number;
  private node: number | undefined;
  private claiming: Promise<number> | undefined;

  constructor(private readonly opts: SlotPoolOptions) {
    this.slotsDir = join(opts.dir, 'slots');
    this.leasesDir = join(opts.dir, 'leases');
    this.poolSize = opts.poolSize ?? 10;
  }

  /** The node index of this home (claimed on first use). Sweeps a stale claim's leftovers. */
  async nodeIndex(): Promise<number> {
    // one claim per pool even when many acquires race for the first one
    this.claiming ??= (async () => {
      await mkdir(this.slotsDir, { recursive: true });
      await mkdir(this.leasesDir, { recursive: true });
      const claim = await claimNodeIndex(this.opts.home);
      this.node = claim.index;
      if (claim.tookOverStale) await this.sweepOrphans(new Set());
      return claim.index;
    })();
    try {
      return await this.claiming;
    } catch (err) {
      this.claiming = undefined;
      throw err;
    }
  }

  /** Leases a slot for `owner`: a free pooled one if any, else a new one. */
  async acquire(owner: string): Promise<Lease> {
    const node = await this.nodeIndex();
    const created = await this.createdIndexes();
    for (const index of created) {
      if (await this.tryLease(index, owner)) return { slot: slotAddressing(node, index), owner };
    }
    for (let index = 0; index < MAX_SLOTS; index++) {
      if (created.includes(index)) continue;
      if (!(await this.tryLease(index, owner))) continue;
      const slot = slotAddressing(node, index);
      try {
        await this.build(slot);
      } catch (err) {
        await this.unlease(index);
        throw err;
      }
      return { slot, owner };
    }
    throw EmbersError.of('EMB_NET_EXHAUSTED', { node, limit: MAX_SLOTS });
  }

  /** Returns a slot: back to the pool while fewer than poolSize are free, else torn down. */
  async release(lease: Lease): Promise<void> {
    const index = lease.slot.index;
    const free = (await this.createdIndexes()).length - (await this.leasedIndexes()).length;
    if (free >= this.poolSize) {
      await destroySlot(lease.slot);
      await rm(join(this.slotsDir, String(index)), { force: true });
    }
    await this.unlease(index);
  }

  /** Creates free slots until `poolSize` are ready. Off the cold-start path. */
  async fill(): Promise<number> {
    const node = await this.nodeIndex();
    const created = await this.createdIndexes();
    const leased = new Set(await this.leasedIndexes());
    let free = created.filter((i) => !leased.has(i)).length;
    let made = 0;
    for (let index = 0; free < this.poolSize && index < MAX_SLOTS; index++) {
      if (created.includes(index) || leased.has(index)) continue;
      if (!(await this.tryLease(index, 'pool-fill'))) continue;
      const slot = slotAddressing(node, index);
      try {
        await this.build(slot);
        free++;
        made++;
      } finally {
        await this.unlease(index);
      }
    }
    return made;
  }

  /** Counts of created, leased and free slots. */
  async stats(): Promise<{ node: number; created: number; leased: number; free: number; poolSize: number }> {
    const node = await this.nodeIndex();
    const created = (await this.createdIndexes()).length;
    const leased = (await this.leasedIndexes()).length;
    return { node, created, leased, free: created - leased, poolSize: this.poolSize };
  }

  /** How many more slots could be leased now: the address range (MAX_SLOTS) less the leased ones. Claims nothing. */
  async room(): Promise<number> {
    return MAX_SLOTS - (await this.leasedIndexes()).length;
  }

  /**
   * Tears every slot of this node down (leases included: call only when no instance runs),
   * sweeps leftovers and gives the node index back.
   */
  async teardown(): Promise<void> {
    const node = await this.nodeIndex();
    for (const index of await this.createdIndexes()) {
      await destroySlot(slotAddressing(node, index));
      await rm(join(this.slotsDir, String(index)), { force: true });
    }
    await rm(this.leasesDir, { recursive: true, force: true });
    await this.sweepOrphans(new Set());
    await releaseNodeIndex(this.opts.home, node);
    this.node = undefined;
    this.claiming = undefined;
  }

  /**
   * Reconciles after a crash: leases whose owner is not in `liveOwners` are dropped, and any
   * netns or veth of this node's naming that no recorded slot explains is removed.
   */
  async reconcile(liveOwners: Set<string>): Promise<void> {
    // a home that holds no index and records no slot has nothing to reconcile: claim nothing
    // (recorded slots first: the registry is then read only when the home records none)
    if ((await this.createdIndexes()).length === 0 && (await lookupNodeIndex(this.opts.home)) === undefined) return;
    await this.nodeIndex();
    for (const index of await this.leasedIndexes()) {
      const owner = (await readFile(join(this.leasesDir, String(index)), 'utf8').catch(() => '')).trim();
      if (!liveOwners.has(owner)) await this.unlease(index);
    }
    await this.sweepOrphans(new Set(await this.createdIndexes()));
  }

  private async sweepOrphans(keep: Set<number>): Promise<void> {
    const node = this.node!;
    const nsPrefix = netnsPrefix(node);
    for (const ns of await listNetns()) {
      if (!ns.startsWith(nsPrefix)) continue;
      const index = Number(ns.slice(nsPrefix.length));
      if (Number.isInteger(index) && !keep.has(index)) await destroySlot(slotAddressing(node, index));
    }
    const vPrefix = vethPrefix(node);
    for (const link of await listLinks()) {
      if (!link.startsWith(vPrefix)) continue;
      const index = Number(link.slice(vPrefix.length));
      if (Number.isInteger(index) && !keep.has(index)) await destroySlot(slotAddressing(node, index));
    }
  }

  /** Creates slot's netns and veth (clearing a crash's leftovers holding its names) and records it. */
  private async build(slot: SlotAddressing): Promise<void> {
    await destroySlot(slot); // a leftover of a crash may hold the names
    await createSlot(slot);
    await writeFile(join(this.slotsDir, String(slot.index)), `${JSON.stringify(slot)}\n`);
  }

  /** Drops the lease of slot `index` (if any). */
  private async unlease(index: number): Promise<void> {
    await rm(join(this.leasesDir, String(index)), { force: true });
  }

  private async tryLease(index: number, owner: string): Promise<boolean> {
    try {
      await writeFile(join(this.leasesDir, String(index)), `${owner}\n`, { flag: 'wx' });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw err;
    }
  }

  private async createdIndexes(): Promise<number[]> {
    return numericEntries(this.slotsDir);
  }

  private async leasedIndexes(): Promise<number[]> {
    return numericEntries(this.leasesDir);
  }
}

async function numericEntries(dir: string): Promise<number[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names
    .map(Number)
    .filter((n) => Number.isInteger(n))
    .sort((a, b) => a - b);
}

import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { exists, writeJsonAtomic } from '../util/fs.js';
import { acquireLock, heldHere, lockOwner, pidHolds } from '../util/lock.js';
import { pidAlive } from '../util/pid.js';
import type { SlotAddressing } from '../net/addressing.js';
import type { VmHandle } from '../vmm/driver.js';
import type { FunctionSpec } from './function-spec.js';

export interface BootTimings {
  /** Each phase in ms. */
  phases: Record<string, number>;
  /** ms from the start of `run` until the function first answered. */
  readyMs: number;
}

/** What the restore fix-ups did (recorded in the instance record). */
export interface RestoreFixup {
  /** False for a snapshot without the guest agent: nothing was fixed. */
  agent: boolean;
  /** How far the guest's clock was moved, in ms (positive: it was behind the host). */
  clockStepMs?: number;
  entropyBytes?: number;
  crngReseeded?: boolean;
  hook?: { path: string; state: string; code: number };
}

/** One running microVM of a function, persisted as `instances/<name>/instance.json`. */
export interface InstanceRecord {
  name: string;
  createdAt: string;
  function: FunctionSpec;
  /** restoreHook: the one the image declares (labels), carried into its snapshots. */
  image: {
    reference: string;
    manifestDigest: string;
    rootfsSha256: string;
    restoreHook?: { path: string; timeoutMs?: number };
  };
  slot: SlotAddressing;
  cloneIp: string;
  diskPath: string;
  diskMethod: string;
  vm: VmHandle;
  /** The guest kernel and initramfs it runs. */
  kit: { kind: 'debian' | 'firecracker-config'; kernelVersion: string; cacheKey: string };
  /** 'boot' or the snapshot id it was restored from. */
  origin: string;
  timings: BootTimings;
  /** Restored clones: what the restore fix-ups did (clock step, entropy, hook). */
  fixup?: RestoreFixup;
}

/** Marks an instance dir whose instance is still being created, with the creating pid. */
const OWNER_FILE = 'owner.pid';
/** Marks an instance that a process is snapshotting (its VM may be paused), with that pid. */
const SNAPSHOT_FILE = 'snapshot.pid';

const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export function validateInstanceName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'instance name',
      value: name,
      problem: "is invalid: use 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
    });
  }
}

/** The instance records of one node. */
export class InstanceStore {
  constructor(private readonly dir: string) {}

  dirOf(name: string): string {
    return join(this.dir, name);
  }

  /**
   * Reserves the name by creating its dir (fails if it exists), marked with this process's
   * pid until `complete`: a crash leaves a dir whose creator is gone, which reconcile removes.
   */
  async reserve(name: string): Promise<string> {
    validateInstanceName(name);
    await mkdir(this.dir, { recursive: true });
    const dir = this.dirOf(name);
    try {
      await mkdir(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw EmbersError.of('EMB_INSTANCE_EXISTS', { name });
      throw err;
    }
    await writeFile(join(dir, OWNER_FILE), `${process.pid}\n`);
    return dir;
  }

  /** Records a started instance: from now on it is owned by its record (released by stop). */
  async complete(record: InstanceRecord): Promise<void> {
    await writeJsonAtomic(join(this.dirOf(record.name), 'instance.json'), record);
    await rm(join(this.dirOf(record.name), OWNER_FILE), { force: true });
  }

  /** True while another live process is still creating this instance. */
  async beingCreatedElsewhere(name: string): Promise<boolean> {
    const owner = await lockOwner(join(this.dirOf(name), OWNER_FILE));
    return owner !== undefined && owner !== process.pid && (await pidAlive(owner));
  }

  async get(name: string): Promise<InstanceRecord> {
    validateInstanceName(name);
    const record = await this.readRecord(name);
    if (record === undefined) throw EmbersError.of('EMB_INSTANCE_NOT_FOUND', { name });
    return record;
  }

  /** All names with a dir, and the record if it was completed. */
  async scan(): Promise<{ name: string; record?: InstanceRecord }[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: { name: string; record?: InstanceRecord }[] = [];
    for (const name of names.sort()) {
      out.push({ name, record: await this.readRecord(name) });
    }
    return out;
  }

  /**
   * Marks `name` as being snapshotted by this process until `endSnapshot`: its VM may be
   * paused meanwhile. Another live process snapshotting it makes this throw EMB_INSTANCE_BUSY;
   * the marker of a dead one is taken over (reconcile resumes its VM first, see
   * `abandonedSnapshots`).
   */
  async beginSnapshot(name: string): Promise<void> {
    const path = join(this.dirOf(name), SNAPSHOT_FILE);
    // released by endSnapshot (the release function does the same: rm, then heldHere.delete)
    await acquireLock(path, {
      busy: (pid) => EmbersError.of('EMB_INSTANCE_BUSY', { name, pid, lock: path }),
    });
  }

  async endSnapshot(name: string): Promise<void> {
    const path = join(this.dirOf(name), SNAPSHOT_FILE);
    await rm(path, { force: true });
    heldHere.delete(path);
  }

  /** Instances whose snapshot marker names a process that is gone: a snapshot was killed midway (their VM may be paused). */
  async abandonedSnapshots(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const path = join(this.dirOf(name), SNAPSHOT_FILE);
      const pid = await lockOwner(path);
      if (pid !== undefined ? !(await pidHolds(path, pid)) : await exists(path)) out.push(name);
    }
    return out;
  }

  /** Drops the snapshot marker a dead process left (after its VM was resumed). */
  async clearAbandonedSnapshot(name: string): Promise<void> {
    await rm(join(this.dirOf(name), SNAPSHOT_FILE), { force: true });
  }

  async remove(name: string): Promise<void> {
    await rm(this.dirOf(name), { recursive: true, force: true });
  }

  /** The completed record of `name`; undefined when instance.json is missing, unreadable or empty. */
  private async readRecord(name: string): Promise<InstanceRecord | undefined> {
    const raw = await readFile(join(this.dirOf(name), 'instance.json'), 'utf8').catch(() => undefined);
    return raw ? (JSON.parse(raw) as InstanceRecord) : undefined;
  }
}

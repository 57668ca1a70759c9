/**
 * Ownership marks for crash recovery: every instance the daemon starts is marked in
 * `<home>/daemon/owned/` before it starts and unmarked once stopped, so a daemon that restarts
 * after being killed stops what a previous one left running.
 */
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EmbersNode } from './node.js';
import type { LifecycleLog } from './lifecycle-model.js';

export class OwnedMarks {
  private readonly dir: string;

  constructor(
    private readonly node: EmbersNode,
    private readonly log: LifecycleLog,
  ) {
    this.dir = join(node.config.home, 'daemon', 'owned');
  }

  async mark(name: string): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, name), `${process.pid}\n`);
  }

  async unmark(name: string): Promise<void> {
    await rm(join(this.dir, name), { force: true });
  }

  /** Stops the instances a previous daemon of this home started and never stopped (it was killed). */
  async reconcile(): Promise<void> {
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      const rec = await this.node.instances.get(name).catch(() => undefined);
      if (rec) {
        this.log('warn', `stopping ${name}, left running by a daemon that did not shut down`, { instance: name });
        await this.node.stop(name).catch((err: Error) => this.log('error', `could not stop ${name}: ${err.message}`));
      }
      await this.unmark(name);
    }
  }
}

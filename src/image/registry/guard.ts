/**
 * Keeps `gc` and the operations that add to the image cache (ensure, pull) apart, across the
 * processes of a node. An operation holds a pin file `<imagesDir>/.pin-<pid>-<rand>` while it
 * runs; gc holds `<imagesDir>/.gc.lock` and starts only once no live pin remains. An
 * operation that finds gc running withdraws its pin and waits, so the two never deadlock, and
 * gc never deletes a blob or rootfs that a running pull has fetched but not yet recorded.
 * Pins and locks of dead processes are ignored and cleaned up.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { EmbersError } from '../../errors.js';
import { sleep as delay } from '../../util/sleep.js';
import { acquireLock, heldHere, lockHeld, lockOwner, pidHolds } from './lock.js';

const PIN_RE = /^\.pin-(\d+)-[0-9a-f]+$/;

export class CacheGuard {
  constructor(
    readonly imagesDir: string,
    /** How long an operation waits for gc, and gc for operations, in ms. */
    private readonly waitMs = 600_000,
  ) {}

  get gcLockPath(): string {
    return join(this.imagesDir, '.gc.lock');
  }

  /** Pins the cache for one operation; returns the release function. */
  async pin(signal?: AbortSignal): Promise<() => Promise<void>> {
    await mkdir(this.imagesDir, { recursive: true });
    const path = join(this.imagesDir, `.pin-${process.pid}-${randomBytes(6).toString('hex')}`);
    const started = Date.now();
    for (;;) {
      // re-entrant: a process that already holds a pin keeps gc out anyway (gc waits for every
      // pin), so its nested pin (a restore's ensure) must not wait for a gc that waits for it
      const nested = [...heldHere].some((p) => dirname(p) === this.imagesDir && PIN_RE.test(basename(p)));
      heldHere.add(path);
      await writeFile(path, `${process.pid}\n`);
      if (nested || !(await lockHeld(this.gcLockPath))) {
        return async () => {
          heldHere.delete(path);
          await rm(path, { force: true });
        };
      }
      heldHere.delete(path);
      await rm(path, { force: true });
      if (Date.now() - started > this.waitMs) {
        const pid = await lockOwner(this.gcLockPath);
        throw EmbersError.of('EMB_IMAGE_CACHE_BUSY', {
          problem: 'gc',
          resource: `the image cache ${this.imagesDir}`,
          lock: this.gcLockPath,
          ...(pid !== undefined ? { pid } : {}),
        });
      }
      await delay(100, signal);
    }
  }

  /** Live pins, by file name. */
  private async livePins(): Promise<string[]> {
    const names = await readdir(this.imagesDir).catch(() => [] as string[]);
    const live: string[] = [];
    for (const name of names) {
      const m = PIN_RE.exec(name);
      if (!m) continue;
      const pid = Number(m[1]);
      const path = join(this.imagesDir, name);
      if (await pidHolds(path, pid)) live.push(name);
      else await rm(path, { force: true });
    }
    return live;
  }

  /** Takes the cache for gc: no operation runs until the release function is called. */
  async exclusive(): Promise<() => Promise<void>> {
    await mkdir(this.imagesDir, { recursive: true });
    const release = await acquireLock(this.gcLockPath, `the image cache ${this.imagesDir}`, { waitMs: this.waitMs });
    const started = Date.now();
    try {
      for (;;) {
        const pins = await this.livePins();
        if (pins.length === 0) return release;
        if (Date.now() - started > this.waitMs) {
          throw EmbersError.of('EMB_IMAGE_CACHE_BUSY', {
            problem: 'pins',
            resource: `the image cache ${this.imagesDir}`,
            pins,
          });
        }
        await delay(100);
      }
    } catch (err) {
      await release();
      throw err;
    }
  }

  /** Removes pins of dead processes (reconcile). */
  async cleanStale(): Promise<void> {
    await this.livePins();
  }
}

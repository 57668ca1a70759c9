import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { acquireLock, heldHere, lockHeld } from '../../src/util/lock.js';
import { withTempDir } from '../helpers/temp-dir.js';

class Busy extends Error {
  constructor(readonly pid: number) {
    super(`busy (pid ${pid})`);
  }
}
const busy = (pid: number) => new Busy(pid);

test('acquireLock: two callers of one process never both take it; the lock file holds our pid until released', () =>
  withTempDir('lock', async (dir) => {
    const path = join(dir, 'a.lock');
    const results = await Promise.allSettled([acquireLock(path, { busy }), acquireLock(path, { busy })]);
    const taken = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r) => r.status === 'rejected');
    assert.equal(taken.length, 1);
    assert.equal(refused.length, 1);
    assert.equal(((refused[0] as PromiseRejectedResult).reason as Busy).pid, process.pid);
    assert.equal((await readFile(path, 'utf8')).trim(), String(process.pid));
    assert.equal(await lockHeld(path), true);
    await (taken[0] as PromiseFulfilledResult<() => Promise<void>>).value();
    assert.equal(await lockHeld(path), false);
    assert.equal(heldHere.has(path), false);
    const again = await acquireLock(path, { busy });
    await again();
  }));

test('acquireLock: a lock left by a process that is gone, or by an earlier process with our pid, is taken over', () =>
  withTempDir('lock', async (dir) => {
    const dead = join(dir, 'dead.lock');
    await writeFile(dead, '2147483646\n'); // no such process
    const release = await acquireLock(dead, { busy });
    assert.equal((await readFile(dead, 'utf8')).trim(), String(process.pid));
    await release();

    const reused = join(dir, 'reused.lock');
    await writeFile(reused, `${process.pid}\n`); // our pid, but not taken by this process
    const release2 = await acquireLock(reused, { busy });
    await release2();
  }));

test('acquireLock: with waitMs, a caller waits for the holder to release, then takes it', () =>
  withTempDir('lock', async (dir) => {
    const path = join(dir, 'w.lock');
    const first = await acquireLock(path, { busy });
    const order: string[] = [];
    const second = acquireLock(path, { busy, waitMs: 60_000, pollMs: 10 }).then((release) => {
      order.push('second took it');
      return release;
    });
    await new Promise((r) => setTimeout(r, 50));
    order.push('first releases');
    await first();
    const release = await second;
    assert.deepEqual(order, ['first releases', 'second took it']);
    await release();
  }));

test('acquireLock: without waitMs, a held lock is refused at once with the busy error', () =>
  withTempDir('lock', async (dir) => {
    const path = join(dir, 'b.lock');
    const release = await acquireLock(path, { busy });
    await assert.rejects(acquireLock(path, { busy }), (err: unknown) => err instanceof Busy && err.pid === process.pid);
    await release();
  }));

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SlotPool } from '../../src/net/pool.js';
import { run } from '../../src/util/exec.js';
import { leakedSince, readHostResources } from '../helpers/leaks.js';

test('network slots: created with tap, veth, route and NAT; pooled, reused, torn down without leaks', async () => {
  const before = await readHostResources();
  const home = await mkdtemp(join(tmpdir(), 'embers-net-'));
  const pool = new SlotPool({ dir: join(home, 'net'), home, poolSize: 1 });
  try {
    const a = await pool.acquire('a');
    const b = await pool.acquire('b');
    assert.notEqual(a.slot.netns, b.slot.netns);
    assert.notEqual(a.slot.cloneIp, b.slot.cloneIp);
    for (const lease of [a, b]) {
      const links = (await run('ip', ['-n', lease.slot.netns, '-o', 'link'])).stdout;
      assert.match(links, /tap0/);
      assert.match(links, /veth0/);
      const addr = (await run('ip', ['-n', lease.slot.netns, '-o', 'addr', 'show', 'tap0'])).stdout;
      assert.match(addr, /172\.16\.0\.1\/30/, 'every slot has the same gateway address');
      const mac = (await run('ip', ['-n', lease.slot.netns, '-o', 'link', 'show', 'tap0'])).stdout;
      assert.match(mac, /06:00:ac:10:00:01/, 'every slot has the same gateway MAC');
      const nft = (await run('ip', ['netns', 'exec', lease.slot.netns, 'nft', 'list', 'ruleset'])).stdout;
      assert.match(nft, new RegExp(`ip daddr ${lease.slot.cloneIp.replace(/\./g, '\\.')} dnat to 172\\.16\\.0\\.2`));
      const route = (await run('ip', ['route', 'get', lease.slot.cloneIp])).stdout;
      assert.match(route, new RegExp(`dev ${lease.slot.hostVeth}`));
    }
    // release: one goes back to the pool (poolSize 1), the other is torn down
    await pool.release(a);
    await pool.release(b);
    let stats = await pool.stats();
    assert.equal(stats.free, 1);
    assert.equal(stats.leased, 0);
    // reuse: the pooled slot is leased again rather than a new one created
    const c = await pool.acquire('c');
    stats = await pool.stats();
    assert.equal(stats.created, 1);
    assert.ok([a.slot.netns, b.slot.netns].includes(c.slot.netns));
    await pool.release(c);
    assert.equal(await pool.fill(), 0, 'the pool is already full');
  } finally {
    await pool.teardown();
    await rm(home, { recursive: true, force: true });
  }
  assert.deepEqual(await leakedSince(before), {});
});

test('network slots: reconcile removes netns and leases a crashed process left behind', async () => {
  const before = await readHostResources();
  const home = await mkdtemp(join(tmpdir(), 'embers-net-'));
  const pool = new SlotPool({ dir: join(home, 'net'), home, poolSize: 0 });
  try {
    const lease = await pool.acquire('crashed-instance');
    // a crash: the slot record is lost but the netns stays, and the lease has no live owner
    await rm(join(home, 'net', 'slots', String(lease.slot.index)));
    const fresh = new SlotPool({ dir: join(home, 'net'), home, poolSize: 0 });
    await fresh.reconcile(new Set());
    const netns = (await run('ip', ['netns', 'list'])).stdout;
    assert.doesNotMatch(netns, new RegExp(`${lease.slot.netns}\\b`));
    assert.equal((await fresh.stats()).leased, 0);
  } finally {
    await pool.teardown();
    await rm(home, { recursive: true, force: true });
  }
  assert.deepEqual(await leakedSince(before), {});
});

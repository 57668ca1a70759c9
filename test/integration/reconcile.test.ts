import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EmbersNode } from '../../src/node/node.js';
import { run } from '../../src/util/exec.js';
import { leakedSince, readHostResources } from '../helpers/leaks.js';

test('reconcile on open: leftovers of a crashed process (work dirs with loop mounts, half-created instances, staging dirs) go', async () => {
  const before = await readHostResources();
  const home = await mkdtemp(join(tmpdir(), 'embers-reconcile-'));
  try {
    // a crash during an rsync disk diff: a work dir with a loop mount inside
    const work = join(home, 'tmp', 'rsync-999999999-abc123');
    const mnt = join(work, 'mnt-rootfs');
    await mkdir(mnt, { recursive: true });
    const img = join(home, 'disk.ext4');
    await run('mkfs.ext4', ['-q', '-F', img, '8M']);
    await run('mount', ['-o', 'ro,loop', img, mnt]);
    // a crash mid-run: an instance dir without a record whose creator is gone
    await mkdir(join(home, 'instances', 'half'), { recursive: true });
    await writeFile(join(home, 'instances', 'half', 'owner.pid'), '999999999\n');
    // a crash mid-snapshot: a staging dir and a frozen disk copy
    await mkdir(join(home, 'snapshots', '.staging-999999999-dead'), { recursive: true });
    await writeFile(join(home, 'tmp', 'snapshot-disk-999999999-beef.img'), 'x');
    // work of a live process is left alone
    await writeFile(join(home, 'tmp', `snapshot-disk-${process.pid}-live.img`), 'x');

    const node = await EmbersNode.open({ home });
    assert.deepEqual(await readdir(join(home, 'tmp')), [`snapshot-disk-${process.pid}-live.img`]);
    assert.deepEqual(await readdir(join(home, 'instances')), []);
    assert.deepEqual(await readdir(join(home, 'snapshots')), []);
    assert.doesNotMatch(await readFile('/proc/mounts', 'utf8'), new RegExp(home));
    await node.down();
  } finally {
    await rm(home, { recursive: true, force: true });
  }
  assert.deepEqual(await leakedSince(before), {});
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { writeOciLayout } from '../../src/examples/oci-layout.js';
import type { PullEvent } from '../../src/image/registry/progress.js';
import type { TestRegistry } from '../helpers/registry.js';
import { useTestRegistries } from '../helpers/registry-suite.js';
import { startProxy } from '../helpers/registry-proxy.js';
import { f, nodeStore, noise, pushFixture } from '../helpers/registry-fixtures.js';

const MiB = 1024 * 1024;
let reg: TestRegistry;
let base: string;
const skip = useTestRegistries('registry-resume', [{}], (dir, [registry]) => {
  base = dir;
  reg = registry;
});

test('a layer download interrupted midway resumes with a Range request, in a later pull', { skip }, async () => {
  const layout = join(base, 'resume');
  const written = await pushFixture(
    reg,
    layout,
    { layers: [{ entries: [f('a', 'small')] }, { entries: [f('big', noise(3 * MiB, 1))], compression: 'none' }] },
    'acme/resume',
  );
  const big = written.layerDigests[1]!;
  const bigSize = (await stat(join(layout, 'blobs', 'sha256', big.slice(7)))).size;
  const proxy = await startProxy(reg.host, {
    cut: ({ url, n }) => (url.endsWith(`/blobs/${big}`) && n === 1 ? MiB : undefined),
  });
  try {
    const images = join(base, 'node-resume', 'images');
    const ref = `${proxy.host}/acme/resume:v1`;
    // no retries: the first pull fails with the part on disk
    await assert.rejects(nodeStore(base, 'node-resume', { retry: { attempts: 1 } }).pull(ref), (e: unknown) =>
      isEmbersError(e, 'EMB_REGISTRY_UNREACHABLE'),
    );
    const part = join(images, 'blobs', '.partial', `${big.slice(7)}.part`);
    const kept = (await stat(part)).size;
    assert.equal(kept, MiB, 'every byte that arrived before the cut is kept');

    const events: PullEvent[] = [];
    const info = await nodeStore(base, 'node-resume').pull(ref, { onProgress: (e) => events.push(e) });
    assert.equal(info.manifestDigest, written.manifestDigest);
    const gets = proxy.requests.filter((r) => r.url.endsWith(`/blobs/${big}`));
    assert.equal(gets.length, 2);
    assert.equal(gets[0]!.range, undefined);
    assert.equal(gets[1]!.range, `bytes=${kept}-`);
    assert.equal(gets[1]!.status, 206);
    assert.equal(gets[1]!.bytes, bigSize - kept, 'only the rest was sent');
    const done = events.find((e) => e.type === 'layer' && e.digest === big && e.status === 'done');
    assert.ok(done?.type === 'layer' && done.resumedFrom === kept && done.bytesDone === bigSize);
    assert.deepEqual(await readdir(join(images, 'blobs', '.partial')), []);

    // the result is the image, byte for byte
    const local = await nodeStore(base, 'node-resume-local').ensure(layout);
    assert.equal(info.rootfsSha256, local.rootfsSha256);
  } finally {
    await proxy.stop();
  }
});

test('within one pull, a retry after a cut connection continues from the bytes received', { skip }, async () => {
  const layout = join(base, 'retry');
  const written = await pushFixture(
    reg,
    layout,
    { layers: [{ entries: [f('big', noise(2 * MiB, 2))], compression: 'none' }] },
    'acme/retry',
  );
  const big = written.layerDigests[0]!;
  const proxy = await startProxy(reg.host, {
    cut: ({ url, n }) => (url.endsWith(`/blobs/${big}`) && n <= 2 ? 512 * 1024 : undefined),
  });
  try {
    const info = await nodeStore(base, 'node-retry').pull(`${proxy.host}/acme/retry:v1`);
    assert.equal(info.manifestDigest, written.manifestDigest);
    const gets = proxy.requests.filter((r) => r.url.endsWith(`/blobs/${big}`));
    assert.equal(gets.length, 3, 'two cuts, then the rest');
    assert.equal(gets[0]!.range, undefined);
    const first = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
    const second = Number(/^bytes=(\d+)-$/.exec(gets[2]!.range ?? '')?.[1]);
    assert.deepEqual(
      [first, second],
      [512 * 1024, MiB],
      `each retry asks from the last byte received: ${gets.map((g) => g.range).join(', ')}`,
    );
  } finally {
    await proxy.stop();
  }
});

test('layers download concurrently, and a layer shared by two images is fetched once', { skip }, async () => {
  const layers = [0, 1, 2, 3].map((i) => ({
    entries: [f(`l${i}`, noise(256 * 1024, 10 + i))],
    compression: 'none' as const,
  }));
  const one = await pushFixture(reg, join(base, 'conc1'), { layers }, 'acme/conc');
  await writeOciLayout(
    join(base, 'conc2'),
    { layers: [layers[0]!, { entries: [f('other', 'x')] }] },
    { refName: 'v2' },
  );
  await reg.pushLayout(join(base, 'conc2'), 'v2', 'acme/conc:v2');
  const proxy = await startProxy(reg.host, { delayMs: ({ url }) => (url.includes('/blobs/') ? 150 : 0) });
  try {
    const store = nodeStore(base, 'node-conc', { concurrency: 3 });
    const info = await store.pull(`${proxy.host}/acme/conc:v1`, { flatten: false });
    assert.equal(info.rootfsPath, undefined, 'flatten: false builds no rootfs');
    assert.equal(proxy.maxBlobsInFlight(), 3, 'three layers at once');
    const events: PullEvent[] = [];
    await store.pull(`${proxy.host}/acme/conc:v2`, { onProgress: (e) => events.push(e) });
    const shared = one.layerDigests[0]!;
    assert.equal(proxy.requests.filter((r) => r.url.endsWith(shared)).length, 1, 'the shared layer is fetched once');
    const resolved = events.find((e) => e.type === 'resolved');
    assert.ok(
      resolved?.type === 'resolved' &&
        resolved.layers[0]!.cached &&
        !resolved.layers[1]!.cached &&
        resolved.bytesCached === resolved.layers[0]!.size,
    );
  } finally {
    await proxy.stop();
  }
});

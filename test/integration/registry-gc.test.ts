import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { FLATTENER_VERSION } from '../../src/image/flatten.js';
import { writeOciLayout } from '../../src/examples/oci-layout.js';
import type { TestRegistry } from '../helpers/registry.js';
import { useTestRegistries } from '../helpers/registry-suite.js';
import { startProxy } from '../helpers/registry-proxy.js';
import { f, nodeStore, noise, pushFixture, verifiedBlobs } from '../helpers/registry-fixtures.js';

let reg: TestRegistry;
let base: string;
const skip = useTestRegistries('registry-gc', [{}], (dir, [registry]) => {
  base = dir;
  reg = registry;
});

async function rootfsNames(images: string): Promise<string[]> {
  return (await readdir(join(images, 'rootfs')).catch(() => [] as string[])).sort();
}

test('gc drops what no reference and no in-use digest names, and keeps the rest', { skip }, async () => {
  const shared = { entries: [f('base', noise(64 * 1024, 1))], compression: 'none' as const };
  const a = await writeOciLayout(
    join(base, 'a'),
    { layers: [shared, { entries: [f('app', 'a')] }], config: { Cmd: ['a'] } },
    { refName: 'v1' },
  );
  const b = await writeOciLayout(
    join(base, 'b'),
    { layers: [shared, { entries: [f('app', 'b')] }], config: { Cmd: ['b'] } },
    { refName: 'v1' },
  );
  await reg.pushLayout(join(base, 'a'), 'v1', 'acme/a:v1');
  await reg.pushLayout(join(base, 'b'), 'v1', 'acme/b:v1');
  const localLayout = join(base, 'local');
  const l = await writeOciLayout(localLayout, { layers: [{ entries: [f('local', 'l')] }] });

  const images = join(base, 'node', 'images');
  const store = nodeStore(base, 'node');
  const refA = `${reg.host}/acme/a:v1`;
  const refB = `${reg.host}/acme/b:v1`;
  await store.pull(refA);
  await store.pull(refB);
  await store.ensure(localLayout);
  const hex = (d: string) => d.slice(7);
  // an interrupted download and a stray temp file of a dead process
  await mkdir(join(images, 'blobs', '.partial'), { recursive: true });
  await writeFile(join(images, 'blobs', '.partial', `${'f'.repeat(64)}.part`), 'half');
  await writeFile(join(images, 'blobs', '.partial', `.${'e'.repeat(64)}.tmp-999999999-ab`), 'tmp');

  const listed = await store.listImages();
  assert.deepEqual(
    listed.map((e) => [e.reference, e.source]),
    [
      [localLayout, 'local'],
      [refA, 'registry'],
      [refB, 'registry'],
    ],
  );
  assert.ok(listed.every((e) => e.rootfsSha256));
  assert.ok(listed[1]!.layersBytes! > 64 * 1024);

  // everything is referenced: gc keeps all blobs and rootfs, drops the partial files
  const blobsBefore = await verifiedBlobs(images);
  const first = await store.gc();
  assert.deepEqual(first.removedBlobs, []);
  assert.deepEqual(first.removedRootfs, []);
  assert.equal(first.keptBlobs, blobsBefore.length);
  assert.equal(first.keptRootfs, 3);
  assert.equal(first.removedPartialBytes, 7);
  assert.deepEqual(await readdir(join(images, 'blobs', '.partial')), []);

  // rm B: its reference and its rootfs go; its blobs wait for gc
  const removed = await store.remove(refB);
  assert.deepEqual(removed, { references: [refB], rootfs: [b.manifestDigest] });
  assert.deepEqual(await verifiedBlobs(images), blobsBefore);
  await assert.rejects(store.remove(refB), (e: unknown) => isEmbersError(e, 'EMB_IMAGE_NOT_FOUND'));
  const second = await store.gc();
  assert.deepEqual(
    second.removedBlobs.map((x) => x.digest).sort(),
    [b.manifestDigest, b.configDigest, b.layerDigests[1]!].sort(),
  );
  assert.ok(second.freedBytes > 0);
  const kept = await verifiedBlobs(images);
  assert.ok(kept.includes(a.layerDigests[0]!), 'the layer A shares with B stays');
  assert.equal(b.layerDigests[0], a.layerDigests[0]);

  // rm A while a snapshot uses it: reference gone, rootfs kept; gc with it in use keeps it all
  assert.deepEqual(await store.remove(refA, { inUse: [a.manifestDigest] }), { references: [refA], rootfs: [] });
  assert.deepEqual(
    (await store.listImages()).map((e) => [e.reference, e.source]),
    [
      [localLayout, 'local'],
      [refA, 'unreferenced'],
    ],
  );
  const third = await store.gc([a.manifestDigest]);
  assert.deepEqual(third.removedBlobs, []);
  assert.deepEqual(third.removedRootfs, []);
  assert.equal((await store.inspect(a.manifestDigest)).rootfsSha256 !== undefined, true);
  // it can still be rebuilt offline from its digest
  assert.equal((await store.ensure(`${reg.host}/acme/a@${a.manifestDigest}`)).manifestDigest, a.manifestDigest);
  await store.remove(`${reg.host}/acme/a@${a.manifestDigest}`, { inUse: [a.manifestDigest] });

  // nothing uses A any more: all of it goes; the local image stays
  const fourth = await store.gc();
  assert.deepEqual(
    fourth.removedBlobs.map((x) => x.digest).sort(),
    [a.manifestDigest, a.configDigest, ...a.layerDigests].sort(),
  );
  assert.deepEqual(
    fourth.removedRootfs.map((x) => x.manifestDigest),
    [a.manifestDigest],
  );
  assert.deepEqual(await verifiedBlobs(images), []);
  assert.deepEqual(await rootfsNames(images), [`${hex(l.manifestDigest)}-v${FLATTENER_VERSION}`]);
  assert.equal((await store.inspect(localLayout)).manifestDigest, l.manifestDigest);
  await assert.rejects(store.inspect(refA), (e: unknown) => isEmbersError(e, 'EMB_IMAGE_NOT_FOUND'));

  // and the local image goes once its reference is removed
  await store.remove(localLayout);
  await store.gc();
  assert.deepEqual(await rootfsNames(images), []);
  assert.deepEqual((await readdir(images)).sort(), ['blobs', 'refs.json', 'rootfs']);
});

test('gc waits for a running pull, which then completes intact', { skip }, async () => {
  const written = await pushFixture(
    reg,
    join(base, 'slow'),
    { layers: [{ entries: [f('slow', noise(128 * 1024, 3))] }] },
    'acme/slow',
  );
  const proxy = await startProxy(reg.host, { delayMs: ({ url }) => (url.includes('/blobs/') ? 400 : 0) });
  try {
    const store = nodeStore(base, 'node-slow');
    const other = nodeStore(base, 'node-slow'); // a second handle on the same node, as a CLI process would be
    let pulledAt = 0;
    const pulling = store.pull(`${proxy.host}/acme/slow:v1`).then((r) => {
      pulledAt = performance.now();
      return r;
    });
    // the pull is under way, its pin taken (before any request) and its blobs held back by the proxy
    let settled = false;
    void pulling.finally(() => (settled = true)).catch(() => {});
    while (!settled && !proxy.requests.some((r) => r.url.includes('/blobs/')))
      await new Promise((r) => setTimeout(r, 5));
    const gc = await other.gc();
    const gcAt = performance.now();
    const image = await pulling;
    assert.ok(pulledAt > 0 && pulledAt <= gcAt, 'gc waited for the pull to finish');
    assert.deepEqual(gc.removedBlobs, [], 'gc ran after the pull and kept its blobs');
    assert.equal(image.manifestDigest, written.manifestDigest);
    assert.ok(image.rootfsSha256);
    assert.equal((await other.inspect(`${proxy.host}/acme/slow:v1`)).rootfsSha256, image.rootfsSha256);
    assert.deepEqual(
      (await readdir(join(base, 'node-slow', 'images'))).filter((n) => n.startsWith('.')),
      [],
      'no pin or lock left',
    );
  } finally {
    await proxy.stop();
  }
});

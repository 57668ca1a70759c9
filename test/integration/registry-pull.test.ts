import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { writeOciLayout } from '../../src/examples/oci-layout.js';
import { blobPath } from '../helpers/docker-save.js';
import { catImage, namesIn, rootNames, statImage } from '../unit/image-helpers.js';
import type { TestRegistry } from '../helpers/registry.js';
import { useTestRegistries } from '../helpers/registry-suite.js';
import { startProxy } from '../helpers/registry-proxy.js';
import {
  assertNothingHalfWritten,
  layeredImage,
  marked,
  nodeStore,
  pushFixture,
  verifiedBlobs,
} from '../helpers/registry-fixtures.js';
import type { PullEvent } from '../../src/image/registry/progress.js';

let reg: TestRegistry;
let base: string;
const skip = useTestRegistries('registry-pull', [{}], (dir, [registry]) => {
  base = dir;
  reg = registry;
});

test('pull by tag and by digest: two nodes get the rootfs of the local layout, byte for byte', { skip }, async () => {
  const layout = join(base, 'layered');
  const written = await pushFixture(reg, layout, layeredImage(), 'acme/layered');

  const events: PullEvent[] = [];
  const nodeA = nodeStore(base, 'node-a');
  const a = await nodeA.pull(`${reg.host}/acme/layered:v1`, { onProgress: (e) => events.push(e) });
  assert.equal(a.reference, `${reg.host}/acme/layered:v1`);
  assert.equal(a.source, 'registry');
  assert.equal(a.manifestDigest, written.manifestDigest, 'skopeo kept the manifest bytes');
  assert.equal(a.platform, 'linux/amd64');
  assert.deepEqual(
    a.layers.map((l) => l.digest),
    written.layerDigests,
  );
  assert.deepEqual(
    a.layers.map((l) => l.diffId),
    written.diffIds,
  );
  assert.deepEqual(a.config.entrypoint, ['/bin/app']);
  assert.deepEqual(a.config.exposedPorts, ['8080/tcp']);

  // the tree: whiteouts, opaque dirs, later layers win
  const p = a.rootfsPath!;
  assert.deepEqual(namesIn(p, '/'), rootNames('a', 'c', 'e', 'etc', 'h'));
  assert.deepEqual(namesIn(p, '/a'), ['b']);
  assert.deepEqual(namesIn(p, '/a/b'), ['new']);
  assert.deepEqual(namesIn(p, '/c'), ['keep']);
  assert.equal(catImage(p, '/c/keep').toString(), 'again');
  assert.deepEqual(namesIn(p, '/e'), ['newfile']);
  assert.equal(statImage(p, '/etc/os-release').size, 'ID=embers-test\n'.length);

  // progress: resolved first, every layer done, done last with the rootfs
  assert.equal(events.find((e) => e.type !== 'step')?.type, 'resolved');
  const resolved = events.find((e) => e.type === 'resolved');
  assert.ok(resolved?.type === 'resolved' && resolved.layers.length === 4 && resolved.layers.every((l) => !l.cached));
  for (let i = 0; i < 4; i++)
    assert.ok(
      events.some((e) => e.type === 'layer' && e.index === i && e.status === 'done'),
      `layer ${i} done`,
    );
  const done = events.at(-1);
  assert.ok(done?.type === 'done' && done.rootfsSha256 === a.rootfsSha256 && done.bytesDownloaded > 0);

  // every blob in the store is verified; the manifest and config are there
  const blobs = await verifiedBlobs(join(base, 'node-a', 'images'));
  for (const d of [written.manifestDigest, written.configDigest, ...written.layerDigests])
    assert.ok(blobs.includes(d), d);

  // node B pulls by digest, node C flattens the local layout: same bytes
  const nodeB = nodeStore(base, 'node-b');
  const b = await nodeB.ensure(`${reg.host}/acme/layered@${written.manifestDigest}`);
  assert.equal(b.manifestDigest, written.manifestDigest);
  assert.equal(b.rootfsSha256, a.rootfsSha256);
  const c = await nodeStore(base, 'node-c').ensure(layout);
  assert.equal(c.rootfsSha256, a.rootfsSha256);
  const sha = createHash('sha256')
    .update(await readFile(b.rootfsPath))
    .digest('hex');
  assert.equal(sha, a.rootfsSha256, 'the recorded sha256 is the file');

  // the tag and digest references are both recorded
  const refs = (await nodeB.listImages()).map((e) => e.reference);
  assert.deepEqual(refs, [`${reg.host}/acme/layered@${written.manifestDigest}`]);
  assert.equal((await nodeA.inspect(`${reg.host}/acme/layered:v1`)).rootfsSha256, a.rootfsSha256);
});

test('ensure answers from the cache without the registry; pull asks for the manifest only', { skip }, async () => {
  const layout = join(base, 'cached');
  const written = await pushFixture(reg, layout, marked('cached'), 'acme/cached');
  const proxy = await startProxy(reg.host);
  try {
    const store = nodeStore(base, 'node-cache');
    const ref = `${proxy.host}/acme/cached:v1`;
    const first = await store.ensure(ref);
    assert.equal(first.manifestDigest, written.manifestDigest);
    assert.equal(first.reference, ref);
    const afterFirst = proxy.requests.length;
    assert.ok(afterFirst >= 3, 'manifest, config and layer fetched');

    const again = await store.ensure(ref);
    assert.equal(again.rootfsSha256, first.rootfsSha256);
    assert.equal(proxy.requests.length, afterFirst, 'no request for a cached reference');

    // rootfs gone, blobs kept: rebuilt offline from the blob store
    await store.remove(written.manifestDigest, {});
    assert.equal((await store.listImages()).length, 0);
    const pinned = await store.ensure(`${proxy.host}/acme/cached@${written.manifestDigest}`);
    assert.equal(pinned.rootfsSha256, first.rootfsSha256);
    assert.equal(proxy.requests.length, afterFirst, 'rebuilt from the blob store, offline');

    const pulled = await store.pull(ref);
    assert.equal(pulled.rootfsSha256, first.rootfsSha256);
    const fresh = proxy.requests.slice(afterFirst);
    assert.deepEqual(
      fresh.map((r) => r.url),
      ['/v2/acme/cached/manifests/v1'],
      'pull re-resolves the tag, blobs are cached',
    );
  } finally {
    await proxy.stop();
  }
});

test(
  'an index with several platforms (skopeo --all) resolves to linux/amd64 and fetches only its blobs',
  { skip },
  async () => {
    const layout = join(base, 'multi');
    const arm = marked('arm64');
    const written = await writeOciLayout(layout, marked('amd64'), {
      refName: 'v1',
      otherPlatforms: [
        { os: 'linux', architecture: 'arm64', variant: 'v8', image: arm },
        { os: 'windows', architecture: 'amd64', image: marked('windows') },
      ],
    });
    await reg.pushLayout(layout, 'v1', 'acme/multi:v1', { all: true });
    const store = nodeStore(base, 'node-multi');
    const info = await store.pull(`${reg.host}/acme/multi:v1`);
    assert.equal(info.manifestDigest, written.manifestDigest);
    assert.equal(info.indexDigest, written.indexDigest);
    assert.equal(catImage(info.rootfsPath!, '/marker').toString(), 'amd64');
    assert.deepEqual(info.config.cmd, ['amd64']);
    const blobs = await verifiedBlobs(join(base, 'node-multi', 'images'));
    assert.ok(blobs.includes(written.indexDigest!), 'the index is stored');
    assert.equal(blobs.length, 4, 'index, amd64 manifest, config, layer: nothing of the other platforms');

    // by the index digest, on another node
    const other = await nodeStore(base, 'node-multi-2').ensure(`${reg.host}/acme/multi@${written.indexDigest}`);
    assert.equal(other.manifestDigest, written.manifestDigest);
    assert.equal(other.rootfsSha256, info.rootfsSha256);
  },
);

test('a Docker manifest list with Docker v2 manifests resolves to linux/amd64', { skip }, async () => {
  const images = [
    { name: 'amd64', os: 'linux', architecture: 'amd64' },
    { name: 'arm', os: 'linux', architecture: 'arm', variant: 'v7' },
  ];
  const entries = [];
  let amd64Digest = '';
  for (const im of images) {
    const dir = join(base, `docker-${im.name}`);
    const w = await writeOciLayout(dir, {
      ...marked(im.name),
      os: im.os,
      architecture: im.architecture,
      mediaTypes: 'docker',
    });
    const manifest = await readFile(blobPath(dir, w.manifestDigest));
    const blobs = [
      await readFile(blobPath(dir, w.configDigest)),
      ...(await Promise.all(w.layerDigests.map((d) => readFile(blobPath(dir, d))))),
    ];
    await reg.pushRaw(
      'acme/dockerlist',
      w.manifestDigest,
      { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', bytes: manifest },
      blobs,
    );
    entries.push({
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      digest: w.manifestDigest,
      size: manifest.length,
      platform: { architecture: im.architecture, os: im.os, ...(im.variant ? { variant: im.variant } : {}) },
    });
    if (im.name === 'amd64') amd64Digest = w.manifestDigest;
  }
  // amd64 listed last: the choice is by platform, not position
  const list = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json',
      manifests: entries.reverse(),
    }),
  );
  await reg.pushRaw(
    'acme/dockerlist',
    'v1',
    { mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json', bytes: list },
    [],
  );
  const info = await nodeStore(base, 'node-dockerlist').pull(`${reg.host}/acme/dockerlist:v1`);
  assert.equal(info.manifestDigest, amd64Digest);
  assert.equal(info.indexDigest, `sha256:${createHash('sha256').update(list).digest('hex')}`);
  assert.equal(info.layers[0]!.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
  assert.equal(catImage(info.rootfsPath!, '/marker').toString(), 'amd64');
});

test(
  'no linux/amd64 entry: EMB_IMAGE_PLATFORM_MISSING, for an index and for a single manifest, nothing cached',
  { skip },
  async () => {
    const layout = join(base, 'noamd64');
    await writeOciLayout(
      layout,
      { ...marked('arm64'), architecture: 'arm64' },
      { refName: 'v1', otherPlatforms: [{ os: 'linux', architecture: 's390x', image: marked('s390x') }] },
    );
    await reg.pushLayout(layout, 'v1', 'acme/noamd64:v1', { all: true });
    const store = nodeStore(base, 'node-noamd64');
    await assert.rejects(store.pull(`${reg.host}/acme/noamd64:v1`), (e: unknown) => {
      assert.ok(isEmbersError(e, 'EMB_IMAGE_PLATFORM_MISSING'), String(e));
      assert.match((e as Error).message, /linux\/arm64, linux\/s390x/);
      return true;
    });
    await assertNothingHalfWritten(join(base, 'node-noamd64', 'images'), join(base, 'node-noamd64', 'tmp'));
    assert.deepEqual(await verifiedBlobs(join(base, 'node-noamd64', 'images')), []);

    const single = join(base, 'arm-only');
    await writeOciLayout(single, { ...marked('arm-only'), architecture: 'arm64' }, { refName: 'v1' });
    await reg.pushLayout(single, 'v1', 'acme/armonly:v1');
    await assert.rejects(
      store.ensure(`${reg.host}/acme/armonly:v1`),
      (e: unknown) =>
        isEmbersError(e, 'EMB_IMAGE_PLATFORM_MISSING') && /linux\/arm64, not linux\/amd64/.test((e as Error).message),
    );
    await assertNothingHalfWritten(join(base, 'node-noamd64', 'images'), join(base, 'node-noamd64', 'tmp'));
    assert.deepEqual(await store.listImages(), []);
  },
);

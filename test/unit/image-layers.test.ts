import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, stat, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { FLATTENER_VERSION } from '../../src/image/flatten.js';
import { ImageStore } from '../../src/image/store.js';
import { isEmbersError } from '../../src/errors.js';
import { writeOciLayout, type FixtureImage, type FixtureLayer } from '../../src/examples/oci-layout.js';
import { writeDockerSave } from '../helpers/docker-save.js';
import { catImage, listTree, namesIn, rootNames, statImage, tempDir } from './image-helpers.js';

const f = (path: string, content = path) => ({ path, type: 'file' as const, content });

test('whiteouts and opaque directories across layers give the right tree', async (t) => {
  const base = await tempDir(t, 'wh');
  const layers: FixtureLayer[] = [
    {
      entries: [
        f('a/x'),
        f('a/b/y'),
        f('a/b/z'),
        f('c/keep'),
        f('c/gone'),
        f('d/sub/deep'),
        f('e/file'),
        f('g/old'),
        { path: 'g', type: 'dir', mode: 0o755 },
      ],
    },
    {
      entries: [
        f('a/b/new'), // same layer as the opaque marker below: must survive it
        { type: 'opaque', path: 'a/b' },
        { type: 'whiteout', path: 'a/x' },
        { type: 'whiteout', path: 'c/gone' },
        { type: 'whiteout', path: 'd' },
        { type: 'whiteout', path: 'e' },
        f('e/newfile'),
        { type: 'opaque', path: 'g' },
        { path: 'g', type: 'dir', mode: 0o700 },
        f('g/kept'),
      ],
      compression: 'none',
    },
    {
      entries: [
        { type: 'whiteout', path: 'nothing/here' },
        f('h'),
        { type: 'whiteout', path: 'h' }, // hides lower layers only: h of this layer stays
        f('c/sub/new'),
        { type: 'whiteout', path: 'c/sub' }, // c/sub was created by this layer: stays
      ],
      compression: 'zstd',
    },
    {
      entries: [
        { type: 'opaque', path: 'a' },
        f('a/fresh'),
        { type: 'whiteout', path: 'c/keep' },
        f('c/keep', 'again'),
      ],
    },
  ];
  await writeOciLayout(join(base, 'layout'), { layers });
  const img = await new ImageStore(join(base, 'images'), join(base, 'tmp')).ensure(join(base, 'layout'));
  const p = img.rootfsPath;
  assert.deepEqual(namesIn(p, '/'), rootNames('a', 'c', 'e', 'g', 'h'));
  assert.deepEqual(namesIn(p, '/a'), ['fresh']);
  assert.deepEqual(namesIn(p, '/c'), ['keep', 'sub']);
  assert.equal(catImage(p, '/c/keep').toString(), 'again');
  assert.deepEqual(namesIn(p, '/c/sub'), ['new']);
  assert.deepEqual(namesIn(p, '/e'), ['newfile']);
  assert.deepEqual(namesIn(p, '/g'), ['kept']);
  assert.equal(statImage(p, '/g').mode & 0o777, 0o700);
  assert.equal(catImage(p, '/h').toString(), 'h');
});

test('a later layer can replace a file by a directory and a directory by a file or symlink', async (t) => {
  const base = await tempDir(t, 'replace');
  await writeOciLayout(join(base, 'layout'), {
    layers: [
      { entries: [f('x'), f('dir/inner'), f('dir2/inner')] },
      {
        entries: [
          { path: 'x', type: 'dir' },
          f('x/now-a-dir'),
          f('dir', 'now a file'),
          { path: 'dir2', type: 'symlink', linkname: 'dir' },
        ],
      },
    ],
  });
  const store = new ImageStore(join(base, 'images'), join(base, 'tmp'));
  const img = await store.ensure(join(base, 'layout'));
  assert.deepEqual(namesIn(img.rootfsPath, '/x'), ['now-a-dir']);
  assert.equal(catImage(img.rootfsPath, '/dir').toString(), 'now a file');
  assert.match(statImage(img.rootfsPath, '/dir2').raw, /Fast link dest: "dir"/);

  // Without a directory entry, a file cannot become a directory (as containerd): refused.
  await writeOciLayout(join(base, 'layout2'), { layers: [{ entries: [f('x')] }, { entries: [f('x/child')] }] });
  await assert.rejects(store.ensure(join(base, 'layout2')), (e: unknown) =>
    isEmbersError(e, 'EMB_IMAGE_LAYER_INVALID'),
  );
  assert.deepEqual(await listTree(join(base, 'tmp')), []);
});

function marked(name: string): FixtureImage {
  return { layers: [{ entries: [f('marker', name)] }], config: { Cmd: [name] } };
}

test('multi-platform indexes (nested and flat) resolve to linux/amd64', async (t) => {
  const base = await tempDir(t, 'multi');
  for (const indexStyle of ['nested', 'flat'] as const) {
    const dir = join(base, indexStyle);
    const written = await writeOciLayout(dir, marked('amd64'), {
      refName: 'latest',
      indexStyle,
      otherPlatforms: [
        { os: 'linux', architecture: 'arm64', variant: 'v8', image: marked('arm64') },
        { os: 'windows', architecture: 'amd64', image: marked('windows') },
      ],
    });
    const img = await new ImageStore(join(base, `images-${indexStyle}`), join(base, 'tmp')).ensure(`${dir}:latest`);
    assert.equal(img.manifestDigest, written.manifestDigest);
    assert.equal(catImage(img.rootfsPath, '/marker').toString(), 'amd64');
    assert.deepEqual(img.config.cmd, ['amd64']);
  }
});

test('path:tag and path@digest pick one image of a layout holding several', async (t) => {
  const base = await tempDir(t, 'tags');
  const dir = join(base, 'layout');
  const one = await writeOciLayout(dir, marked('one'), { refName: 'one' });
  const indexOne = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
  const two = await writeOciLayout(dir, marked('two'), { refName: 'example.com/app:two' });
  const indexTwo = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [...indexOne.manifests, ...indexTwo.manifests] }),
  );

  const store = new ImageStore(join(base, 'images'), join(base, 'tmp'));
  await assert.rejects(
    store.ensure(dir),
    (e: unknown) => isEmbersError(e, 'EMB_IMAGE_NOT_FOUND') && /holds 2 images/.test((e as Error).message),
  );
  assert.equal((await store.ensure(`${dir}:one`)).manifestDigest, one.manifestDigest);
  const byTag = await store.ensure(`${dir}:two`);
  assert.equal(byTag.manifestDigest, two.manifestDigest);
  assert.equal(byTag.reference, `${dir}:two`);
  assert.equal((await store.ensure(`${dir}@${two.manifestDigest}`)).manifestDigest, two.manifestDigest);
  assert.equal((await store.list()).length, 2);
});

test('docker save archives (legacy and OCI style) and Docker media types', async (t) => {
  const base = await tempDir(t, 'docker');
  const image: FixtureImage = {
    layers: [
      { entries: [f('etc/os-release', 'ID=test\n'), { path: 'bin/sh', type: 'symlink', linkname: 'busybox' }] },
      { entries: [{ type: 'whiteout', path: 'etc/os-release' }, f('app', 'v2')] },
    ],
    config: { Entrypoint: ['/app'], ExposedPorts: ['8080/tcp'] },
  };
  const store = new ImageStore(join(base, 'images'), join(base, 'tmp'));

  await writeDockerSave(join(base, 'legacy.tar'), image, { repoTags: ['example/app:1.0'] });
  const legacy = await store.ensure(join(base, 'legacy.tar'));
  assert.deepEqual(namesIn(legacy.rootfsPath, '/'), rootNames('app', 'bin', 'etc'));
  assert.deepEqual(namesIn(legacy.rootfsPath, '/etc'), []);
  assert.deepEqual(legacy.config.entrypoint, ['/app']);
  assert.deepEqual(legacy.config.exposedPorts, ['8080/tcp']);
  // the synthetic manifest digest is a function of the content: another archive file, same digest
  await writeDockerSave(join(base, 'legacy-copy.tar'), image, { repoTags: ['example/app:1.0'] });
  const again = await store.ensure(`${join(base, 'legacy-copy.tar')}:1.0`);
  assert.equal(again.manifestDigest, legacy.manifestDigest);
  assert.equal(again.rootfsSha256, legacy.rootfsSha256);
  await assert.rejects(store.ensure(`${join(base, 'legacy.tar')}:2.0`), (e: unknown) =>
    isEmbersError(e, 'EMB_IMAGE_NOT_FOUND'),
  );

  const written = await writeDockerSave(join(base, 'oci.tar'), image, { style: 'oci', repoTags: ['example/app:1.0'] });
  const oci = await store.ensure(join(base, 'oci.tar'));
  assert.equal(oci.manifestDigest, written.manifestDigest);
  assert.equal(catImage(oci.rootfsPath, '/app').toString(), 'v2');

  const dockerTypes = await writeOciLayout(join(base, 'docker-types'), { ...image, mediaTypes: 'docker' });
  const dt = await store.ensure(join(base, 'docker-types'));
  assert.equal(dt.manifestDigest, dockerTypes.manifestDigest);
  assert.equal(catImage(dt.rootfsPath, '/app').toString(), 'v2');
});

test('cache: hit without rebuild, list, get, remove, verify, concurrent ensure, reconcile', async (t) => {
  const base = await tempDir(t, 'cache');
  const images = join(base, 'images');
  const tmp = join(base, 'tmp');
  const layout = join(base, 'layout');
  const written = await writeOciLayout(layout, marked('cached'));
  const store = new ImageStore(images, tmp);

  const messages: string[] = [];
  const onProgress = (m: string) => messages.push(m);
  const [a, b] = await Promise.all([store.ensure(layout, { onProgress }), store.ensure(layout, { onProgress })]);
  assert.equal(a.rootfsSha256, b.rootfsSha256);
  assert.ok(
    messages.some((m) => m.startsWith('mke2fs')),
    'progress reported',
  );
  assert.equal(messages.filter((m) => m.startsWith('mke2fs')).length, 1, 'built once');
  const before = await stat(a.rootfsPath);

  const hitMessages: string[] = [];
  const hit = await store.ensure(layout, { onProgress: (m) => hitMessages.push(m) });
  assert.ok(
    hitMessages.some((m) => m.startsWith('cached rootfs for')),
    `the hit is served from the cache (${hitMessages.join('; ')})`,
  );
  assert.ok(
    !hitMessages.some((m) => m.startsWith('mke2fs')),
    'nothing is rebuilt (its cost: `npm run bench -- image`, warm ensure)',
  );
  const after = await stat(hit.rootfsPath);
  assert.equal(after.ino, before.ino);
  assert.equal(after.mtimeMs, before.mtimeMs);
  assert.deepEqual(await store.list(), [{ ...a, reference: layout }]);
  assert.equal((await store.get(written.manifestDigest))?.rootfsSha256, a.rootfsSha256);
  assert.equal(await store.get(`sha256:${'0'.repeat(64)}`), undefined);
  assert.deepEqual(await listTree(tmp), []);

  // a corrupted cached rootfs is rebuilt when verify is asked
  const fh = await open(a.rootfsPath, 'r+');
  await fh.write(Buffer.from('corrupt'), 0, 7, 2048);
  await fh.close();
  const verified = await store.ensure(layout, { verify: true });
  assert.equal(verified.rootfsSha256, a.rootfsSha256);

  await store.remove(written.manifestDigest);
  assert.deepEqual(await store.list(), []);
  await store.remove(written.manifestDigest); // idempotent
  const rebuilt = await store.ensure(layout);
  assert.equal(rebuilt.rootfsSha256, a.rootfsSha256);

  // leftovers of a crashed build
  const hex = written.manifestDigest.slice(7);
  await mkdir(join(tmp, 'image-flatten-deadbeef-x/staging/etc'), { recursive: true });
  await writeFile(join(tmp, 'image-flatten-deadbeef-x/staging/etc/f'), 'x');
  await writeFile(join(tmp, 'not-ours'), 'keep me');
  await mkdir(join(images, 'rootfs', `.partial-${hex}-abc`), { recursive: true });
  await writeFile(join(images, 'rootfs', `.partial-${hex}-abc`, 'rootfs.ext4'), 'half');
  await mkdir(join(images, 'rootfs', `${'e'.repeat(64)}-v1`));
  await store.reconcile();
  assert.deepEqual(await listTree(tmp), ['not-ours']);
  assert.deepEqual(await listTree(join(images, 'rootfs')), [
    `${hex}-v${FLATTENER_VERSION}`,
    `${hex}-v${FLATTENER_VERSION}/image.json`,
    `${hex}-v${FLATTENER_VERSION}/rootfs.ext4`,
  ]);
  assert.equal((await store.ensure(layout)).rootfsSha256, a.rootfsSha256);
});

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/image/store.js';
import { isEmbersError, type ErrorCode } from '../../src/errors.js';
import { writeOciLayout, type FixtureImage, type WrittenImage } from '../../src/examples/oci-layout.js';
import { blobPath } from '../helpers/docker-save.js';
import { listTree, tempDir } from './image-helpers.js';

const IMAGE: FixtureImage = {
  layers: [
    { entries: [{ path: 'hello', type: 'file', content: 'world' }] },
    { entries: [{ path: 'second', type: 'file', content: '2' }] },
  ],
  config: { Cmd: ['/hello'] },
};

interface Env {
  layout: string;
  images: string;
  tmp: string;
  written: WrittenImage;
}

async function setup(t: TestContext, image: FixtureImage = IMAGE): Promise<Env> {
  const base = await tempDir(t, 'bad');
  const env = { layout: join(base, 'layout'), images: join(base, 'images'), tmp: join(base, 'tmp') };
  return { ...env, written: await writeOciLayout(env.layout, image, { refName: 'v1' }) };
}

async function expectError(
  env: Pick<Env, 'images' | 'tmp'>,
  ref: string,
  code: ErrorCode,
  message?: RegExp,
): Promise<void> {
  const store = new ImageStore(env.images, env.tmp);
  await assert.rejects(store.ensure(ref), (err: unknown) => {
    assert.ok(
      isEmbersError(err, code),
      `expected ${code}, got ${String((err as { code?: string }).code)}: ${(err as Error).message}`,
    );
    if (message) assert.match((err as Error).message, message);
    return true;
  });
  assert.deepEqual(await listTree(env.tmp), [], 'nothing left in tmpDir');
  assert.deepEqual(
    (await listTree(env.images)).filter((p) => p !== 'rootfs'),
    [],
    'no cache entry',
  );
  assert.deepEqual(await store.list(), []);
}

function digestOf(buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`;
}

/** Replaces a JSON blob (manifest or config) and re-points its referrers, keeping digests valid. */
async function rewriteJsonChain(
  env: Env,
  mutateConfig: ((c: Record<string, unknown>) => void) | undefined,
  manifestBytes?: (m: Record<string, unknown>) => Buffer,
): Promise<void> {
  const manifest = JSON.parse(await readFile(blobPath(env.layout, env.written.manifestDigest), 'utf8')) as Record<
    string,
    unknown
  > & {
    config: { digest: string; size: number };
  };
  if (mutateConfig) {
    const config = JSON.parse(await readFile(blobPath(env.layout, env.written.configDigest), 'utf8')) as Record<
      string,
      unknown
    >;
    mutateConfig(config);
    const buf = Buffer.from(JSON.stringify(config));
    await writeFile(blobPath(env.layout, digestOf(buf)), buf);
    manifest.config = { ...manifest.config, digest: digestOf(buf), size: buf.length };
  }
  const mbuf = manifestBytes ? manifestBytes(manifest) : Buffer.from(JSON.stringify(manifest));
  await writeFile(blobPath(env.layout, digestOf(mbuf)), mbuf);
  const index = JSON.parse(await readFile(join(env.layout, 'index.json'), 'utf8')) as {
    manifests: { digest: string; size: number }[];
  };
  index.manifests[0] = { ...index.manifests[0]!, digest: digestOf(mbuf), size: mbuf.length };
  await writeFile(join(env.layout, 'index.json'), JSON.stringify(index));
}

test('missing image directory, or a directory that is not an image: EMB_IMAGE_NOT_FOUND', async (t) => {
  const env = await setup(t);
  await expectError(env, join(env.layout, 'nope'), 'EMB_IMAGE_NOT_FOUND');
  await expectError(env, `${join(env.layout, 'nope')}:latest`, 'EMB_IMAGE_NOT_FOUND');
  const empty = join(env.tmp, '..', 'empty');
  await mkdir(empty);
  await expectError(env, empty, 'EMB_IMAGE_NOT_FOUND', /no index\.json/);
  await expectError(env, `${env.layout}:no-such-tag`, 'EMB_IMAGE_NOT_FOUND', /no image tagged/);
  await expectError(env, `${env.layout}@sha256:${'0'.repeat(64)}`, 'EMB_IMAGE_NOT_FOUND');
});

test('corrupt index.json: EMB_IMAGE_MANIFEST_INVALID', async (t) => {
  const env = await setup(t);
  await writeFile(join(env.layout, 'index.json'), '{"schemaVersion": 2, "manifests": [');
  await expectError(env, env.layout, 'EMB_IMAGE_MANIFEST_INVALID', /index\.json is not valid JSON/);
  await writeFile(join(env.layout, 'index.json'), '{"schemaVersion": 2}');
  await expectError(env, env.layout, 'EMB_IMAGE_MANIFEST_INVALID', /no manifests/);
  await writeFile(
    join(env.layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ digest: 'sha256:xyz', size: 1 }] }),
  );
  await expectError(env, env.layout, 'EMB_IMAGE_MANIFEST_INVALID', /invalid digest/);
});

test('corrupt manifest (valid digest, bad JSON or schema): EMB_IMAGE_MANIFEST_INVALID', async (t) => {
  const env = await setup(t);
  await rewriteJsonChain(env, undefined, () => Buffer.from('{ this is not json'));
  await expectError(env, env.layout, 'EMB_IMAGE_MANIFEST_INVALID', /not valid JSON/);
  const env2 = await setup(t);
  await rewriteJsonChain(env2, undefined, (m) => Buffer.from(JSON.stringify({ ...m, layers: 'nope' })));
  await expectError(env2, env2.layout, 'EMB_IMAGE_MANIFEST_INVALID', /no layers array/);
  const env3 = await setup(t);
  await rewriteJsonChain(env3, (c) => {
    (c.config as Record<string, unknown>).Env = 'PATH=/bin';
  });
  await expectError(env3, env3.layout, 'EMB_IMAGE_MANIFEST_INVALID', /Env must be an array/);
});

test('a blob that does not match its digest: EMB_IMAGE_DIGEST_MISMATCH', async (t) => {
  // manifest changed in place
  const env = await setup(t);
  const mpath = blobPath(env.layout, env.written.manifestDigest);
  await writeFile(mpath, (await readFile(mpath, 'utf8')).replace('"schemaVersion":2', '"schemaVersion": 2'));
  await expectError(env, env.layout, 'EMB_IMAGE_DIGEST_MISMATCH');
  // config changed in place
  const env2 = await setup(t);
  const cpath = blobPath(env2.layout, env2.written.configDigest);
  await writeFile(cpath, (await readFile(cpath, 'utf8')).replace('/hello', '/hellO'));
  await expectError(env2, env2.layout, 'EMB_IMAGE_DIGEST_MISMATCH');
  // one byte of the second layer flipped
  const env3 = await setup(t);
  const lpath = blobPath(env3.layout, env3.written.layerDigests[1]!);
  const layer = await readFile(lpath);
  layer[layer.length - 5] ^= 0x01;
  await writeFile(lpath, layer);
  await expectError(env3, env3.layout, 'EMB_IMAGE_DIGEST_MISMATCH', /layer 2\/2/);
  // uncompressed content differs from the config's diff_id
  const env4 = await setup(t);
  await rewriteJsonChain(env4, (c) => {
    (c.rootfs as { diff_ids: string[] }).diff_ids[0] = `sha256:${'1'.repeat(64)}`;
  });
  await expectError(env4, env4.layout, 'EMB_IMAGE_DIGEST_MISMATCH', /diff_id/);
});

test('a missing layer blob: EMB_IMAGE_BLOB_MISSING', async (t) => {
  const env = await setup(t);
  await rm(blobPath(env.layout, env.written.layerDigests[0]!));
  await expectError(env, env.layout, 'EMB_IMAGE_BLOB_MISSING');
});

test('no linux/amd64: EMB_IMAGE_PLATFORM_MISSING', async (t) => {
  const base = await tempDir(t, 'bad-platform');
  const env = { images: join(base, 'images'), tmp: join(base, 'tmp') };
  await writeOciLayout(join(base, 'arm'), { ...IMAGE, architecture: 'arm64' });
  await expectError(env, join(base, 'arm'), 'EMB_IMAGE_PLATFORM_MISSING', /arm64/);
  await writeOciLayout(
    join(base, 'multi'),
    { ...IMAGE, architecture: 'arm64' },
    { otherPlatforms: [{ os: 'linux', architecture: 's390x' }] },
  );
  await expectError(env, join(base, 'multi'), 'EMB_IMAGE_PLATFORM_MISSING', /no linux\/amd64/);
});

test('unsupported layer media type: EMB_IMAGE_LAYER_UNSUPPORTED; garbage layer: EMB_IMAGE_LAYER_INVALID', async (t) => {
  const env = await setup(t, {
    layers: [{ entries: [{ path: 'a', type: 'file' }], mediaType: 'application/vnd.oci.image.layer.v1.tar+bzip2' }],
  });
  await expectError(env, env.layout, 'EMB_IMAGE_LAYER_UNSUPPORTED', /bzip2/);
  const garbage = Buffer.alloc(4096, 0x41);
  const env2 = await setup(t, { layers: [{ entries: [], rawTar: garbage }] });
  await expectError(env2, env2.layout, 'EMB_IMAGE_LAYER_INVALID');
  const env3 = await setup(t, {
    layers: [{ entries: [], rawTar: Buffer.from('not a tar at all'), compression: 'gzip' }],
  });
  await expectError(env3, env3.layout, 'EMB_IMAGE_LAYER_INVALID');
});

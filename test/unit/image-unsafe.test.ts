import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/image/store.js';
import { isEmbersError, type ErrorCode } from '../../src/errors.js';
import { writeOciLayout, type FixtureLayer } from '../../src/examples/oci-layout.js';
import { catImage, listTree, namesIn, rootNames, statImage, tempDir } from './image-helpers.js';

interface Env {
  canary: string;
  layout: string;
  images: string;
  tmp: string;
}

/** A canary dir outside the store (holding `keep`), and empty store dirs. */
async function setup(t: TestContext): Promise<Env> {
  const canary = await tempDir(t, 'canary');
  await writeFile(join(canary, 'keep'), 'precious');
  const base = await tempDir(t, 'unsafe');
  return { canary, layout: join(base, 'layout'), images: join(base, 'images'), tmp: join(base, 'tmp') };
}

async function assertCanaryIntact(env: Env): Promise<void> {
  assert.deepEqual(await listTree(env.canary), ['keep'], 'nothing was written next to the canary');
  assert.equal(await readFile(join(env.canary, 'keep'), 'utf8'), 'precious');
  assert.equal((await lstat(join(env.canary, 'keep'))).nlink, 1, 'no hard link was made to the canary');
}

async function assertNothingLeft(env: Env): Promise<void> {
  assert.deepEqual(await listTree(env.tmp), [], 'tmpDir is empty');
  assert.deepEqual(
    (await listTree(env.images)).filter((p) => p !== 'rootfs'),
    [],
    'no cache entry',
  );
}

async function expectRefused(
  t: TestContext,
  layers: (env: Env) => FixtureLayer[],
  code: ErrorCode = 'EMB_IMAGE_LAYER_UNSAFE',
): Promise<void> {
  const env = await setup(t);
  await writeOciLayout(env.layout, { layers: layers(env) });
  const store = new ImageStore(env.images, env.tmp);
  await assert.rejects(store.ensure(env.layout), (err: unknown) => {
    assert.ok(
      isEmbersError(err, code),
      `expected ${code}, got ${String((err as { code?: string }).code)}: ${(err as Error).message}`,
    );
    return true;
  });
  await assertCanaryIntact(env);
  await assertNothingLeft(env);
}

const file = (path: string, content = 'pwned') => ({ path, type: 'file' as const, content });

test('refuses ../ traversal', async (t) => {
  await expectRefused(t, (env) => [{ entries: [file(`${'../'.repeat(12)}${env.canary.slice(1)}/pwned`)] }]);
  await expectRefused(t, () => [{ entries: [file('ok/../../pwned')] }]);
});

test('refuses ../ traversal hidden in a PAX path and a GNU long name', async (t) => {
  const long = (env: Env) => `${'a/'.repeat(60)}${'../'.repeat(70)}${env.canary.slice(1)}/pwned`;
  await expectRefused(t, (env) => [{ entries: [file(long(env))], longNames: 'pax' }]);
  await expectRefused(t, (env) => [{ entries: [file(long(env))], longNames: 'gnu' }]);
});

test('refuses absolute paths', async (t) => {
  await expectRefused(t, (env) => [{ entries: [file(`${env.canary}/pwned`)] }]);
  await expectRefused(t, (env) => [{ entries: [{ path: `${env.canary}/dir`, type: 'dir' }] }]);
});

test('refuses writes through a symlink from a lower layer, and in the same layer', async (t) => {
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }] },
    { entries: [file('evil/x')] },
  ]);
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }, file('evil/x')] },
  ]);
  await expectRefused(t, (env) => [
    { entries: [{ path: 'a/b', type: 'symlink', linkname: env.canary }] },
    { entries: [file('a/b/c/d')] },
  ]);
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }] },
    { entries: [{ path: 'evil/sub', type: 'dir' }] },
  ]);
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }] },
    { entries: [{ path: 'evil/l', type: 'symlink', linkname: '/etc/shadow' }] },
  ]);
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }] },
    { entries: [{ path: 'evil/null', type: 'char', devmajor: 1, devminor: 3 }] },
  ]);
  // relative symlink climbing out
  await expectRefused(t, (env) => [
    { entries: [{ path: 'rel', type: 'symlink', linkname: `${'../'.repeat(20)}${env.canary.slice(1)}` }] },
    { entries: [file('rel/x')] },
  ]);
});

test('refuses hard links out of the tree, through symlinks, or to non-regular files', async (t) => {
  await expectRefused(t, () => [{ entries: [{ path: 'link', type: 'hardlink', linkname: '/etc/passwd' }] }]);
  await expectRefused(t, () => [{ entries: [{ path: 'link', type: 'hardlink', linkname: '../../x' }] }]);
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }] },
    { entries: [{ path: 'stolen', type: 'hardlink', linkname: 'evil/keep' }] },
  ]);
  await expectRefused(t, () => [
    {
      entries: [
        { path: 'd', type: 'dir' },
        { path: 'link', type: 'hardlink', linkname: 'd' },
      ],
    },
  ]);
  await expectRefused(t, (env) => [
    {
      entries: [
        { path: 's', type: 'symlink', linkname: `${env.canary}/keep` },
        { path: 'link', type: 'hardlink', linkname: 's' },
      ],
    },
  ]);
  await expectRefused(t, () => [{ entries: [{ path: 'link', type: 'hardlink', linkname: 'missing' }] }]);
});

test('refuses whiteouts and opaque markers through a symlink (nothing outside is deleted)', async (t) => {
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }] },
    { entries: [{ type: 'whiteout', path: 'evil/keep' }] },
  ]);
  await expectRefused(t, (env) => [
    { entries: [{ path: 'evil', type: 'symlink', linkname: env.canary }] },
    { entries: [{ type: 'opaque', path: 'evil' }] },
  ]);
  await expectRefused(t, () => [{ entries: [file('x')] }, { entries: [{ path: '.wh...', type: 'file' }] }]);
});

test('symlinks may point anywhere; replacing a symlink never follows it', async (t) => {
  const env = await setup(t);
  await writeOciLayout(env.layout, {
    layers: [
      {
        entries: [
          { path: 'abs', type: 'symlink', linkname: env.canary },
          { path: 'etc/mtab', type: 'symlink', linkname: '/proc/self/mounts' },
          { path: 'up', type: 'symlink', linkname: '../../../../..' },
          { path: 'tofile', type: 'symlink', linkname: `${env.canary}/keep` },
          { path: 'todir', type: 'symlink', linkname: env.canary },
        ],
      },
      {
        entries: [
          file('tofile', 'replaced the link, not the target'),
          { path: 'todir', type: 'dir', mode: 0o755 },
          file('todir/inside', 'in the image'),
          { type: 'whiteout', path: 'abs' },
        ],
      },
    ],
  });
  const img = await new ImageStore(env.images, env.tmp).ensure(env.layout);
  await assertCanaryIntact(env);
  assert.deepEqual(await listTree(env.tmp), []);
  assert.deepEqual(namesIn(img.rootfsPath, '/'), rootNames('etc', 'todir', 'tofile', 'up'));
  assert.match(statImage(img.rootfsPath, '/up').raw, /Fast link dest: "\.\.\/\.\.\/\.\.\/\.\.\/\.\."/);
  assert.equal(catImage(img.rootfsPath, '/tofile').toString(), 'replaced the link, not the target');
  assert.equal(catImage(img.rootfsPath, '/todir/inside').toString(), 'in the image');
});

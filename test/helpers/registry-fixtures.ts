/** Shared pieces of the registry-*.test.ts files: stores, images, and cache-cleanliness checks. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/image/store.js';
import type { RegistryOptions } from '../../src/image/registry/options.js';
import {
  writeOciLayout,
  type FixtureImage,
  type FixtureLayer,
  type WrittenImage,
} from '../../src/examples/oci-layout.js';
import type { TestRegistry } from './registry.js';

export const f = (path: string, content: string | Buffer = path) => ({ path, type: 'file' as const, content });

/** Fast retries for tests: 3 attempts, a few ms apart. */
export const FAST_RETRY = { attempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

/** Writes `image` as an OCI layout in `layout`, tagged v1, and pushes it to `registry` as `<repository>:v1`. */
export async function pushFixture(
  registry: TestRegistry,
  layout: string,
  image: FixtureImage,
  repository: string,
): Promise<WrittenImage> {
  const written = await writeOciLayout(layout, image, { refName: 'v1' });
  await registry.pushLayout(layout, 'v1', `${repository}:v1`);
  return written;
}

/** An ImageStore for one test "node" under `base/<name>`, with no credentials unless given. */
export function nodeStore(base: string, name: string, opts: RegistryOptions = {}): ImageStore {
  return new ImageStore(join(base, name, 'images'), join(base, name, 'tmp'), {
    authFile: join(base, name, 'no-auth.json'),
    retry: FAST_RETRY,
    ...opts,
  });
}

/** Writes a docker config.json with an `auths` entry and returns its path. */
export async function writeAuthFile(
  path: string,
  registry: string,
  user: string,
  password: string,
  style: 'auth' | 'fields' = 'auth',
): Promise<string> {
  const entry =
    style === 'auth' ? { auth: Buffer.from(`${user}:${password}`).toString('base64') } : { username: user, password };
  await writeFile(path, JSON.stringify({ auths: { [registry]: entry } }));
  return path;
}

/** Four layers with whiteouts, opaque directories and mixed compression. */
export function layeredImage(): FixtureImage {
  const layers: FixtureLayer[] = [
    { entries: [f('a/x'), f('a/b/y'), f('c/keep'), f('c/gone'), f('d/sub/deep'), f('e/file')] },
    {
      entries: [
        { type: 'opaque', path: 'a/b' },
        f('a/b/new'),
        { type: 'whiteout', path: 'a/x' },
        { type: 'whiteout', path: 'c/gone' },
        { type: 'whiteout', path: 'd' },
      ],
      compression: 'none',
    },
    { entries: [{ type: 'whiteout', path: 'e' }, f('e/newfile'), f('h')], compression: 'zstd' },
    { entries: [f('c/keep', 'again'), f('etc/os-release', 'ID=embers-test\n')] },
  ];
  return { layers, config: { Entrypoint: ['/bin/app'], Env: ['A=1'], ExposedPorts: ['8080/tcp'] } };
}

/** A one-layer image whose /marker says `name` (and whose Cmd is [name]). */
export function marked(name: string, extra: Buffer | string = ''): FixtureImage {
  return {
    layers: [{ entries: [f('marker', name), ...(extra.length ? [f('extra', extra)] : [])] }],
    config: { Cmd: [name] },
  };
}

/** Deterministic pseudo-random bytes (incompressible). */
export function noise(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(String(seed)).digest();
  for (let pos = 0; pos < size; pos += 32) {
    block = createHash('sha256').update(block).digest();
    block.copy(out, pos, 0, Math.min(32, size - pos));
  }
  return out;
}

async function names(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

/** Every stored blob hashes to its name. Returns the digests. */
export async function verifiedBlobs(imagesDir: string): Promise<string[]> {
  const dir = join(imagesDir, 'blobs', 'sha256');
  const out: string[] = [];
  for (const name of await names(dir)) {
    const hex = createHash('sha256')
      .update(await readFile(join(dir, name)))
      .digest('hex');
    assert.equal(hex, name, `blob ${name} is complete and verified`);
    out.push(`sha256:${name}`);
  }
  return out;
}

/**
 * After a failed pull: no rootfs entry (complete or partial), nothing in tmp, no pin or lock
 * left, every visible blob complete and verified, none of `notStored`, and a `.part` only where
 * `parts` allows (an interrupted download kept for resuming).
 */
export async function assertNothingHalfWritten(
  imagesDir: string,
  tmpDir: string,
  opts: { notStored?: string[]; parts?: boolean } = {},
): Promise<void> {
  assert.deepEqual(await names(join(imagesDir, 'rootfs')), [], 'no rootfs entry');
  assert.deepEqual(await names(tmpDir), [], 'nothing in tmp');
  const top = (await names(imagesDir)).filter((n) => n.startsWith('.pin-') || n.endsWith('.lock'));
  assert.deepEqual(top, [], 'no pin or lock left');
  const blobs = await verifiedBlobs(imagesDir);
  for (const d of opts.notStored ?? []) assert.ok(!blobs.includes(d), `${d} is not in the blob store`);
  const partial = await names(join(imagesDir, 'blobs', '.partial'));
  assert.deepEqual(
    partial.filter((n) => !n.endsWith('.part') || !opts.parts),
    [],
    'no temp file or lock in blobs/.partial',
  );
}

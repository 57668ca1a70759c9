/**
 * Builds the rootfs of a resolved image: verifies every layer, applies them in order to a
 * staging tree (extract.ts), builds the deterministic ext4 (flatten.ts), hashes it and
 * publishes the entry with one rename of its complete directory (rootfs-cache.ts). Staging
 * trees live in `tmpDir/image-flatten-<pid>-*`, partial entries in `rootfs/.partial-<pid>-*`;
 * both are removed on failure, and by `reconcile` after a crash.
 */
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { withCleanup } from '../util/cleanup.js';
import { crashPoint } from '../util/crash-point.js';
import { fsyncPath, makeTempDir, sha256File, writeJsonAtomic } from '../util/fs.js';
import { LayerApplier } from './extract.js';
import { buildRootfs, FLATTENER_VERSION, randomSuffix, ROOTFS_EPOCH } from './flatten.js';
import type { ResolvedImage } from './resolve.js';
import { DIGEST_RE, type ImageJson, type RootfsCache } from './rootfs-cache.js';
import { readTar } from './tar.js';
import type { FlattenedImage } from './types.js';

export const WORK_PREFIX = 'image-flatten';

export interface BuildContext {
  tmpDir: string;
  cache: RootfsCache;
  /** Work and partial dirs of builds running in this process (reconcile leaves them). */
  active: Set<string>;
}

export async function buildImage(
  image: ResolvedImage,
  ctx: BuildContext,
  progress: (msg: string) => void,
): Promise<FlattenedImage> {
  const { cache, active } = ctx;
  const hex = DIGEST_RE.exec(image.manifestDigest)![1]!;
  const started = Date.now();
  return withCleanup(async (cleanup) => {
    const work = await makeTempDir(ctx.tmpDir, `${WORK_PREFIX}-${process.pid}-${hex.slice(0, 12)}`);
    active.add(work);
    cleanup.add(`remove ${work}`, () => rm(work, { recursive: true, force: true }));
    cleanup.add('forget work dir', () => void active.delete(work));

    for (const layer of image.layers) {
      progress(`verifying ${layer.label}`);
      await image.verifyLayer(layer);
    }

    const staging = join(work, 'staging');
    await mkdir(staging, { mode: 0o755 });
    const applier = new LayerApplier(staging, ROOTFS_EPOCH);
    for (const layer of image.layers) {
      progress(`applying ${layer.label}`);
      await applier.applyLayer(readTar(image.openLayer(layer)), layer.label);
    }
    const tree = await applier.finish();
    await crashPoint('image.flatten.after-stage');
    progress(`staged ${tree.entries} entries (${tree.inodes} inodes, ${tree.blocks} blocks)`);

    await mkdir(cache.dir, { recursive: true });
    const partial = join(cache.dir, `.partial-${process.pid}-${hex}-${randomSuffix()}`);
    await mkdir(partial);
    active.add(partial);
    cleanup.add(`remove ${partial}`, () => rm(partial, { recursive: true, force: true }));
    cleanup.add('forget partial dir', () => void active.delete(partial));

    const rootfsTmp = join(partial, 'rootfs.ext4');
    let result;
    try {
      result = await buildRootfs({
        stagingDir: staging,
        outPath: rootfsTmp,
        manifestDigest: image.manifestDigest,
        tree,
        onProgress: progress,
      });
    } catch (err) {
      throw isEmbersError(err)
        ? err
        : EmbersError.of(
            'EMB_IMAGE_FLATTEN_FAILED',
            {
              problem: 'build',
              reason: err instanceof Error ? err.message : String(err),
              manifestDigest: image.manifestDigest,
            },
            { cause: err },
          );
    }
    await rm(staging, { recursive: true, force: true });

    progress('hashing rootfs');
    const rootfsSha256 = await sha256File(rootfsTmp);
    await fsyncPath(rootfsTmp);
    const json: ImageJson = {
      reference: image.reference,
      manifestDigest: image.manifestDigest,
      rootfsSha256,
      sizeBytes: result.sizeBytes,
      config: image.config,
      flattenerVersion: FLATTENER_VERSION,
      e2fsprogsVersion: result.e2fsprogsVersion,
    };
    await writeJsonAtomic(join(partial, 'image.json'), json);

    const final = cache.entryDir(hex);
    await crashPoint('image.flatten.before-publish');
    try {
      await rename(partial, final);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      // Another process published the same manifest first: theirs is as good as ours.
      const theirs = await cache.get(image.manifestDigest);
      if (!theirs) throw err;
      await cleanup.release();
      return theirs;
    }
    active.delete(partial);
    await fsyncPath(cache.dir);
    await rm(work, { recursive: true, force: true });
    active.delete(work);
    progress(`rootfs ${rootfsSha256.slice(0, 12)}… built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return cache.toFlattened(json, final);
  }).catch((err: unknown) => {
    if (isEmbersError(err)) throw err;
    throw EmbersError.of(
      'EMB_IMAGE_FLATTEN_FAILED',
      {
        problem: 'flatten',
        reason: err instanceof Error ? err.message : String(err),
        reference: image.reference,
        manifestDigest: image.manifestDigest,
      },
      { cause: err },
    );
  });
}

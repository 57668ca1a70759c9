/**
 * What the image cache knows of an image, read from the refs file, the blob store and the
 * rootfs cache without asking any registry: `embers image inspect` and `embers image ls`.
 */
import { readFile } from 'node:fs/promises';
import { EmbersError, isEmbersError } from '../errors.js';
import { FLATTENER_VERSION } from './flatten.js';
import { locateImage } from './locate.js';
import type { BlobStore } from './registry/blob-store.js';
import { formatImageReference } from './registry/reference.js';
import type { RefEntry, RefStore } from './registry/refs.js';
import { resolveFromBlobs, resolveImage, type ResolvedImage, type ResolvedLayer } from './resolve.js';
import { DIGEST_RE } from './rootfs-cache.js';
import type { FlattenedImage, ImageInspect, ImageLayerInfo, ImageListEntry } from './types.js';

/** The parts of the image store (store.ts) that inspect and list read. */
export interface CachedImages {
  readonly imagesDir: string;
  readonly refs: RefStore;
  readonly blobs: BlobStore;
  get(manifestDigest: string): Promise<FlattenedImage | undefined>;
  list(): Promise<FlattenedImage[]>;
}

/** Resolves a digest (manifest or index) from the blob store, or undefined when a blob is missing. */
export async function resolveCached(
  imagesDir: string,
  reference: string,
  digest: string,
): Promise<ResolvedImage | undefined> {
  try {
    return await resolveFromBlobs(reference, imagesDir, digest);
  } catch (err) {
    if (isEmbersError(err, 'EMB_IMAGE_BLOB_MISSING')) return undefined;
    throw err;
  }
}

/**
 * What the cache knows of an image, without asking any registry: `ref` is a reference (as
 * pulled or ensured) or a manifest or index digest. EMB_IMAGE_NOT_FOUND when the cache has
 * no such image (pull it first).
 */
export async function inspectImage(store: CachedImages, ref: string): Promise<ImageInspect> {
  const all = await store.refs.all();
  const byDigest = (d: string) => Object.entries(all).find(([, e]) => e.manifestDigest === d || e.indexDigest === d);
  let reference = ref;
  let entry: RefEntry | undefined;
  let localPath: string | undefined;
  if (DIGEST_RE.test(ref)) {
    const hit = byDigest(ref);
    if (hit) [reference, entry] = hit;
  } else if (all[ref]) {
    entry = all[ref];
  } else {
    const location = await locateImage(ref);
    if (location.kind === 'registry') {
      reference = formatImageReference(location.ref);
      entry = all[reference];
      if (!entry && location.ref.digest) entry = byDigest(location.ref.digest)?.[1];
    } else {
      entry = all[ref];
      localPath = location.path;
    }
  }
  if (entry?.source === 'local' && localPath === undefined) {
    const location = await locateImage(reference).catch(() => undefined);
    if (location?.kind === 'local') localPath = location.path;
  }

  let resolved: ResolvedImage | undefined;
  try {
    if (localPath !== undefined) resolved = await resolveImage(localPath);
    else if (entry) resolved = await resolveCached(store.imagesDir, reference, entry.manifestDigest);
    else if (DIGEST_RE.test(ref)) resolved = await resolveCached(store.imagesDir, ref, ref);
  } catch (err) {
    if (!entry) throw err; // a local path that is not an image: say why
  }
  await resolved?.close();
  const manifestDigest = entry?.manifestDigest ?? resolved?.manifestDigest ?? (DIGEST_RE.test(ref) ? ref : undefined);
  const rootfs = manifestDigest ? await store.get(manifestDigest) : undefined;
  if (!manifestDigest || (!resolved && !rootfs)) {
    throw EmbersError.of(
      'EMB_IMAGE_NOT_FOUND',
      { problem: 'not-cached', reference: ref, key: reference },
      { hint: `pull it first: \`embers image pull ${ref}\`; list the cached images with \`embers image ls\`` },
    );
  }
  return {
    reference: rootfs && !entry && !localPath ? rootfs.reference : reference,
    source: entry?.source ?? (localPath !== undefined ? 'local' : 'registry'),
    manifestDigest,
    ...(entry?.indexDigest ? { indexDigest: entry.indexDigest } : {}),
    platform: entry?.platform ?? 'linux/amd64',
    config: resolved?.config ?? rootfs!.config,
    layers: resolved ? layerInfos(resolved.layers) : [],
    ...rootfsFields(rootfs),
    ...(entry ? { updatedAt: entry.updatedAt } : {}),
  };
}

/** Sum of the layer sizes of a manifest in the blob store, if it is there. */
async function layersBytesOf(store: CachedImages, manifestDigest: string): Promise<number | undefined> {
  try {
    const doc = JSON.parse(await readFile(store.blobs.path(manifestDigest), 'utf8')) as {
      layers?: { size?: unknown }[];
    };
    if (!Array.isArray(doc.layers)) return undefined;
    return doc.layers.reduce((s, l) => s + (typeof l.size === 'number' ? l.size : 0), 0);
  } catch {
    return undefined;
  }
}

/** `embers image ls`: every reference in the refs file, then every rootfs no reference names. */
export async function listImages(store: CachedImages): Promise<ImageListEntry[]> {
  const all = await store.refs.all();
  const out: ImageListEntry[] = [];
  const named = new Set<string>();
  for (const [reference, e] of Object.entries(all)) {
    named.add(e.manifestDigest);
    const rootfs = await store.get(e.manifestDigest);
    const layersBytes = await layersBytesOf(store, e.manifestDigest);
    out.push({
      reference,
      source: e.source,
      manifestDigest: e.manifestDigest,
      ...(e.indexDigest ? { indexDigest: e.indexDigest } : {}),
      platform: e.platform,
      updatedAt: e.updatedAt,
      ...(rootfs ? { rootfsSha256: rootfs.rootfsSha256, rootfsSizeBytes: rootfs.sizeBytes } : {}),
      ...(layersBytes !== undefined ? { layersBytes } : {}),
    });
  }
  for (const img of await store.list()) {
    if (named.has(img.manifestDigest) || img.flattenerVersion !== FLATTENER_VERSION) continue;
    out.push({
      reference: img.reference,
      source: 'unreferenced',
      manifestDigest: img.manifestDigest,
      rootfsSha256: img.rootfsSha256,
      rootfsSizeBytes: img.sizeBytes,
    });
  }
  return out;
}

/** The layers of a resolved image as `inspect` and `pull` report them. */
export function layerInfos(layers: ResolvedLayer[]): ImageLayerInfo[] {
  return layers.map((l) => ({
    digest: l.digest,
    size: l.size,
    mediaType: l.mediaType,
    ...(l.diffId ? { diffId: l.diffId } : {}),
  }));
}

export function rootfsFields(
  rootfs: FlattenedImage | undefined,
): Pick<ImageInspect, 'rootfsPath' | 'rootfsSha256' | 'rootfsSizeBytes' | 'flattenerVersion'> {
  return rootfs
    ? {
        rootfsPath: rootfs.rootfsPath,
        rootfsSha256: rootfs.rootfsSha256,
        rootfsSizeBytes: rootfs.sizeBytes,
        flattenerVersion: rootfs.flattenerVersion,
      }
    : {};
}

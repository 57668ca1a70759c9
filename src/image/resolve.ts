/**
 * Resolves an image reference to a verified manifest, config and list of layers.
 *
 * A reference is a path to an OCI image layout directory (oci-layout, index.json,
 * blobs/sha256) or to a `docker save` archive (legacy manifest.json layout, or the OCI layout
 * that Docker >= 25 writes inside it), optionally followed by `:tag` (matched against
 * org.opencontainers.image.ref.name / io.containerd.image.name, or a docker RepoTag) or
 * `@sha256:<hex>` (a manifest or index digest). Indexes may nest; linux/amd64 is picked.
 * Every JSON blob is checked against its digest when read; layers by `verifyLayer()`.
 */
import { createHash } from 'node:crypto';
import { EmbersError, isEmbersError } from '../errors.js';
import { sha256 } from '../util/fs.js';
import { decompressed } from './decompress.js';
import { parseReference, type ParsedRef } from './local-reference.js';
import {
  checkDiffIdCount,
  checkIndex,
  checkManifest,
  checkPlatform,
  DIGEST_RE,
  INDEX_TYPES,
  isObject,
  kindOf,
  layerMediaType,
  manifestInvalid,
  MANIFEST_TYPES,
  matchesTag,
  MAX_JSON_BYTES,
  MEDIA,
  parseConfig,
  parseJson,
  pickPlatform,
  refNames,
  stringArray,
  type Descriptor,
} from './manifest.js';
import { ArchiveSource } from './sources/archive.js';
import { blobName, type ByteSource } from './sources/byte-source.js';
import { DirSource } from './sources/directory.js';
import type { ImageConfig } from './types.js';

export interface ResolvedLayer {
  index: number;
  /** Digest of the blob as stored (for legacy docker-save archives: of the tar itself). */
  digest: string;
  mediaType: string;
  size: number;
  /** Digest of the uncompressed tar, from the config's rootfs.diff_ids (when present). */
  diffId?: string;
  /** "layer 2/5 sha256:…" for messages. */
  label: string;
}

export interface ResolvedImage {
  reference: string;
  manifestDigest: string;
  config: ImageConfig;
  layers: ResolvedLayer[];
  /** Hashes a layer's stored bytes and compares digest and size. */
  verifyLayer(layer: ResolvedLayer): Promise<void>;
  /** The uncompressed tar stream of a layer; checks its diff_id at the end. */
  openLayer(layer: ResolvedLayer): AsyncIterable<Buffer>;
  close(): Promise<void>;
}

async function readBlob(source: ByteSource, desc: Descriptor, what: string): Promise<Buffer> {
  const size = await source.size(blobName(desc.digest));
  if (size === undefined)
    throw EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
      source: 'layout',
      blob: `${what} ${desc.digest}`,
      digest: desc.digest,
      location: source.location,
    });
  if (size > MAX_JSON_BYTES)
    throw EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
      problem: 'too-large',
      subject: `${what} ${desc.digest}`,
      size,
      digest: desc.digest,
    });
  const buf = await source.read(blobName(desc.digest), MAX_JSON_BYTES);
  const actual = `sha256:${sha256(buf)}`;
  if (actual !== desc.digest || buf.length !== desc.size) {
    throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
      problem: 'descriptor',
      blob: `${what} ${desc.digest}`,
      digest: desc.digest,
      actual,
      size: buf.length,
      expectedSize: desc.size,
      location: source.location,
    });
  }
  return buf;
}
async function resolveToManifest(
  source: ByteSource,
  desc: Descriptor,
  depth: number,
): Promise<{ desc: Descriptor; doc: Record<string, unknown> }> {
  if (depth > 4) throw manifestInvalid('image indexes', 'nest too deeply', { digest: desc.digest });
  if (desc.mediaType !== undefined && !INDEX_TYPES.has(desc.mediaType) && !MANIFEST_TYPES.has(desc.mediaType)) {
    kindOf({}, desc); // throws the right error for schema 1 / unknown types
  }
  const buf = await readBlob(source, desc, 'manifest');
  const doc = parseJson(buf, `manifest ${desc.digest}`, source.location);
  if (!isObject(doc)) throw manifestInvalid(`manifest ${desc.digest}`, 'is not a JSON object', { digest: desc.digest });
  if (kindOf(doc, desc) === 'index') {
    const entries = checkIndex(doc, `index ${desc.digest}`);
    return resolveToManifest(source, pickPlatform(entries, `index ${desc.digest}`), depth + 1);
  }
  return { desc, doc };
}

async function* hashing(
  source: AsyncIterable<Buffer>,
  expected: string | undefined,
  label: string,
): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  for await (const chunk of source) {
    hash.update(chunk);
    yield chunk;
  }
  const actual = `sha256:${hash.digest('hex')}`;
  if (expected && actual !== expected) {
    throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', { problem: 'diff-id', layer: label, diffId: expected, actual });
  }
}

interface LayerSpec {
  layer: ResolvedLayer;
  name: string;
}

function makeResolved(
  reference: string,
  source: ByteSource,
  manifestDigest: string,
  config: ImageConfig,
  specs: LayerSpec[],
): ResolvedImage {
  const names = new Map(specs.map((s) => [s.layer, s.name]));
  return {
    reference,
    manifestDigest,
    config,
    layers: specs.map((s) => s.layer),
    async verifyLayer(layer) {
      const name = names.get(layer)!;
      const size = await source.size(name);
      if (size === undefined)
        throw EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
          source: 'layout',
          blob: layer.label,
          digest: layer.digest,
          location: source.location,
        });
      const hash = createHash('sha256');
      for await (const chunk of source.stream(name)) hash.update(chunk as Buffer);
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== layer.digest || size !== layer.size) {
        throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
          problem: 'descriptor',
          blob: layer.label,
          digest: layer.digest,
          actual,
          size,
          expectedSize: layer.size,
          location: source.location,
        });
      }
    },
    openLayer(layer) {
      const name = names.get(layer)!;
      return {
        async *[Symbol.asyncIterator]() {
          yield* hashing(decompressed(source, name, layer.label), layer.diffId, layer.label);
        },
      };
    },
    close: () => source.close(),
  };
}

async function resolveOci(ref: string, parsed: ParsedRef, source: ByteSource): Promise<ResolvedImage> {
  const layoutSize = await source.size('oci-layout');
  if (layoutSize !== undefined) {
    const layout = parseJson(await source.read('oci-layout', 64 * 1024), 'oci-layout', source.location);
    if (!isObject(layout) || typeof layout.imageLayoutVersion !== 'string')
      throw manifestInvalid('oci-layout', 'has no imageLayoutVersion', {
        where: source.location,
        location: source.location,
      });
  }
  const indexBuf = await source.read('index.json', MAX_JSON_BYTES);
  const entries = checkIndex(parseJson(indexBuf, 'index.json', source.location), `${source.location}/index.json`);

  let chosen: Descriptor;
  if (parsed.digest) {
    const top = entries.find((d) => d.digest === parsed.digest);
    if (top) chosen = top;
    else {
      const size = await source.size(blobName(parsed.digest));
      if (size === undefined)
        throw EmbersError.of('EMB_IMAGE_NOT_FOUND', {
          problem: 'no-manifest',
          ref,
          digest: parsed.digest,
          location: source.location,
        });
      chosen = { digest: parsed.digest, size };
    }
  } else if (parsed.tag !== undefined) {
    const tagged = entries.filter((d) => matchesTag(d, parsed.tag!));
    if (tagged.length === 0) {
      throw EmbersError.of('EMB_IMAGE_NOT_FOUND', {
        problem: 'no-tag',
        ref,
        tag: parsed.tag,
        location: source.location,
        tags: entries.flatMap(refNames),
      });
    }
    chosen = pickPlatform(tagged, `${source.location}/index.json`);
  } else {
    chosen = pickPlatform(entries, `${source.location}/index.json`);
  }

  const { desc, doc } = await resolveToManifest(source, chosen, 0);
  return resolveManifestDoc(ref, source, desc, doc);
}

/** The manifest → config → layers part of a resolution, shared by layouts and the pulled-blob store. */
async function resolveManifestDoc(
  ref: string,
  source: ByteSource,
  desc: Descriptor,
  doc: Record<string, unknown>,
): Promise<ResolvedImage> {
  const where = `manifest ${desc.digest}`;
  const { configDesc, layers: layerDescs } = checkManifest(doc, where, { digest: desc.digest });
  const configBuf = await readBlob(source, configDesc, 'image config');
  const cfg = parseConfig(
    parseJson(configBuf, `image config ${configDesc.digest}`, source.location),
    configDesc.digest,
  );
  checkPlatform(cfg.os, cfg.architecture, desc.digest);
  checkDiffIdCount(cfg.diffIds, layerDescs.length, where, { digest: desc.digest });
  const specs = layerDescs.map((d, i): LayerSpec => {
    const mediaType = layerMediaType(d, i);
    return {
      name: blobName(d.digest),
      layer: {
        index: i,
        digest: d.digest,
        mediaType,
        size: d.size,
        diffId: cfg.diffIds?.[i],
        label: `layer ${i + 1}/${layerDescs.length} ${d.digest}`,
      },
    };
  });
  return makeResolved(ref, source, desc.digest, cfg.config, specs);
}

/** Legacy `docker save` layout: manifest.json + <config>.json + <id>/layer.tar. */
async function resolveDockerLegacy(ref: string, parsed: ParsedRef, source: ByteSource): Promise<ResolvedImage> {
  const doc = parseJson(await source.read('manifest.json', MAX_JSON_BYTES), 'manifest.json', source.location);
  if (!Array.isArray(doc) || doc.length === 0)
    throw manifestInvalid(`manifest.json of ${source.location}`, 'is not a non-empty array', {
      location: source.location,
    });
  const images = doc.map((m, i) => {
    if (
      !isObject(m) ||
      typeof m.Config !== 'string' ||
      !Array.isArray(m.Layers) ||
      m.Layers.some((l) => typeof l !== 'string')
    ) {
      throw manifestInvalid(`manifest.json[${i}] of ${source.location}`, 'lacks Config/Layers', {
        location: source.location,
      });
    }
    return {
      config: m.Config,
      layers: m.Layers as string[],
      tags: stringArray(m.RepoTags, 'RepoTags', 'manifest.json'),
    };
  });
  if (parsed.digest)
    throw EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'legacy-digest', ref, location: source.location });
  let image = images[0]!;
  if (parsed.tag !== undefined) {
    const tag = parsed.tag;
    const found = images.find((im) => im.tags.some((t) => t === tag || t.endsWith(`:${tag}`)));
    if (!found)
      throw EmbersError.of('EMB_IMAGE_NOT_FOUND', {
        problem: 'no-tag',
        ref,
        tag,
        location: source.location,
        tags: images.flatMap((im) => im.tags),
      });
    image = found;
  } else if (images.length > 1) {
    throw EmbersError.of('EMB_IMAGE_NOT_FOUND', {
      problem: 'several-images',
      ref,
      where: source.location,
      count: images.length,
      tags: images.flatMap((im) => im.tags),
    });
  }

  const configBuf = await source.read(image.config, MAX_JSON_BYTES);
  const configDigest = `sha256:${sha256(configBuf)}`;
  const named = /([0-9a-f]{64})(\.json)?$/.exec(image.config);
  if (named && `sha256:${named[1]}` !== configDigest) {
    throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
      problem: 'config-name',
      name: image.config,
      actual: configDigest,
    });
  }
  const cfg = parseConfig(parseJson(configBuf, `image config ${image.config}`, source.location), configDigest);
  checkPlatform(cfg.os, cfg.architecture, configDigest);
  if (!cfg.diffIds || cfg.diffIds.length !== image.layers.length) {
    throw manifestInvalid(
      `image config ${image.config}`,
      `lists ${cfg.diffIds?.length ?? 0} diff_ids for ${image.layers.length} layers`,
      { name: image.config },
    );
  }
  const layerDescs: Descriptor[] = [];
  for (let i = 0; i < image.layers.length; i++) {
    const size = await source.size(image.layers[i]!);
    if (size === undefined)
      throw EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
        source: 'archive',
        blob: `layer ${image.layers[i]}`,
        name: image.layers[i],
        location: source.location,
      });
    // The legacy layer.tar is the uncompressed tar: its digest is the diff_id, checked by verifyLayer.
    layerDescs.push({ mediaType: MEDIA.dockerLayerTar, digest: cfg.diffIds[i]!, size });
  }
  // A deterministic Docker v2 manifest stands in for the one `docker save` does not keep.
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA.dockerManifest,
    config: { mediaType: MEDIA.dockerConfig, size: configBuf.length, digest: configDigest },
    layers: layerDescs.map((d) => ({ mediaType: d.mediaType, size: d.size, digest: d.digest })),
  };
  const manifestDigest = `sha256:${sha256(Buffer.from(JSON.stringify(manifest)))}`;
  const specs = layerDescs.map(
    (d, i): LayerSpec => ({
      name: image.layers[i]!,
      layer: {
        index: i,
        digest: d.digest,
        mediaType: d.mediaType!,
        size: d.size,
        label: `layer ${i + 1}/${layerDescs.length} ${image.layers[i]}`,
      },
    }),
  );
  return makeResolved(ref, source, manifestDigest, cfg.config, specs);
}

/**
 * After a failed resolution: closes the source, then rethrows an EmbersError as it is and
 * wraps anything else as EMB_IMAGE_MANIFEST_INVALID (`reading <subject> failed: <cause>`).
 */
async function resolutionFailed(
  source: ByteSource,
  err: unknown,
  subject: string,
  details: { ref?: string; reference?: string },
): Promise<never> {
  await source.close();
  if (isEmbersError(err)) throw err;
  throw EmbersError.of(
    'EMB_IMAGE_MANIFEST_INVALID',
    { problem: 'unreadable', subject, reason: err instanceof Error ? err.message : String(err), ...details },
    { cause: err },
  );
}

/** Resolves and verifies the manifest and config of an image reference (see the file comment). */
export async function resolveImage(ref: string): Promise<ResolvedImage> {
  const parsed = await parseReference(ref);
  let source: ByteSource;
  if (parsed.isDir) {
    source = new DirSource(parsed.path);
  } else {
    source = await ArchiveSource.open(parsed.path);
  }
  try {
    if ((await source.size('index.json')) !== undefined) return await resolveOci(ref, parsed, source);
    if (!parsed.isDir && (await source.size('manifest.json')) !== undefined)
      return await resolveDockerLegacy(ref, parsed, source);
    throw EmbersError.of('EMB_IMAGE_NOT_FOUND', {
      problem: 'not-an-image',
      ref,
      path: parsed.path,
      directory: parsed.isDir,
    });
  } catch (err) {
    return await resolutionFailed(source, err, ref, { ref });
  }
}

/**
 * Resolves an image whose blobs sit in a content-addressed store laid out like an OCI layout
 * (`<root>/blobs/sha256/<hex>`), starting from a manifest (or index) digest: the registry pull
 * path, so that pulled images are verified and flattened exactly as local layouts are.
 */
export async function resolveFromBlobs(
  reference: string,
  root: string,
  manifestDigest: string,
): Promise<ResolvedImage> {
  if (!DIGEST_RE.test(manifestDigest))
    throw EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'not-a-digest', reference, manifestDigest });
  const source = new DirSource(root);
  try {
    const size = await source.size(blobName(manifestDigest));
    if (size === undefined)
      throw EmbersError.of(
        'EMB_IMAGE_BLOB_MISSING',
        { source: 'blob-store', reference, manifestDigest, location: root },
        { hint: 'pull the image again' },
      );
    const { desc, doc } = await resolveToManifest(source, { digest: manifestDigest, size }, 0);
    return await resolveManifestDoc(reference, source, desc, doc);
  } catch (err) {
    return await resolutionFailed(source, err, `${reference} from ${root}`, { reference });
  }
}

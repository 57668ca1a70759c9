/**
 * OCI image layouts written from in-memory layers: the example function's image
 * (test-function.ts, built by the demo) and the tests' fixtures (which add `docker save`
 * archives: test/helpers/docker-save.ts). Output is deterministic (fixed mtimes unless given, gzip without timestamps, sorted JSON
 * construction), so the same input always gives the same manifest digest.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { writeTar, type TarWriteEntry } from './tar-writer.js';

/** A fixed mtime for fixture entries (2023-11-14T22:13:20Z). */
export const FIXTURE_MTIME = 1_700_000_000;

export type LayerEntry =
  | TarWriteEntry
  /** Deletes `path` from lower layers (written as `<dir>/.wh.<name>`). */
  | { type: 'whiteout'; path: string }
  /** Makes directory `path` opaque: lower layers' contents are hidden (`<path>/.wh..wh..opq`). */
  | { type: 'opaque'; path: string };

export interface FixtureLayer {
  entries: LayerEntry[];
  /** Default 'gzip'. */
  compression?: 'gzip' | 'none' | 'zstd';
  /** How long names are encoded. Default 'pax'. */
  longNames?: 'pax' | 'gnu';
  /** Use these bytes as the uncompressed layer tar instead of `entries`. */
  rawTar?: Buffer;
  /** Override the layer descriptor's media type. */
  mediaType?: string;
}

export interface FixtureConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  /** e.g. ['8080/tcp'] */
  ExposedPorts?: string[];
  Labels?: Record<string, string>;
}

export interface FixtureImage {
  layers: FixtureLayer[];
  config?: FixtureConfig;
  /** Default 'linux' / 'amd64'. */
  os?: string;
  architecture?: string;
  /** 'oci' (default) or 'docker' (Docker v2 manifest and media types). */
  mediaTypes?: 'oci' | 'docker';
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface LayoutOptions {
  /** org.opencontainers.image.ref.name of the top-level index.json entry. */
  refName?: string;
  /** Other platforms listed beside linux/amd64 (multi-platform index). Their image defaults to the main one, re-labelled. */
  otherPlatforms?: Array<Platform & { image?: FixtureImage }>;
  /** Multi-platform style: 'nested' (index.json -> index blob -> manifests, as buildx writes) or 'flat' (index.json lists the manifests). Default 'nested'. */
  indexStyle?: 'nested' | 'flat';
  /** Put the amd64 manifest's platform in its index.json entry even for a single-platform image. */
  platformInIndex?: boolean;
}

export interface WrittenImage {
  /** Digest of the linux/amd64 image manifest. */
  manifestDigest: string;
  manifestSize: number;
  configDigest: string;
  layerDigests: string[];
  diffIds: string[];
  /** Digest of the nested index blob, when one was written. */
  indexDigest?: string;
}

const M = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
};

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The tar entries of a fixture layer (whiteouts expanded). */
export function layerEntries(layer: FixtureLayer): TarWriteEntry[] {
  return layer.entries.map((e): TarWriteEntry => {
    if (e.type === 'whiteout') {
      const slash = e.path.lastIndexOf('/');
      const dir = slash === -1 ? '' : `${e.path.slice(0, slash)}/`;
      return { path: `${dir}.wh.${e.path.slice(slash + 1)}`, type: 'file', mode: 0o644, mtime: FIXTURE_MTIME };
    }
    if (e.type === 'opaque')
      return { path: `${e.path.replace(/\/$/, '')}/.wh..wh..opq`, type: 'file', mode: 0o644, mtime: FIXTURE_MTIME };
    return { mtime: FIXTURE_MTIME, ...e };
  });
}

/** The uncompressed tar of a fixture layer. */
export function layerTar(layer: FixtureLayer): Buffer {
  return layer.rawTar ?? writeTar(layerEntries(layer), { longNames: layer.longNames ?? 'pax' });
}

function compress(tar: Buffer, how: 'gzip' | 'none' | 'zstd'): Buffer {
  if (how === 'none') return tar;
  if (how === 'gzip') return gzipSync(tar, { level: 6 });
  const r = spawnSync('zstd', ['-q', '-c', '-3', '--no-check'], { input: tar, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr?.toString()}`);
  return r.stdout;
}

function layerMediaType(layer: FixtureLayer, style: 'oci' | 'docker'): string {
  if (layer.mediaType) return layer.mediaType;
  const c = layer.compression ?? 'gzip';
  if (style === 'docker') {
    if (c === 'gzip') return 'application/vnd.docker.image.rootfs.diff.tar.gzip';
    if (c === 'none') return 'application/vnd.docker.image.rootfs.diff.tar';
  }
  return c === 'gzip'
    ? 'application/vnd.oci.image.layer.v1.tar+gzip'
    : c === 'zstd'
      ? 'application/vnd.oci.image.layer.v1.tar+zstd'
      : 'application/vnd.oci.image.layer.v1.tar';
}

function configJson(image: FixtureImage, diffIds: string[]): Buffer {
  const c = image.config ?? {};
  const config: Record<string, unknown> = {};
  if (c.User !== undefined) config.User = c.User;
  if (c.ExposedPorts !== undefined) config.ExposedPorts = Object.fromEntries(c.ExposedPorts.map((p) => [p, {}]));
  if (c.Env !== undefined) config.Env = c.Env;
  if (c.Entrypoint !== undefined) config.Entrypoint = c.Entrypoint;
  if (c.Cmd !== undefined) config.Cmd = c.Cmd;
  if (c.WorkingDir !== undefined) config.WorkingDir = c.WorkingDir;
  if (c.Labels !== undefined) config.Labels = c.Labels;
  return Buffer.from(
    JSON.stringify({
      architecture: image.architecture ?? 'amd64',
      os: image.os ?? 'linux',
      config,
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
}

/** Collects blobs by digest; written out as a layout directory or archive members. */
export class Blobs {
  readonly files = new Map<string, Buffer>();
  put(data: Buffer): string {
    const hex = sha256(data);
    this.files.set(`blobs/sha256/${hex}`, data);
    return `sha256:${hex}`;
  }
}

export interface BuiltImage extends WrittenImage {
  manifestMediaType: string;
  configName: string;
  layerTars: Buffer[];
}

export function buildImage(blobs: Blobs, image: FixtureImage): BuiltImage {
  const style = image.mediaTypes ?? 'oci';
  const layerDescs: Array<{ mediaType: string; digest: string; size: number }> = [];
  const diffIds: string[] = [];
  const layerTars: Buffer[] = [];
  for (const layer of image.layers) {
    const tar = layerTar(layer);
    layerTars.push(tar);
    diffIds.push(`sha256:${sha256(tar)}`);
    const blob = compress(tar, layer.compression ?? 'gzip');
    layerDescs.push({ mediaType: layerMediaType(layer, style), digest: blobs.put(blob), size: blob.length });
  }
  const config = configJson(image, diffIds);
  const configDigest = blobs.put(config);
  const manifestMediaType = style === 'docker' ? M.dockerManifest : M.ociManifest;
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: manifestMediaType,
      config: {
        mediaType: style === 'docker' ? M.dockerConfig : M.ociConfig,
        digest: configDigest,
        size: config.length,
      },
      layers: layerDescs,
    }),
  );
  const manifestDigest = blobs.put(manifest);
  return {
    manifestDigest,
    manifestSize: manifest.length,
    configDigest,
    layerDigests: layerDescs.map((d) => d.digest),
    diffIds,
    manifestMediaType,
    configName: `blobs/sha256/${configDigest.slice(7)}`,
    layerTars,
  };
}

export function layoutFiles(
  image: FixtureImage,
  opts: LayoutOptions,
): { blobs: Blobs; main: BuiltImage; index: Buffer; indexDigest?: string } {
  const blobs = new Blobs();
  const main = buildImage(blobs, image);
  const annotations = opts.refName !== undefined ? { 'org.opencontainers.image.ref.name': opts.refName } : undefined;
  const amd64 = { os: 'linux', architecture: 'amd64' };
  let entries: unknown[];
  let indexDigest: string | undefined;
  if (opts.otherPlatforms && opts.otherPlatforms.length > 0) {
    const platformEntries: unknown[] = [
      {
        mediaType: main.manifestMediaType,
        digest: main.manifestDigest,
        size: main.manifestSize,
        platform: { architecture: image.architecture ?? 'amd64', os: image.os ?? 'linux' },
      },
    ];
    for (const p of opts.otherPlatforms) {
      const other = buildImage(blobs, { ...(p.image ?? image), os: p.os, architecture: p.architecture });
      const platform: Record<string, string> = { architecture: p.architecture, os: p.os };
      if (p.variant) platform.variant = p.variant;
      platformEntries.push({
        mediaType: other.manifestMediaType,
        digest: other.manifestDigest,
        size: other.manifestSize,
        platform,
      });
    }
    if ((opts.indexStyle ?? 'nested') === 'nested') {
      const nested = Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: M.ociIndex, manifests: platformEntries }),
      );
      indexDigest = blobs.put(nested);
      entries = [
        { mediaType: M.ociIndex, digest: indexDigest, size: nested.length, ...(annotations ? { annotations } : {}) },
      ];
    } else {
      entries = platformEntries.map((e) => ({ ...(e as object), ...(annotations ? { annotations } : {}) }));
    }
  } else {
    entries = [
      {
        mediaType: main.manifestMediaType,
        digest: main.manifestDigest,
        size: main.manifestSize,
        ...(annotations ? { annotations } : {}),
        ...(opts.platformInIndex ? { platform: amd64 } : {}),
      },
    ];
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: M.ociIndex, manifests: entries }));
  return { blobs, main, index, indexDigest };
}

export function written(main: BuiltImage, indexDigest?: string): WrittenImage {
  return {
    manifestDigest: main.manifestDigest,
    manifestSize: main.manifestSize,
    configDigest: main.configDigest,
    layerDigests: main.layerDigests,
    diffIds: main.diffIds,
    ...(indexDigest ? { indexDigest } : {}),
  };
}

/** Writes an OCI image layout directory (oci-layout, index.json, blobs/sha256/…). */
export async function writeOciLayout(
  dir: string,
  image: FixtureImage,
  opts: LayoutOptions = {},
): Promise<WrittenImage> {
  const { blobs, main, index, indexDigest } = layoutFiles(image, opts);
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  for (const [name, data] of blobs.files) await writeFile(join(dir, ...name.split('/')), data);
  await writeFile(join(dir, 'index.json'), index);
  return written(main, indexDigest);
}

/**
 * The shapes embers reads from an image: media types, descriptors, image indexes, manifests
 * and configs, each checked field by field (EMB_IMAGE_MANIFEST_INVALID says which field of
 * which blob is wrong). Also the choice of linux/amd64 in an index and of an index entry by tag.
 * Nothing here reads a file: sources (sources/) give bytes, resolve.ts puts them together.
 */
import { EmbersError, type ErrorDetails } from '../errors.js';
import { RESTORE_HOOK_LABEL, RESTORE_HOOK_TIMEOUT_LABEL, type ImageConfig } from './types.js';

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  ociLayerTar: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerLayerTar: 'application/vnd.docker.image.rootfs.diff.tar',
} as const;

export const INDEX_TYPES: ReadonlySet<string> = new Set<string>([MEDIA.ociIndex, MEDIA.dockerList]);
export const MANIFEST_TYPES: ReadonlySet<string> = new Set<string>([MEDIA.ociManifest, MEDIA.dockerManifest]);
export const LAYER_TYPES: ReadonlySet<string> = new Set<string>([
  MEDIA.ociLayerTar,
  MEDIA.ociLayerGzip,
  MEDIA.ociLayerZstd,
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  MEDIA.dockerLayerGzip,
  MEDIA.dockerLayerTar,
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

export const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
/** Largest index, manifest or config embers reads. */
export const MAX_JSON_BYTES = 8 * 1024 * 1024;

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

/** Context of a schema error beyond what is wrong: the document, digest, location… */
type SchemaErrorContext = Omit<ErrorDetails<'EMB_IMAGE_MANIFEST_INVALID'>, 'problem' | 'subject' | 'defect'>;

/** `subject` (e.g. "manifests[0]", "image index") breaks the schema: `defect` says how ("has no digest"). */
export function manifestInvalid(subject: string, defect: string, details: SchemaErrorContext = {}): EmbersError {
  return EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', { problem: 'schema', subject, defect, ...details });
}

export function parseJson(buf: Buffer, what: string, where: string): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
      problem: 'not-json',
      subject: what,
      where,
      reason: err instanceof Error ? err.message : String(err),
    });
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function checkDescriptor(v: unknown, what: string, where: string): Descriptor {
  if (!isObject(v)) throw manifestInvalid(what, 'is not a descriptor object', { where });
  const { digest, size, mediaType, annotations, platform } = v;
  if (typeof digest !== 'string') throw manifestInvalid(what, 'has no digest', { where });
  if (!DIGEST_RE.test(digest)) {
    if (/^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(digest) && !digest.startsWith('sha256:')) {
      throw EmbersError.of(
        'EMB_IMAGE_LAYER_UNSUPPORTED',
        { problem: 'digest-algorithm', subject: what, where, digest },
        { hint: 'embers verifies sha256 digests only' },
      );
    }
    throw manifestInvalid(what, `has an invalid digest ${JSON.stringify(digest)}`, { where, digest });
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0)
    throw manifestInvalid(what, 'has an invalid size', { where, digest });
  if (mediaType !== undefined && typeof mediaType !== 'string')
    throw manifestInvalid(what, 'has an invalid mediaType', { where, digest });
  if (annotations !== undefined && !isObject(annotations))
    throw manifestInvalid(what, 'has invalid annotations', { where, digest });
  if (platform !== undefined && !isObject(platform))
    throw manifestInvalid(what, 'has an invalid platform', { where, digest });
  return v as unknown as Descriptor;
}

export function stringArray(v: unknown, what: string, where: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string'))
    throw manifestInvalid(what, 'must be an array of strings', { where });
  return v as string[];
}

export function refNames(desc: Descriptor): string[] {
  const a = desc.annotations ?? {};
  return [a['org.opencontainers.image.ref.name'], a['io.containerd.image.name']].filter(
    (s): s is string => typeof s === 'string',
  );
}

export function matchesTag(desc: Descriptor, tag: string): boolean {
  return refNames(desc).some((n) => n === tag || n.endsWith(`:${tag}`) || n.endsWith(`/${tag}`));
}

function isAttestation(desc: Descriptor): boolean {
  return desc.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest';
}

export function kindOf(doc: Record<string, unknown>, desc: Descriptor): 'index' | 'manifest' {
  const mt = desc.mediaType ?? (typeof doc.mediaType === 'string' ? doc.mediaType : undefined);
  if (mt && INDEX_TYPES.has(mt)) return 'index';
  if (mt && MANIFEST_TYPES.has(mt)) return 'manifest';
  if (
    mt === 'application/vnd.docker.distribution.manifest.v1+json' ||
    mt === 'application/vnd.docker.distribution.manifest.v1+prettyjws' ||
    doc.schemaVersion === 1
  ) {
    throw manifestInvalid(desc.digest, 'is a Docker schema 1 manifest: not supported', {
      digest: desc.digest,
      mediaType: mt,
    });
  }
  if (mt)
    throw manifestInvalid(desc.digest, `has an unexpected media type ${mt}`, { digest: desc.digest, mediaType: mt });
  if (Array.isArray(doc.manifests)) return 'index';
  if (Array.isArray(doc.layers)) return 'manifest';
  throw manifestInvalid(desc.digest, 'is neither an image index nor a manifest', { digest: desc.digest });
}

export function checkIndex(doc: unknown, where: string): Descriptor[] {
  if (!isObject(doc)) throw manifestInvalid('image index', 'is not a JSON object', { where });
  if (doc.schemaVersion !== 2)
    throw manifestInvalid('image index', `has schemaVersion ${JSON.stringify(doc.schemaVersion)}, expected 2`, {
      where,
    });
  if (!Array.isArray(doc.manifests)) throw manifestInvalid('image index', 'has no manifests array', { where });
  return doc.manifests.map((m, i) => checkDescriptor(m, `manifests[${i}]`, where));
}

/** Picks linux/amd64 among index entries (or the only entry when none says its platform). */
export function pickPlatform(entries: Descriptor[], where: string): Descriptor {
  const usable = entries.filter((d) => !isAttestation(d));
  const withPlatform = usable.filter((d) => d.platform);
  if (withPlatform.length > 0) {
    const amd64 = withPlatform.filter((d) => d.platform!.os === 'linux' && d.platform!.architecture === 'amd64');
    if (amd64.length === 0) {
      throw EmbersError.of('EMB_IMAGE_PLATFORM_MISSING', {
        problem: 'no-amd64',
        where,
        platforms: withPlatform.map((d) => d.platform),
      });
    }
    const plain = amd64.find((d) => d.platform!.variant === undefined || d.platform!.variant === 'v1');
    return plain ?? amd64[0]!;
  }
  if (usable.length === 1) return usable[0]!;
  if (usable.length === 0) throw EmbersError.of('EMB_IMAGE_PLATFORM_MISSING', { problem: 'empty-index', where });
  const names = usable.flatMap(refNames);
  throw EmbersError.of('EMB_IMAGE_NOT_FOUND', {
    problem: 'several-images',
    where,
    count: usable.length,
    byDigest: true,
    tags: names,
  });
}

/** Follows indexes down to one linux/amd64 manifest. */
export function parseConfig(
  doc: unknown,
  digest: string,
): { config: ImageConfig; diffIds?: string[]; os?: unknown; architecture?: unknown } {
  if (!isObject(doc)) throw manifestInvalid(`image config ${digest}`, 'is not a JSON object', { digest });
  const where = `config ${digest}`;
  const c = doc.config ?? {};
  if (!isObject(c)) throw manifestInvalid(`image config ${digest}: "config"`, 'is not an object', { digest });
  const str = (v: unknown, what: string): string => {
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') throw manifestInvalid(`image config ${digest}: ${what}`, 'must be a string', { digest });
    return v;
  };
  const ports = c.ExposedPorts ?? {};
  if (!isObject(ports)) throw manifestInvalid(`image config ${digest}: ExposedPorts`, 'must be an object', { digest });
  let diffIds: string[] | undefined;
  if (doc.rootfs !== undefined) {
    if (!isObject(doc.rootfs) || !Array.isArray(doc.rootfs.diff_ids))
      throw manifestInvalid(`image config ${digest}: rootfs.diff_ids`, 'missing', { digest });
    diffIds = doc.rootfs.diff_ids.map((d, i) => {
      if (typeof d !== 'string' || !DIGEST_RE.test(d))
        throw manifestInvalid(`image config ${digest}: rootfs.diff_ids[${i}]`, 'is not a sha256 digest', { digest });
      return d;
    });
  }
  const labels = c.Labels ?? {};
  if (!isObject(labels)) throw manifestInvalid(`image config ${digest}: Labels`, 'must be an object', { digest });
  let restoreHook: ImageConfig['restoreHook'];
  const hookPath = labels[RESTORE_HOOK_LABEL];
  if (hookPath !== undefined) {
    if (typeof hookPath !== 'string' || !hookPath.startsWith('/') || hookPath.includes('\0')) {
      throw manifestInvalid(
        `image config ${digest}: label ${RESTORE_HOOK_LABEL}`,
        'must be an absolute path in the image',
        { digest, label: hookPath },
      );
    }
    restoreHook = { path: hookPath };
    const timeout = labels[RESTORE_HOOK_TIMEOUT_LABEL];
    if (timeout !== undefined) {
      const ms = typeof timeout === 'string' && /^\d{1,7}$/.test(timeout) ? Number(timeout) : NaN;
      if (!(ms >= 1 && ms <= 3_600_000)) {
        throw manifestInvalid(
          `image config ${digest}: label ${RESTORE_HOOK_TIMEOUT_LABEL}`,
          'must be a whole number of ms from 1 to 3600000',
          {
            digest,
            label: timeout,
          },
        );
      }
      restoreHook.timeoutMs = ms;
    }
  }
  return {
    config: {
      ...(restoreHook ? { restoreHook } : {}),
      entrypoint: stringArray(c.Entrypoint, 'Entrypoint', where),
      cmd: stringArray(c.Cmd, 'Cmd', where),
      env: stringArray(c.Env, 'Env', where),
      workingDir: str(c.WorkingDir, 'WorkingDir'),
      user: str(c.User, 'User'),
      exposedPorts: Object.keys(ports).sort(),
    },
    diffIds,
    os: doc.os,
    architecture: doc.architecture,
  };
}

export function checkPlatform(os: unknown, architecture: unknown, digest: string): void {
  if ((os !== undefined && os !== 'linux') || (architecture !== undefined && architecture !== 'amd64')) {
    throw EmbersError.of('EMB_IMAGE_PLATFORM_MISSING', { problem: 'config', digest, os, architecture });
  }
}

/**
 * The shape of an image manifest: schemaVersion 2, a config descriptor, a layers array of
 * descriptors. `details` goes into the errors about the manifest as a whole.
 */
export function checkManifest(
  doc: Record<string, unknown>,
  where: string,
  details: SchemaErrorContext,
): { configDesc: Descriptor; layers: Descriptor[] } {
  if (doc.schemaVersion !== 2)
    throw manifestInvalid(where, `has schemaVersion ${JSON.stringify(doc.schemaVersion)}, expected 2`, details);
  const configDesc = checkDescriptor(doc.config, 'config', where);
  if (!Array.isArray(doc.layers)) throw manifestInvalid(where, 'has no layers array', details);
  const layers = doc.layers.map((l, i) => checkDescriptor(l, `layers[${i}]`, where));
  return { configDesc, layers };
}

/**
 * The media type of layer `i` (gzip'd OCI when unset), which must be one embers reads. The
 * error names the image `reference` when given.
 */
export function layerMediaType(d: Descriptor, i: number, reference?: string): string {
  const mediaType = d.mediaType ?? MEDIA.ociLayerGzip;
  if (!LAYER_TYPES.has(mediaType)) {
    throw EmbersError.of('EMB_IMAGE_LAYER_UNSUPPORTED', {
      problem: 'media-type',
      ...(reference !== undefined ? { reference } : {}),
      index: i + 1,
      digest: d.digest,
      mediaType,
    });
  }
  return mediaType;
}

/** The config's diff_ids (when it has them) must be one per manifest layer. */
export function checkDiffIdCount(
  diffIds: string[] | undefined,
  layerCount: number,
  where: string,
  details: SchemaErrorContext,
): void {
  if (diffIds && diffIds.length !== layerCount) {
    throw manifestInvalid(where, `has ${layerCount} layers but its config lists ${diffIds.length} diff_ids`, details);
  }
}

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
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { open, readFile, stat, type FileHandle } from 'node:fs/promises';
import { join, posix, resolve } from 'node:path';
import { createGunzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { PassThrough, type Readable } from 'node:stream';
import { EmbersError, isEmbersError } from '../errors.js';
import { which } from '../util/exec.js';
import { regularFileSize, sha256 } from '../util/fs.js';
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

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
/** Largest index, manifest or config embers reads. */
export const MAX_JSON_BYTES = 8 * 1024 * 1024;

export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export type Compression = 'none' | 'gzip' | 'zstd';

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

// --- errors and JSON ---------------------------------------------------------------------------

export function manifestInvalid(message: string, details: Record<string, unknown> = {}): EmbersError {
  return new EmbersError('EMB_IMAGE_MANIFEST_INVALID', message, details);
}

export function parseJson(buf: Buffer, what: string, where: string): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch (err) {
    throw manifestInvalid(`${what} is not valid JSON (${where}): ${err instanceof Error ? err.message : String(err)}`, { what, where });
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function checkDescriptor(v: unknown, what: string, where: string): Descriptor {
  if (!isObject(v)) throw manifestInvalid(`${what} is not a descriptor object (${where})`, { where });
  const { digest, size, mediaType, annotations, platform } = v;
  if (typeof digest !== 'string') throw manifestInvalid(`${what} has no digest (${where})`, { where });
  if (!DIGEST_RE.test(digest)) {
    if (/^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(digest) && !digest.startsWith('sha256:')) {
      throw new EmbersError(
        'EMB_IMAGE_LAYER_UNSUPPORTED',
        `${what} uses an unsupported digest algorithm: ${digest}`,
        { where, digest },
        { hint: 'embers verifies sha256 digests only' },
      );
    }
    throw manifestInvalid(`${what} has an invalid digest ${JSON.stringify(digest)} (${where})`, { where, digest });
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw manifestInvalid(`${what} has an invalid size (${where})`, { where, digest });
  if (mediaType !== undefined && typeof mediaType !== 'string') throw manifestInvalid(`${what} has an invalid mediaType (${where})`, { where, digest });
  if (annotations !== undefined && !isObject(annotations)) throw manifestInvalid(`${what} has invalid annotations (${where})`, { where, digest });
  if (platform !== undefined && !isObject(platform)) throw manifestInvalid(`${what} has an invalid platform (${where})`, { where, digest });
  return v as unknown as Descriptor;
}

function stringArray(v: unknown, what: string, where: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw manifestInvalid(`${what} must be an array of strings (${where})`, { where });
  return v as string[];
}

// --- blob sources --------------------------------------------------------------------------------

interface ByteSource {
  /** Where the image is, for messages. */
  readonly location: string;
  /** Size of a named file, or undefined when absent. */
  size(name: string): Promise<number | undefined>;
  read(name: string, maxBytes: number): Promise<Buffer>;
  stream(name: string): Readable;
  close(): Promise<void>;
}

class DirSource implements ByteSource {
  constructor(readonly location: string) {}
  private path(name: string): string {
    return join(this.location, ...name.split('/'));
  }
  async size(name: string): Promise<number | undefined> {
    return regularFileSize(this.path(name));
  }
  async read(name: string, maxBytes: number): Promise<Buffer> {
    const size = await this.size(name);
    if (size === undefined) throw new EmbersError('EMB_IMAGE_BLOB_MISSING', `${name} is missing from ${this.location}`, { name, location: this.location });
    if (size > maxBytes) throw manifestInvalid(`${name} is too large (${size} bytes)`, { name, location: this.location });
    return readFile(this.path(name));
  }
  stream(name: string): Readable {
    return createReadStream(this.path(name), { highWaterMark: 1 << 20 });
  }
  async close(): Promise<void> {}
}

interface TarMember {
  offset: number;
  size: number;
  type: 'file' | 'symlink' | 'hardlink' | 'other';
  linkname: string;
}

/** A `docker save` archive read in place: members are byte ranges of the archive. */
class ArchiveSource implements ByteSource {
  private constructor(
    readonly location: string,
    private readonly fh: FileHandle,
    private readonly members: Map<string, TarMember>,
  ) {}

  static async open(path: string): Promise<ArchiveSource> {
    const fh = await open(path, 'r');
    try {
      const members = await indexArchive(fh, path);
      return new ArchiveSource(path, fh, members);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private member(name: string, depth = 0): TarMember | undefined {
    const m = this.members.get(posix.normalize(name));
    if (m?.type === 'symlink' && depth < 8) {
      const target = m.linkname.startsWith('/') ? m.linkname.slice(1) : posix.join(posix.dirname(name), m.linkname);
      return this.member(target, depth + 1);
    }
    if (m?.type === 'hardlink' && depth < 8) return this.member(m.linkname.replace(/^\/+/, ''), depth + 1);
    return m?.type === 'file' ? m : undefined;
  }

  async size(name: string): Promise<number | undefined> {
    return this.member(name)?.size;
  }

  async read(name: string, maxBytes: number): Promise<Buffer> {
    const m = this.member(name);
    if (!m) throw new EmbersError('EMB_IMAGE_BLOB_MISSING', `${name} is missing from the archive ${this.location}`, { name, location: this.location });
    if (m.size > maxBytes) throw manifestInvalid(`${name} is too large (${m.size} bytes)`, { name, location: this.location });
    const buf = Buffer.alloc(m.size);
    if (m.size > 0) await this.fh.read(buf, 0, m.size, m.offset);
    return buf;
  }

  stream(name: string): Readable {
    const m = this.member(name);
    if (!m) throw new EmbersError('EMB_IMAGE_BLOB_MISSING', `${name} is missing from the archive ${this.location}`, { name, location: this.location });
    if (m.size === 0) {
      const empty = new PassThrough();
      empty.end();
      return empty;
    }
    return createReadStream(this.location, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 });
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Reads the headers of an uncompressed tar archive (no content), giving each member's byte range. */
async function indexArchive(fh: FileHandle, path: string): Promise<Map<string, TarMember>> {
  const { size: total } = await fh.stat();
  const members = new Map<string, TarMember>();
  const header = Buffer.alloc(512);
  let pos = 0;
  let longName: string | undefined;
  let paxPath: string | undefined;
  const bad = (why: string) => new EmbersError('EMB_IMAGE_NOT_FOUND', `${path} is not an OCI image layout or a docker save archive (${why})`, { path });
  while (pos + 512 <= total) {
    await fh.read(header, 0, 512, pos);
    if (header.every((b) => b === 0)) break;
    const sizeField = header.subarray(124, 136);
    let size: number;
    if (sizeField[0]! & 0x80) {
      size = 0;
      for (let i = 1; i < 12; i++) size = size * 256 + sizeField[i]!;
    } else {
      const t = sizeField.toString('latin1').replace(/\0.*$/s, '').trim();
      if (t !== '' && !/^[0-7]+$/.test(t)) throw bad('bad tar header');
      size = t === '' ? 0 : parseInt(t, 8);
    }
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
    const stored = parseInt(header.subarray(148, 156).toString('latin1').replace(/\0.*$/s, '').trim() || 'x', 8);
    if (stored !== sum) throw bad('bad tar header checksum');
    const type = String.fromCharCode(header[156]!);
    const dataPos = pos + 512;
    const next = dataPos + Math.ceil(size / 512) * 512;
    const cstr = (s: number, l: number) => {
      const f = header.subarray(s, s + l);
      const z = f.indexOf(0);
      return (z === -1 ? f : f.subarray(0, z)).toString('utf8');
    };
    if (type === 'L' || type === 'x') {
      const data = Buffer.alloc(Math.min(size, 1 << 20));
      await fh.read(data, 0, data.length, dataPos);
      if (type === 'L') longName = data.toString('utf8').replace(/\0.*$/s, '');
      else {
        const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
        if (m) paxPath = m[1];
      }
      pos = next;
      continue;
    }
    let name = cstr(0, 100);
    if (header.subarray(257, 263).toString('latin1') === 'ustar\0') {
      const prefix = cstr(345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    name = paxPath ?? longName ?? name;
    paxPath = undefined;
    longName = undefined;
    const norm = posix.normalize(name.replace(/^\/+/, '')).replace(/\/$/, '');
    const kind = type === '0' || type === '\0' || type === '7' ? 'file' : type === '2' ? 'symlink' : type === '1' ? 'hardlink' : 'other';
    if (next > total && kind === 'file') throw bad('truncated archive');
    members.set(norm, { offset: dataPos, size: kind === 'file' ? size : 0, type: kind, linkname: cstr(157, 100) });
    pos = '123456'.includes(type) ? dataPos : next;
  }
  return members;
}

// --- reference parsing ----------------------------------------------------------------------------

interface ParsedRef {
  path: string;
  isDir: boolean;
  tag?: string;
  digest?: string;
}

async function statKind(path: string): Promise<'dir' | 'file' | undefined> {
  try {
    const st = await stat(path);
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : undefined;
  } catch {
    return undefined;
  }
}

async function parseReference(ref: string): Promise<ParsedRef> {
  if (ref.trim() === '') throw new EmbersError('EMB_IMAGE_NOT_FOUND', 'empty image reference', { ref });
  const whole = await statKind(resolve(ref));
  if (whole) return { path: resolve(ref), isDir: whole === 'dir' };
  const at = ref.lastIndexOf('@');
  if (at > 0) {
    const kind = await statKind(resolve(ref.slice(0, at)));
    const digest = ref.slice(at + 1);
    if (kind) {
      if (!DIGEST_RE.test(digest))
        throw new EmbersError('EMB_IMAGE_NOT_FOUND', `invalid digest in image reference ${JSON.stringify(ref)} (want sha256:<64 hex>)`, { ref });
      return { path: resolve(ref.slice(0, at)), isDir: kind === 'dir', digest };
    }
  }
  const colon = ref.lastIndexOf(':');
  if (colon > 0) {
    const kind = await statKind(resolve(ref.slice(0, colon)));
    if (kind) return { path: resolve(ref.slice(0, colon)), isDir: kind === 'dir', tag: ref.slice(colon + 1) };
  }
  throw new EmbersError('EMB_IMAGE_NOT_FOUND', `no image at ${JSON.stringify(ref)}: not an OCI layout directory or docker save archive`, { ref });
}

function blobName(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

async function readBlob(source: ByteSource, desc: Descriptor, what: string): Promise<Buffer> {
  const size = await source.size(blobName(desc.digest));
  if (size === undefined)
    throw new EmbersError('EMB_IMAGE_BLOB_MISSING', `${what} ${desc.digest} is missing from ${source.location}`, {
      digest: desc.digest,
      location: source.location,
    });
  if (size > MAX_JSON_BYTES) throw manifestInvalid(`${what} ${desc.digest} is too large (${size} bytes)`, { digest: desc.digest });
  const buf = await source.read(blobName(desc.digest), MAX_JSON_BYTES);
  const actual = `sha256:${sha256(buf)}`;
  if (actual !== desc.digest || buf.length !== desc.size) {
    throw new EmbersError(
      'EMB_IMAGE_DIGEST_MISMATCH',
      `${what} ${desc.digest} does not match its descriptor (sha256 ${actual}, ${buf.length} bytes, expected ${desc.size})`,
      {
        digest: desc.digest,
        actual,
        size: buf.length,
        expectedSize: desc.size,
        location: source.location,
      },
    );
  }
  return buf;
}

function refNames(desc: Descriptor): string[] {
  const a = desc.annotations ?? {};
  return [a['org.opencontainers.image.ref.name'], a['io.containerd.image.name']].filter((s): s is string => typeof s === 'string');
}

function matchesTag(desc: Descriptor, tag: string): boolean {
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
    throw manifestInvalid(`Docker schema 1 manifests are not supported (${desc.digest})`, { digest: desc.digest, mediaType: mt });
  }
  if (mt) throw manifestInvalid(`unexpected media type ${mt} for ${desc.digest}`, { digest: desc.digest, mediaType: mt });
  if (Array.isArray(doc.manifests)) return 'index';
  if (Array.isArray(doc.layers)) return 'manifest';
  throw manifestInvalid(`${desc.digest} is neither an image index nor a manifest`, { digest: desc.digest });
}

export function checkIndex(doc: unknown, where: string): Descriptor[] {
  if (!isObject(doc)) throw manifestInvalid(`image index is not a JSON object (${where})`, { where });
  if (doc.schemaVersion !== 2) throw manifestInvalid(`image index has schemaVersion ${JSON.stringify(doc.schemaVersion)}, expected 2 (${where})`, { where });
  if (!Array.isArray(doc.manifests)) throw manifestInvalid(`image index has no manifests array (${where})`, { where });
  return doc.manifests.map((m, i) => checkDescriptor(m, `manifests[${i}]`, where));
}

/** Picks linux/amd64 among index entries (or the only entry when none says its platform). */
export function pickPlatform(entries: Descriptor[], where: string): Descriptor {
  const usable = entries.filter((d) => !isAttestation(d));
  const withPlatform = usable.filter((d) => d.platform);
  if (withPlatform.length > 0) {
    const amd64 = withPlatform.filter((d) => d.platform!.os === 'linux' && d.platform!.architecture === 'amd64');
    if (amd64.length === 0) {
      throw new EmbersError(
        'EMB_IMAGE_PLATFORM_MISSING',
        `no linux/amd64 image in ${where} (has ${withPlatform.map((d) => `${d.platform!.os}/${d.platform!.architecture}`).join(', ')})`,
        {
          where,
          platforms: withPlatform.map((d) => d.platform),
        },
      );
    }
    const plain = amd64.find((d) => d.platform!.variant === undefined || d.platform!.variant === 'v1');
    return plain ?? amd64[0]!;
  }
  if (usable.length === 1) return usable[0]!;
  if (usable.length === 0) throw new EmbersError('EMB_IMAGE_PLATFORM_MISSING', `the image index ${where} lists no image`, { where });
  const names = usable.flatMap(refNames);
  throw new EmbersError(
    'EMB_IMAGE_NOT_FOUND',
    `${where} holds ${usable.length} images: pick one with PATH:TAG or PATH@DIGEST${names.length ? ` (tags: ${names.join(', ')})` : ''}`,
    { where, tags: names },
  );
}

/** Follows indexes down to one linux/amd64 manifest. */
async function resolveToManifest(source: ByteSource, desc: Descriptor, depth: number): Promise<{ desc: Descriptor; doc: Record<string, unknown> }> {
  if (depth > 4) throw manifestInvalid('image indexes nest too deeply', { digest: desc.digest });
  if (desc.mediaType !== undefined && !INDEX_TYPES.has(desc.mediaType) && !MANIFEST_TYPES.has(desc.mediaType)) {
    kindOf({}, desc); // throws the right error for schema 1 / unknown types
  }
  const buf = await readBlob(source, desc, 'manifest');
  const doc = parseJson(buf, `manifest ${desc.digest}`, source.location);
  if (!isObject(doc)) throw manifestInvalid(`manifest ${desc.digest} is not a JSON object`, { digest: desc.digest });
  if (kindOf(doc, desc) === 'index') {
    const entries = checkIndex(doc, `index ${desc.digest}`);
    return resolveToManifest(source, pickPlatform(entries, `index ${desc.digest}`), depth + 1);
  }
  return { desc, doc };
}

export function parseConfig(doc: unknown, digest: string): { config: ImageConfig; diffIds?: string[]; os?: unknown; architecture?: unknown } {
  if (!isObject(doc)) throw manifestInvalid(`image config ${digest} is not a JSON object`, { digest });
  const where = `config ${digest}`;
  const c = doc.config ?? {};
  if (!isObject(c)) throw manifestInvalid(`image config ${digest}: "config" is not an object`, { digest });
  const str = (v: unknown, what: string): string => {
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') throw manifestInvalid(`image config ${digest}: ${what} must be a string`, { digest });
    return v;
  };
  const ports = c.ExposedPorts ?? {};
  if (!isObject(ports)) throw manifestInvalid(`image config ${digest}: ExposedPorts must be an object`, { digest });
  let diffIds: string[] | undefined;
  if (doc.rootfs !== undefined) {
    if (!isObject(doc.rootfs) || !Array.isArray(doc.rootfs.diff_ids)) throw manifestInvalid(`image config ${digest}: rootfs.diff_ids missing`, { digest });
    diffIds = doc.rootfs.diff_ids.map((d, i) => {
      if (typeof d !== 'string' || !DIGEST_RE.test(d))
        throw manifestInvalid(`image config ${digest}: rootfs.diff_ids[${i}] is not a sha256 digest`, { digest });
      return d;
    });
  }
  const labels = c.Labels ?? {};
  if (!isObject(labels)) throw manifestInvalid(`image config ${digest}: Labels must be an object`, { digest });
  let restoreHook: ImageConfig['restoreHook'];
  const hookPath = labels[RESTORE_HOOK_LABEL];
  if (hookPath !== undefined) {
    if (typeof hookPath !== 'string' || !hookPath.startsWith('/') || hookPath.includes('\0')) {
      throw manifestInvalid(`image config ${digest}: label ${RESTORE_HOOK_LABEL} must be an absolute path in the image`, { digest, label: hookPath });
    }
    restoreHook = { path: hookPath };
    const timeout = labels[RESTORE_HOOK_TIMEOUT_LABEL];
    if (timeout !== undefined) {
      const ms = typeof timeout === 'string' && /^\d{1,7}$/.test(timeout) ? Number(timeout) : NaN;
      if (!(ms >= 1 && ms <= 3_600_000)) {
        throw manifestInvalid(`image config ${digest}: label ${RESTORE_HOOK_TIMEOUT_LABEL} must be a whole number of ms from 1 to 3600000`, {
          digest,
          label: timeout,
        });
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
    throw new EmbersError('EMB_IMAGE_PLATFORM_MISSING', `the image ${digest} is for ${String(os)}/${String(architecture)}, not linux/amd64`, {
      digest,
      os,
      architecture,
    });
  }
}

/**
 * The shape of an image manifest: schemaVersion 2, a config descriptor, a layers array of
 * descriptors. `details` goes into the errors about the manifest as a whole.
 */
export function checkManifest(doc: Record<string, unknown>, where: string, details: Record<string, unknown>): { configDesc: Descriptor; layers: Descriptor[] } {
  if (doc.schemaVersion !== 2) throw manifestInvalid(`${where} has schemaVersion ${JSON.stringify(doc.schemaVersion)}, expected 2`, details);
  const configDesc = checkDescriptor(doc.config, 'config', where);
  if (!Array.isArray(doc.layers)) throw manifestInvalid(`${where} has no layers array`, details);
  const layers = doc.layers.map((l, i) => checkDescriptor(l, `layers[${i}]`, where));
  return { configDesc, layers };
}

/**
 * The media type of layer `i` (gzip'd OCI when unset), which must be one embers reads. `of` is
 * appended to "layer N (digest)" in the message (e.g. " of REF"); `details` come before the
 * digest and media type in the error's details.
 */
export function layerMediaType(d: Descriptor, i: number, of: string, details: Record<string, unknown>): string {
  const mediaType = d.mediaType ?? MEDIA.ociLayerGzip;
  if (!LAYER_TYPES.has(mediaType)) {
    throw new EmbersError('EMB_IMAGE_LAYER_UNSUPPORTED', `layer ${i + 1} (${d.digest})${of} has the unsupported media type ${mediaType}`, {
      ...details,
      digest: d.digest,
      mediaType,
    });
  }
  return mediaType;
}

/** The config's diff_ids (when it has them) must be one per manifest layer. */
export function checkDiffIdCount(diffIds: string[] | undefined, layerCount: number, where: string, details: Record<string, unknown>): void {
  if (diffIds && diffIds.length !== layerCount) {
    throw manifestInvalid(`${where} has ${layerCount} layers but its config lists ${diffIds.length} diff_ids`, details);
  }
}

// --- layer streams --------------------------------------------------------------------------------

async function sniff(source: ByteSource, name: string): Promise<Compression> {
  const s = source.stream(name);
  let head = Buffer.alloc(0);
  try {
    for await (const chunk of s) {
      head = Buffer.concat([head, chunk as Buffer]);
      if (head.length >= 4) break;
    }
  } finally {
    s.destroy();
  }
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

async function* gunzip(input: Readable, label: string): AsyncGenerator<Buffer> {
  const gz = createGunzip();
  const done = pipeline(input, gz).catch((err: unknown) => {
    gz.destroy(err as Error);
  });
  try {
    for await (const chunk of gz) yield chunk as Buffer;
  } catch (err) {
    throw new EmbersError(
      'EMB_IMAGE_LAYER_INVALID',
      `${label}: corrupt gzip stream: ${err instanceof Error ? err.message : String(err)}`,
      { layer: label },
      { cause: err },
    );
  } finally {
    input.destroy();
    await done;
  }
}

async function* unzstd(input: Readable, label: string): AsyncGenerator<Buffer> {
  const zstd = await which('zstd');
  if (!zstd) {
    throw new EmbersError(
      'EMB_IMAGE_LAYER_UNSUPPORTED',
      `${label} is zstd-compressed and the zstd program is not installed`,
      { layer: label },
      { hint: 'install the Debian package zstd' },
    );
  }
  const child = spawn(zstd, ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr: Buffer[] = [];
  child.stderr.on('data', (b: Buffer) => stderr.push(b));
  const exited = new Promise<number>((res) => child.on('close', (code) => res(code ?? 128)));
  const feeding = pipeline(input, child.stdin).catch(() => {
    /* reported through the exit code */
  });
  let finished = false;
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    await feeding;
    if (code !== 0) {
      throw new EmbersError('EMB_IMAGE_LAYER_INVALID', `${label}: corrupt zstd stream: ${Buffer.concat(stderr).toString().trim()}`, {
        layer: label,
        exit: code,
      });
    }
    finished = true;
  } finally {
    if (!finished) {
      input.destroy();
      child.kill('SIGKILL');
      await exited;
    }
  }
}

async function* hashing(source: AsyncIterable<Buffer>, expected: string | undefined, label: string): AsyncGenerator<Buffer> {
  const hash = createHash('sha256');
  for await (const chunk of source) {
    hash.update(chunk);
    yield chunk;
  }
  const actual = `sha256:${hash.digest('hex')}`;
  if (expected && actual !== expected) {
    throw new EmbersError('EMB_IMAGE_DIGEST_MISMATCH', `${label}: uncompressed content ${actual} does not match the config's diff_id ${expected}`, {
      layer: label,
      diffId: expected,
      actual,
    });
  }
}

// --- resolution -----------------------------------------------------------------------------------

interface LayerSpec {
  layer: ResolvedLayer;
  name: string;
}

function makeResolved(reference: string, source: ByteSource, manifestDigest: string, config: ImageConfig, specs: LayerSpec[]): ResolvedImage {
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
        throw new EmbersError('EMB_IMAGE_BLOB_MISSING', `${layer.label} is missing from ${source.location}`, {
          digest: layer.digest,
          location: source.location,
        });
      const hash = createHash('sha256');
      for await (const chunk of source.stream(name)) hash.update(chunk as Buffer);
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== layer.digest || size !== layer.size) {
        throw new EmbersError(
          'EMB_IMAGE_DIGEST_MISMATCH',
          `${layer.label} does not match its descriptor (sha256 ${actual}, ${size} bytes, expected ${layer.size})`,
          {
            digest: layer.digest,
            actual,
            size,
            expectedSize: layer.size,
            location: source.location,
          },
        );
      }
    },
    openLayer(layer) {
      const name = names.get(layer)!;
      return {
        async *[Symbol.asyncIterator]() {
          const compression = await sniff(source, name);
          const input = source.stream(name);
          const raw: AsyncIterable<Buffer> =
            compression === 'gzip'
              ? gunzip(input, layer.label)
              : compression === 'zstd'
                ? unzstd(input, layer.label)
                : (async function* () {
                    try {
                      for await (const c of input) yield c as Buffer;
                    } finally {
                      input.destroy();
                    }
                  })();
          yield* hashing(raw, layer.diffId, layer.label);
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
      throw manifestInvalid(`oci-layout has no imageLayoutVersion (${source.location})`, { location: source.location });
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
        throw new EmbersError('EMB_IMAGE_NOT_FOUND', `no manifest ${parsed.digest} in ${source.location}`, { ref, digest: parsed.digest });
      chosen = { digest: parsed.digest, size };
    }
  } else if (parsed.tag !== undefined) {
    const tagged = entries.filter((d) => matchesTag(d, parsed.tag!));
    if (tagged.length === 0) {
      throw new EmbersError(
        'EMB_IMAGE_NOT_FOUND',
        `no image tagged ${JSON.stringify(parsed.tag)} in ${source.location} (tags: ${entries.flatMap(refNames).join(', ') || 'none'})`,
        {
          ref,
          tag: parsed.tag,
        },
      );
    }
    chosen = pickPlatform(tagged, `${source.location}/index.json`);
  } else {
    chosen = pickPlatform(entries, `${source.location}/index.json`);
  }

  const { desc, doc } = await resolveToManifest(source, chosen, 0);
  return resolveManifestDoc(ref, source, desc, doc);
}

/** The manifest → config → layers part of a resolution, shared by layouts and the pulled-blob store. */
async function resolveManifestDoc(ref: string, source: ByteSource, desc: Descriptor, doc: Record<string, unknown>): Promise<ResolvedImage> {
  const where = `manifest ${desc.digest}`;
  const { configDesc, layers: layerDescs } = checkManifest(doc, where, { digest: desc.digest });
  const configBuf = await readBlob(source, configDesc, 'image config');
  const cfg = parseConfig(parseJson(configBuf, `image config ${configDesc.digest}`, source.location), configDesc.digest);
  checkPlatform(cfg.os, cfg.architecture, desc.digest);
  checkDiffIdCount(cfg.diffIds, layerDescs.length, where, { digest: desc.digest });
  const specs = layerDescs.map((d, i): LayerSpec => {
    const mediaType = layerMediaType(d, i, '', {});
    return {
      name: blobName(d.digest),
      layer: { index: i, digest: d.digest, mediaType, size: d.size, diffId: cfg.diffIds?.[i], label: `layer ${i + 1}/${layerDescs.length} ${d.digest}` },
    };
  });
  return makeResolved(ref, source, desc.digest, cfg.config, specs);
}

/** Legacy `docker save` layout: manifest.json + <config>.json + <id>/layer.tar. */
async function resolveDockerLegacy(ref: string, parsed: ParsedRef, source: ByteSource): Promise<ResolvedImage> {
  const doc = parseJson(await source.read('manifest.json', MAX_JSON_BYTES), 'manifest.json', source.location);
  if (!Array.isArray(doc) || doc.length === 0)
    throw manifestInvalid(`manifest.json of ${source.location} is not a non-empty array`, { location: source.location });
  const images = doc.map((m, i) => {
    if (!isObject(m) || typeof m.Config !== 'string' || !Array.isArray(m.Layers) || m.Layers.some((l) => typeof l !== 'string')) {
      throw manifestInvalid(`manifest.json[${i}] of ${source.location} lacks Config/Layers`, { location: source.location });
    }
    return { config: m.Config, layers: m.Layers as string[], tags: stringArray(m.RepoTags, 'RepoTags', 'manifest.json') };
  });
  if (parsed.digest)
    throw new EmbersError('EMB_IMAGE_NOT_FOUND', `${source.location} is a legacy docker save archive: select images by tag, not digest`, { ref });
  let image = images[0]!;
  if (parsed.tag !== undefined) {
    const tag = parsed.tag;
    const found = images.find((im) => im.tags.some((t) => t === tag || t.endsWith(`:${tag}`)));
    if (!found)
      throw new EmbersError(
        'EMB_IMAGE_NOT_FOUND',
        `no image tagged ${JSON.stringify(tag)} in ${source.location} (tags: ${images.flatMap((im) => im.tags).join(', ') || 'none'})`,
        { ref, tag },
      );
    image = found;
  } else if (images.length > 1) {
    throw new EmbersError(
      'EMB_IMAGE_NOT_FOUND',
      `${source.location} holds ${images.length} images: pick one with PATH:TAG (tags: ${images.flatMap((im) => im.tags).join(', ')})`,
      { ref },
    );
  }

  const configBuf = await source.read(image.config, MAX_JSON_BYTES);
  const configDigest = `sha256:${sha256(configBuf)}`;
  const named = /([0-9a-f]{64})(\.json)?$/.exec(image.config);
  if (named && `sha256:${named[1]}` !== configDigest) {
    throw new EmbersError('EMB_IMAGE_DIGEST_MISMATCH', `image config ${image.config} does not match its name (sha256 ${configDigest})`, {
      name: image.config,
      actual: configDigest,
    });
  }
  const cfg = parseConfig(parseJson(configBuf, `image config ${image.config}`, source.location), configDigest);
  checkPlatform(cfg.os, cfg.architecture, configDigest);
  if (!cfg.diffIds || cfg.diffIds.length !== image.layers.length) {
    throw manifestInvalid(`image config ${image.config} lists ${cfg.diffIds?.length ?? 0} diff_ids for ${image.layers.length} layers`, { name: image.config });
  }
  const layerDescs: Descriptor[] = [];
  for (let i = 0; i < image.layers.length; i++) {
    const size = await source.size(image.layers[i]!);
    if (size === undefined)
      throw new EmbersError('EMB_IMAGE_BLOB_MISSING', `layer ${image.layers[i]} is missing from ${source.location}`, { name: image.layers[i] });
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
      layer: { index: i, digest: d.digest, mediaType: d.mediaType!, size: d.size, label: `layer ${i + 1}/${layerDescs.length} ${image.layers[i]}` },
    }),
  );
  return makeResolved(ref, source, manifestDigest, cfg.config, specs);
}

/**
 * After a failed resolution: closes the source, then rethrows an EmbersError as it is and
 * wraps anything else as EMB_IMAGE_MANIFEST_INVALID (`message: <cause>`).
 */
async function resolutionFailed(source: ByteSource, err: unknown, message: string, details: Record<string, unknown>): Promise<never> {
  await source.close();
  if (isEmbersError(err)) throw err;
  throw new EmbersError('EMB_IMAGE_MANIFEST_INVALID', `${message}: ${err instanceof Error ? err.message : String(err)}`, details, { cause: err });
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
    if (!parsed.isDir && (await source.size('manifest.json')) !== undefined) return await resolveDockerLegacy(ref, parsed, source);
    throw new EmbersError(
      'EMB_IMAGE_NOT_FOUND',
      `${parsed.path} is not an OCI image layout (no index.json)${parsed.isDir ? '' : ' or docker save archive (no manifest.json)'}`,
      { ref, path: parsed.path },
    );
  } catch (err) {
    return await resolutionFailed(source, err, `reading ${ref} failed`, { ref });
  }
}

/**
 * Resolves an image whose blobs sit in a content-addressed store laid out like an OCI layout
 * (`<root>/blobs/sha256/<hex>`), starting from a manifest (or index) digest: the registry pull
 * path, so that pulled images are verified and flattened exactly as local layouts are.
 */
export async function resolveFromBlobs(reference: string, root: string, manifestDigest: string): Promise<ResolvedImage> {
  if (!DIGEST_RE.test(manifestDigest))
    throw new EmbersError('EMB_IMAGE_NOT_FOUND', `not a manifest digest: ${JSON.stringify(manifestDigest)}`, { reference, manifestDigest });
  const source = new DirSource(root);
  try {
    const size = await source.size(blobName(manifestDigest));
    if (size === undefined)
      throw new EmbersError(
        'EMB_IMAGE_BLOB_MISSING',
        `manifest ${manifestDigest} of ${reference} is not in the blob store ${root}`,
        { reference, manifestDigest, location: root },
        { hint: 'pull the image again' },
      );
    const { desc, doc } = await resolveToManifest(source, { digest: manifestDigest, size }, 0);
    return await resolveManifestDoc(reference, source, desc, doc);
  } catch (err) {
    return await resolutionFailed(source, err, `reading ${reference} from ${root} failed`, { reference });
  }
}

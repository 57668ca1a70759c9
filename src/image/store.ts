/**
 * The image cache: OCI reference → verified, flattened, deterministic ext4 rootfs.
 *
 * Layout under `imagesDir`:
 *   rootfs/<manifest hex>-v<FLATTENER_VERSION>/rootfs.ext4   the image (read-only for users)
 *   rootfs/<manifest hex>-v<FLATTENER_VERSION>/image.json    FlattenedImage fields
 *   rootfs/.partial-*  rootfs/.trash-*                       in-flight publish / removal
 * Staging trees live in `tmpDir/image-flatten-*`. A build publishes with one rename of its
 * complete directory: readers see a whole entry or none. `reconcile()` removes what a crash
 * left behind.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { withCleanup } from '../util/cleanup.js';
import { pidAlive } from '../util/pid.js';
import { fsyncPath, makeTempDir, writeJsonAtomic } from '../util/fs.js';
import { LayerApplier } from './extract.js';
import { buildRootfs, FLATTENER_VERSION, randomSuffix, ROOTFS_EPOCH } from './flatten.js';
import { resolveImage, type ResolvedImage } from './oci.js';
import { readTar } from './tar.js';
import type { FlattenedImage, ImageConfig } from './types.js';

const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;
const ENTRY_RE = /^([0-9a-f]{64})-v(\d+)$/;
const WORK_PREFIX = 'image-flatten';

/**
 * sha256 of a file, hex, reading into one reused buffer: about 3x faster than a read stream
 * on the mostly-sparse rootfs files (0.34 s instead of 1 s for 320 MiB here).
 */
export async function hashRootfs(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    return hash.digest('hex');
  } finally {
    await fh.close();
  }
}

export interface EnsureOptions {
  onProgress?: (msg: string) => void;
  /** Re-hash a cached rootfs and rebuild it if it no longer matches its recorded sha256. */
  verify?: boolean;
}

interface ImageJson {
  reference: string;
  manifestDigest: string;
  rootfsSha256: string;
  sizeBytes: number;
  config: ImageConfig;
  flattenerVersion: number;
  e2fsprogsVersion?: string;
}

export class ImageStore {
  private readonly inflight = new Map<string, Promise<FlattenedImage>>();
  /** Work and partial dirs of builds running in this process (reconcile leaves them). */
  private readonly active = new Set<string>();

  constructor(
    readonly imagesDir: string,
    readonly tmpDir: string,
  ) {}

  private get rootfsDir(): string {
    return join(this.imagesDir, 'rootfs');
  }

  private entryDir(hex: string, version = FLATTENER_VERSION): string {
    return join(this.rootfsDir, `${hex}-v${version}`);
  }

  /**
   * Resolves, verifies and flattens `ref`, or returns the cached rootfs of its manifest. See
   * oci.ts for the reference syntax.
   */
  async ensure(ref: string, opts: EnsureOptions = {}): Promise<FlattenedImage> {
    const progress = opts.onProgress ?? (() => {});
    progress(`resolving ${ref}`);
    const resolved = await resolveImage(ref);
    try {
      const digest = resolved.manifestDigest;
      const cached = await this.get(digest);
      if (cached) {
        if (!opts.verify) {
          progress(`cached rootfs for ${digest}`);
          return { ...cached, reference: ref };
        }
        progress(`verifying cached rootfs for ${digest}`);
        if ((await hashRootfs(cached.rootfsPath)) === cached.rootfsSha256) return { ...cached, reference: ref };
        progress(`cached rootfs for ${digest} is corrupt: rebuilding`);
        await this.remove(digest);
      }
      let pending = this.inflight.get(digest);
      if (!pending) {
        pending = this.build(resolved, progress).finally(() => this.inflight.delete(digest));
        this.inflight.set(digest, pending);
      }
      const built = await pending;
      return { ...built, reference: ref };
    } finally {
      await resolved.close();
    }
  }

  private async build(image: ResolvedImage, progress: (msg: string) => void): Promise<FlattenedImage> {
    const hex = DIGEST_RE.exec(image.manifestDigest)![1]!;
    const started = Date.now();
    return withCleanup(async (cleanup) => {
      const work = await makeTempDir(this.tmpDir, `${WORK_PREFIX}-${process.pid}-${hex.slice(0, 12)}`);
      this.active.add(work);
      cleanup.add(`remove ${work}`, () => rm(work, { recursive: true, force: true }));
      cleanup.add('forget work dir', () => void this.active.delete(work));

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
      progress(`staged ${tree.entries} entries (${tree.inodes} inodes, ${tree.blocks} blocks)`);

      await mkdir(this.rootfsDir, { recursive: true });
      const partial = join(this.rootfsDir, `.partial-${process.pid}-${hex}-${randomSuffix()}`);
      await mkdir(partial);
      this.active.add(partial);
      cleanup.add(`remove ${partial}`, () => rm(partial, { recursive: true, force: true }));
      cleanup.add('forget partial dir', () => void this.active.delete(partial));

      const rootfsTmp = join(partial, 'rootfs.ext4');
      let result;
      try {
        result = await buildRootfs({ stagingDir: staging, outPath: rootfsTmp, manifestDigest: image.manifestDigest, tree, onProgress: progress });
      } catch (err) {
        throw isEmbersError(err) ? err : new EmbersError('EMB_IMAGE_FLATTEN_FAILED', `building the rootfs failed: ${err instanceof Error ? err.message : String(err)}`, { manifestDigest: image.manifestDigest }, { cause: err });
      }
      await rm(staging, { recursive: true, force: true });

      progress('hashing rootfs');
      const rootfsSha256 = await hashRootfs(rootfsTmp);
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

      const final = this.entryDir(hex);
      try {
        await rename(partial, final);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        // Another process published the same manifest first: theirs is as good as ours.
        const theirs = await this.get(image.manifestDigest);
        if (!theirs) throw err;
        await cleanup.release();
        return theirs;
      }
      this.active.delete(partial);
      await fsyncPath(this.rootfsDir);
      await rm(work, { recursive: true, force: true });
      this.active.delete(work);
      progress(`rootfs ${rootfsSha256.slice(0, 12)}… built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return this.toFlattened(json, final);
    }).catch((err: unknown) => {
      if (isEmbersError(err)) throw err;
      throw new EmbersError('EMB_IMAGE_FLATTEN_FAILED', `flattening ${image.reference} failed: ${err instanceof Error ? err.message : String(err)}`, { manifestDigest: image.manifestDigest }, { cause: err });
    });
  }

  private toFlattened(json: ImageJson, dir: string): FlattenedImage {
    return {
      reference: json.reference,
      manifestDigest: json.manifestDigest,
      rootfsPath: join(dir, 'rootfs.ext4'),
      rootfsSha256: json.rootfsSha256,
      sizeBytes: json.sizeBytes,
      config: json.config,
      flattenerVersion: json.flattenerVersion,
      ...(json.e2fsprogsVersion ? { e2fsprogsVersion: json.e2fsprogsVersion } : {}),
    };
  }

  private async readEntry(dir: string): Promise<FlattenedImage | undefined> {
    let json: ImageJson;
    try {
      json = JSON.parse(await readFile(join(dir, 'image.json'), 'utf8')) as ImageJson;
    } catch {
      return undefined;
    }
    if (typeof json.manifestDigest !== 'string' || typeof json.rootfsSha256 !== 'string' || typeof json.sizeBytes !== 'number') return undefined;
    try {
      const st = await stat(join(dir, 'rootfs.ext4'));
      if (!st.isFile() || st.size !== json.sizeBytes) return undefined;
    } catch {
      return undefined;
    }
    return this.toFlattened(json, dir);
  }

  /** Every cached rootfs (of any flattener version), sorted by manifest digest. */
  async list(): Promise<FlattenedImage[]> {
    let names: string[];
    try {
      names = await readdir(this.rootfsDir);
    } catch {
      return [];
    }
    const out: FlattenedImage[] = [];
    for (const name of names.sort()) {
      if (!ENTRY_RE.test(name)) continue;
      const entry = await this.readEntry(join(this.rootfsDir, name));
      if (entry) out.push(entry);
    }
    return out;
  }

  /** The cached rootfs of a manifest for the current flattener version, if any. */
  async get(manifestDigest: string): Promise<FlattenedImage | undefined> {
    const m = DIGEST_RE.exec(manifestDigest);
    if (!m) return undefined;
    return this.readEntry(this.entryDir(m[1]!));
  }

  /** Removes every cached rootfs (all flattener versions) of a manifest. Idempotent. */
  async remove(manifestDigest: string): Promise<void> {
    const m = DIGEST_RE.exec(manifestDigest);
    if (!m) throw new EmbersError('EMB_IMAGE_NOT_FOUND', `not a manifest digest: ${JSON.stringify(manifestDigest)}`, { manifestDigest });
    let names: string[];
    try {
      names = await readdir(this.rootfsDir);
    } catch {
      return;
    }
    for (const name of names) {
      const e = ENTRY_RE.exec(name);
      if (!e || e[1] !== m[1]) continue;
      const trash = join(this.rootfsDir, `.trash-${name}-${randomSuffix()}`);
      await rename(join(this.rootfsDir, name), trash);
      await rm(trash, { recursive: true, force: true });
    }
  }

  /** Removes leftovers of crashed builds and removals, and incomplete cache entries. */
  async reconcile(): Promise<void> {
    try {
      for (const name of await readdir(this.tmpDir)) {
        const path = join(this.tmpDir, name);
        if (name.startsWith(`${WORK_PREFIX}-`) && !this.active.has(path) && !(await ownerAlive(name.slice(WORK_PREFIX.length + 1)))) {
          await rm(path, { recursive: true, force: true });
        }
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    let names: string[];
    try {
      names = await readdir(this.rootfsDir);
    } catch {
      return;
    }
    for (const name of names) {
      const path = join(this.rootfsDir, name);
      if (this.active.has(path)) continue;
      if (name.startsWith('.partial-') && (await ownerAlive(name.slice('.partial-'.length)))) continue; // another process is building it
      if (name.startsWith('.partial-') || name.startsWith('.trash-')) {
        await rm(path, { recursive: true, force: true });
      } else if (ENTRY_RE.test(name) && !(await this.readEntry(path))) {
        await rm(path, { recursive: true, force: true });
      }
    }
  }
}

/** True when a "<pid>-…" name belongs to a live process other than this one's finished work. */
async function ownerAlive(rest: string): Promise<boolean> {
  const pid = Number(rest.split('-')[0]);
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && (await pidAlive(pid));
}

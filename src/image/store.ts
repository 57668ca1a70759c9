/**
 * The image cache: OCI reference → verified, flattened, deterministic ext4 rootfs.
 *
 * References are local (an OCI layout directory or `docker save` archive: a path, `oci:PATH`,
 * `docker-archive:PATH`) or registry references (`ghcr.io/acme/fn:1.2`, `alpine`,
 * `localhost:5000/fn@sha256:…`), told apart by locate.ts. Registry images are pulled into a
 * content-addressed blob store and then resolved and flattened from it by the same code as
 * local layouts, so the same manifest digest gives the same rootfs bytes on every node.
 *
 * Layout under `imagesDir`:
 *   rootfs/<manifest hex>-v<FLATTENER_VERSION>/rootfs.ext4   the image (read-only for users)
 *   rootfs/<manifest hex>-v<FLATTENER_VERSION>/image.json    FlattenedImage fields
 *   rootfs/.partial-*  rootfs/.trash-*                       in-flight publish / removal
 *   blobs/sha256/<hex>, blobs/.partial/                      pulled blobs (registry/blob-store.ts)
 *   refs.json                                                reference → manifest (registry/refs.ts)
 *   .pin-*, .gc.lock                                         gc vs running operations (registry/guard.ts)
 * Staging trees live in `tmpDir/image-flatten-*`. A build publishes with one rename of its
 * complete directory: readers see a whole entry or none. `reconcile()` removes what a crash
 * left behind; `gc()` what nothing references.
 */
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError, isEmbersError } from '../errors.js';
import { withCleanup } from '../util/cleanup.js';
import { pidAlive } from '../util/pid.js';
import { asNoSpaceError, fsyncPath, makeTempDir, sha256File, writeJsonAtomic } from '../util/fs.js';
import { LayerApplier } from './extract.js';
import { buildRootfs, FLATTENER_VERSION, randomSuffix, ROOTFS_EPOCH } from './flatten.js';
import { locateImage } from './locate.js';
import { checkIndex, kindOf } from './manifest.js';
import { resolveFromBlobs, resolveImage, type ResolvedImage, type ResolvedLayer } from './resolve.js';
import { loadAuthFile, normalizeAuthKey, TokenCache } from './registry/auth.js';
import { BlobStore } from './registry/blob-store.js';
import { RegistryClient } from './registry/client.js';
import { CacheGuard } from './registry/guard.js';
import { compileRegistryOptions, type CompiledRegistryOptions, type RegistryOptions } from './registry/options.js';
import { describePullEvent, type PullEvent, type PullProgressListener } from './registry/progress.js';
import { pullImage, type PullResult } from './registry/pull.js';
import { formatImageReference, type ImageReference } from './registry/reference.js';
import { RefStore, type RefEntry } from './registry/refs.js';
import { readTar } from './tar.js';
import type { FlattenedImage, ImageConfig } from './types.js';
import { crashPoint } from '../util/crash-point.js';

const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;
const ENTRY_RE = /^([0-9a-f]{64})-v(\d+)$/;
const WORK_PREFIX = 'image-flatten';

export interface EnsureOptions {
  /** Progress as text lines (resolving, downloading a layer, mke2fs, hashing…). */
  onProgress?: (msg: string) => void;
  /** Progress of a registry pull as structured events (see registry/progress.ts). */
  onPullProgress?: PullProgressListener;
  /** Re-hash a cached rootfs and rebuild it if it no longer matches its recorded sha256. */
  verify?: boolean;
  /** Registry references only: 'missing' uses what the cache has for the reference (no
   * network when its rootfs or blobs are there), 'always' asks the registry again (a tag may
   * have moved).
   * @default 'missing' */
  pull?: 'missing' | 'always';
}

export interface PullImageOptions {
  /** Progress events: the resolved manifest, bytes per layer, rootfs build steps, done. */
  onProgress?: PullProgressListener;
  /** Also build the rootfs (so the first start of a function needs no flattening).
   * @default true */
  flatten?: boolean;
}

/** One layer of an image, as its manifest lists it. */
export interface ImageLayerInfo {
  digest: string;
  size: number;
  mediaType: string;
  /** sha256 of the uncompressed tar (the config's diff_id), when known. */
  diffId?: string;
}

/** What `inspect` and `pull` return (and `embers image inspect --json` prints). */
export interface ImageInspect {
  /** Canonical registry reference (`docker.io/library/alpine:latest`) or the local reference as given. */
  reference: string;
  source: 'registry' | 'local';
  manifestDigest: string;
  /** The index the reference named, when it named one. */
  indexDigest?: string;
  /** `linux/amd64`. */
  platform: string;
  config: ImageConfig;
  layers: ImageLayerInfo[];
  /** Absent when the rootfs is not built (pulled with flatten: false, or removed). */
  rootfsPath?: string;
  rootfsSha256?: string;
  rootfsSizeBytes?: number;
  flattenerVersion?: number;
  /** When the reference last changed its manifest in the refs file (ISO 8601). */
  updatedAt?: string;
}

/** One row of `embers image ls`. */
export interface ImageListEntry {
  /** The reference, or for an unreferenced rootfs the reference it was built from. */
  reference: string;
  /** 'unreferenced': a cached rootfs no reference names (gc removes it unless in use). */
  source: 'registry' | 'local' | 'unreferenced';
  manifestDigest: string;
  indexDigest?: string;
  platform?: string;
  updatedAt?: string;
  /** Set when the rootfs is built. */
  rootfsSha256?: string;
  /** Apparent size of the rootfs file (it is sparse). */
  rootfsSizeBytes?: number;
  /** Bytes of the layers (compressed, as pulled), when the manifest is in the blob store. */
  layersBytes?: number;
}

export interface RemoveOptions {
  /** Manifest digests still in use (snapshots, running instances): their rootfs is kept. */
  inUse?: Iterable<string>;
}

export interface RemoveResult {
  /** References dropped from the refs file. */
  references: string[];
  /** Manifest digests whose rootfs was deleted. */
  rootfs: string[];
}

export interface GcResult {
  removedBlobs: { digest: string; size: number }[];
  removedRootfs: { manifestDigest: string; flattenerVersion: number; diskBytes: number }[];
  /** Interrupted downloads and temp files dropped from blobs/.partial. */
  removedPartialBytes: number;
  keptBlobs: number;
  keptRootfs: number;
  /** Bytes of disk freed (blobs, rootfs blocks, partial files). */
  freedBytes: number;
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
  /** Pulled blobs, content-addressed. */
  readonly blobs: BlobStore;
  /** Reference → manifest digest of everything ensured or pulled. */
  readonly refs: RefStore;
  private readonly guard: CacheGuard;
  private readonly tokens = new TokenCache();
  private compiled: CompiledRegistryOptions | undefined;

  constructor(
    readonly imagesDir: string,
    readonly tmpDir: string,
    /** How registries are reached (insecure registries, credentials file, concurrency, retries). */
    private readonly registryOptions: RegistryOptions = {},
  ) {
    this.blobs = new BlobStore(imagesDir);
    this.refs = new RefStore(imagesDir);
    this.guard = new CacheGuard(imagesDir);
  }

  private get registryConfig(): CompiledRegistryOptions {
    this.compiled ??= compileRegistryOptions(this.registryOptions);
    return this.compiled;
  }

  private get rootfsDir(): string {
    return join(this.imagesDir, 'rootfs');
  }

  private entryDir(hex: string, version = FLATTENER_VERSION): string {
    return join(this.rootfsDir, `${hex}-v${version}`);
  }

  /**
   * Pins the cache for a caller that uses a rootfs after `ensure` returned it (a restore copies
   * it into its disk): `gc` in any process waits until the returned function is called.
   */
  hold(): Promise<() => Promise<void>> {
    return this.guard.pin(this.registryOptions.signal);
  }

  /**
   * Resolves, verifies and flattens `ref`, or returns the cached rootfs of its manifest. See
   * resolve.ts for the reference syntax.
   */
  async ensure(ref: string, opts: EnsureOptions = {}): Promise<FlattenedImage> {
    const location = await locateImage(ref);
    const release = await this.guard.pin(this.registryOptions.signal);
    try {
      if (location.kind === 'registry') return await this.ensureRegistry(ref, location.ref, opts);
      (opts.onProgress ?? (() => {}))(`resolving ${ref}`);
      const image = await this.ensureResolved(await resolveImage(location.path), ref, opts);
      await this.refs.set(ref, { manifestDigest: image.manifestDigest, platform: 'linux/amd64', source: 'local' });
      return image;
    } catch (err) {
      throw await asNoSpaceError(err, `image ${ref}`, this.imagesDir);
    } finally {
      await release();
    }
  }

  /** The cached rootfs of a resolved image, or a new build of it; closes `resolved`. */
  private async ensureResolved(resolved: ResolvedImage, ref: string, opts: EnsureOptions): Promise<FlattenedImage> {
    const progress = opts.onProgress ?? (() => {});
    try {
      const digest = resolved.manifestDigest;
      const cached = await this.get(digest);
      if (cached) {
        if (!opts.verify) {
          progress(`cached rootfs for ${digest}`);
          return { ...cached, reference: ref };
        }
        progress(`verifying cached rootfs for ${digest}`);
        if ((await sha256File(cached.rootfsPath)) === cached.rootfsSha256) return { ...cached, reference: ref };
        progress(`cached rootfs for ${digest} is corrupt: rebuilding`);
        await this.removeRootfs(digest);
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
      await crashPoint('image.flatten.after-stage');
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
        throw isEmbersError(err)
          ? err
          : new EmbersError(
              'EMB_IMAGE_FLATTEN_FAILED',
              `building the rootfs failed: ${err instanceof Error ? err.message : String(err)}`,
              { manifestDigest: image.manifestDigest },
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

      const final = this.entryDir(hex);
      await crashPoint('image.flatten.before-publish');
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
      throw new EmbersError(
        'EMB_IMAGE_FLATTEN_FAILED',
        `flattening ${image.reference} failed: ${err instanceof Error ? err.message : String(err)}`,
        { manifestDigest: image.manifestDigest },
        { cause: err },
      );
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
    const names = await readdir(this.rootfsDir).catch(() => [] as string[]);
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

  /** Removes every cached rootfs (all flattener versions) of a manifest. Idempotent. Returns the disk bytes freed. */
  private async removeRootfs(manifestDigest: string, onlyVersion?: number): Promise<{ flattenerVersion: number; diskBytes: number }[]> {
    const m = DIGEST_RE.exec(manifestDigest);
    if (!m) throw new EmbersError('EMB_IMAGE_NOT_FOUND', `not a manifest digest: ${JSON.stringify(manifestDigest)}`, { manifestDigest });
    const names = await readdir(this.rootfsDir).catch(() => [] as string[]);
    const removed: { flattenerVersion: number; diskBytes: number }[] = [];
    for (const name of names) {
      const e = ENTRY_RE.exec(name);
      if (!e || e[1] !== m[1] || (onlyVersion !== undefined && Number(e[2]) !== onlyVersion)) continue;
      const diskBytes = await diskUsage(join(this.rootfsDir, name));
      const trash = join(this.rootfsDir, `.trash-${name}-${randomSuffix()}`);
      try {
        await rename(join(this.rootfsDir, name), trash);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed by someone else meanwhile
        throw err;
      }
      await rm(trash, { recursive: true, force: true });
      removed.push({ flattenerVersion: Number(e[2]), diskBytes });
    }
    return removed;
  }

  /**
   * Removes an image. Given a manifest (or index) digest: its rootfs (every flattener version)
   * and every reference to it; idempotent. Given a reference (registry or local, as listed by
   * `listImages`): that reference, and the rootfs of its manifest when no other reference names
   * it; EMB_IMAGE_NOT_FOUND when the cache has no such reference. Digests in `inUse` keep their
   * rootfs. Blobs are left for `gc` (layers may be shared between images).
   */
  async remove(refOrDigest: string, opts: RemoveOptions = {}): Promise<RemoveResult> {
    const inUse = new Set(opts.inUse ?? []);
    if (DIGEST_RE.test(refOrDigest)) {
      const references = await this.refs.update((images) => {
        const dropped = Object.keys(images).filter((r) => images[r]!.manifestDigest === refOrDigest || images[r]!.indexDigest === refOrDigest);
        for (const r of dropped) delete images[r];
        return dropped;
      });
      const rootfs = !inUse.has(refOrDigest) && (await this.removeRootfs(refOrDigest)).length > 0 ? [refOrDigest] : [];
      return { references, rootfs };
    }
    const key = (await this.refs.get(refOrDigest)) ? refOrDigest : await this.refKey(refOrDigest);
    const outcome = await this.refs.update((images) => {
      const entry = images[key];
      if (!entry) return undefined;
      delete images[key];
      const stillNamed = Object.values(images).some((e) => e.manifestDigest === entry.manifestDigest);
      return { entry, stillNamed };
    });
    if (!outcome) {
      throw new EmbersError(
        'EMB_IMAGE_NOT_FOUND',
        `${key} is not in the image cache of this node`,
        { reference: refOrDigest, key },
        { hint: 'list the cached images with `embers image ls`' },
      );
    }
    const digest = outcome.entry.manifestDigest;
    const rootfs = !outcome.stillNamed && !inUse.has(digest) && (await this.removeRootfs(digest)).length > 0 ? [digest] : [];
    return { references: [key], rootfs };
  }

  /** The refs-file key of a reference: canonical for registry references, as given for local ones. */
  private async refKey(ref: string): Promise<string> {
    const location = await locateImage(ref);
    return location.kind === 'registry' ? formatImageReference(location.ref) : ref;
  }

  // --- registry images ---------------------------------------------------------------------------

  private async registryClient(registry: string): Promise<RegistryClient> {
    const opts = this.registryConfig;
    const credentials = (await loadAuthFile(opts.authFile)).get(normalizeAuthKey(registry));
    return new RegistryClient(registry, opts, credentials, this.tokens);
  }

  /** Resolves a digest (manifest or index) from the blob store, or undefined when a blob is missing. */
  private async fromBlobs(reference: string, digest: string): Promise<ResolvedImage | undefined> {
    try {
      return await resolveFromBlobs(reference, this.imagesDir, digest);
    } catch (err) {
      if (isEmbersError(err, 'EMB_IMAGE_BLOB_MISSING')) return undefined;
      throw err;
    }
  }

  private async ensureRegistry(ref: string, parsed: ImageReference, opts: EnsureOptions): Promise<FlattenedImage> {
    const { image } = await this.registryImage(ref, parsed, opts, true);
    return image!;
  }

  /**
   * The registry path of ensure and pull: the cache when it has the reference (unless
   * `pull: 'always'`), else a pull into the blob store; then the rootfs (when `flatten`),
   * built from the blob store like a local layout.
   */
  private async registryImage(
    ref: string,
    parsed: ImageReference,
    opts: EnsureOptions,
    flatten: boolean,
  ): Promise<{ reference: string; entry: Omit<RefEntry, 'updatedAt'>; config: ImageConfig; layers: ImageLayerInfo[]; image?: FlattenedImage }> {
    const reference = formatImageReference(parsed);
    const text = opts.onProgress ?? (() => {});
    const listener = opts.onPullProgress;
    const say = (message: string) => {
      text(message);
      listener?.({ type: 'step', reference, message });
    };
    const started = Date.now();
    const finish = async (resolved: ResolvedImage, entry: Omit<RefEntry, 'updatedAt'>, bytesDownloaded: number) => {
      const config = resolved.config;
      const layers = layerInfos(resolved.layers);
      let image: FlattenedImage | undefined;
      if (flatten) image = await this.ensureResolved(resolved, ref, { ...opts, onProgress: say });
      else await resolved.close();
      await crashPoint('image.flatten.after-publish');
      await this.refs.set(reference, entry);
      listener?.({
        type: 'done',
        reference,
        manifestDigest: entry.manifestDigest,
        ...(image ? { rootfsSha256: image.rootfsSha256 } : {}),
        bytesDownloaded,
        ms: Date.now() - started,
      });
      return { reference, entry, config, layers, ...(image ? { image } : {}) };
    };

    if (opts.pull !== 'always') {
      const known = await this.refs.get(reference);
      const start = parsed.digest ?? known?.manifestDigest;
      if (start) {
        const resolved = await this.fromBlobs(reference, start);
        if (resolved) {
          say(`${reference}: using the cached manifest ${resolved.manifestDigest}`);
          const indexDigest = known?.indexDigest ?? (parsed.digest && parsed.digest !== resolved.manifestDigest ? parsed.digest : undefined);
          return finish(
            resolved,
            {
              manifestDigest: resolved.manifestDigest,
              ...(indexDigest ? { indexDigest } : {}),
              platform: known?.platform ?? 'linux/amd64',
              source: 'registry',
            },
            0,
          );
        }
      }
    }

    say(`pulling ${reference}`);
    const onEvent = (e: PullEvent) => {
      listener?.(e);
      const line = describePullEvent(e);
      if (line !== undefined) text(line);
    };
    const opts2 = this.registryConfig;
    const client = await this.registryClient(parsed.registry);
    const pulled: PullResult = await pullImage(parsed, client, this.blobs, {
      retry: opts2.retry,
      concurrency: opts2.concurrency,
      signal: opts2.signal,
      onEvent,
    });
    const resolved = await resolveFromBlobs(reference, this.imagesDir, pulled.manifestDigest);
    return finish(
      resolved,
      {
        manifestDigest: pulled.manifestDigest,
        ...(pulled.indexDigest ? { indexDigest: pulled.indexDigest } : {}),
        platform: pulled.platform,
        source: 'registry',
      },
      pulled.bytesDownloaded,
    );
  }

  /**
   * `embers image pull`: for a registry reference, asks the registry for the reference's
   * manifest now (a tag may have moved), downloads the blobs the cache lacks (resuming
   * interrupted ones), records the reference and builds the rootfs. For a local reference,
   * the same as `ensure`. Returns what `inspect` returns.
   */
  async pull(ref: string, opts: PullImageOptions = {}): Promise<ImageInspect> {
    const location = await locateImage(ref);
    if (location.kind === 'local') {
      const started = Date.now();
      const image = await this.ensure(ref, { onProgress: (message) => opts.onProgress?.({ type: 'step', reference: ref, message }) });
      opts.onProgress?.({
        type: 'done',
        reference: ref,
        manifestDigest: image.manifestDigest,
        rootfsSha256: image.rootfsSha256,
        bytesDownloaded: 0,
        ms: Date.now() - started,
      });
      return this.inspect(ref);
    }
    const release = await this.guard.pin(this.registryOptions.signal);
    try {
      const r = await this.registryImage(
        ref,
        location.ref,
        { pull: 'always', ...(opts.onProgress ? { onPullProgress: opts.onProgress } : {}) },
        opts.flatten ?? true,
      );
      const rootfs = r.image ?? (await this.get(r.entry.manifestDigest));
      return {
        reference: r.reference,
        source: 'registry',
        manifestDigest: r.entry.manifestDigest,
        ...(r.entry.indexDigest ? { indexDigest: r.entry.indexDigest } : {}),
        platform: r.entry.platform,
        config: r.config,
        layers: r.layers,
        ...rootfsFields(rootfs),
        updatedAt: (await this.refs.get(r.reference))?.updatedAt,
      };
    } catch (err) {
      throw await asNoSpaceError(err, `image pull ${ref}`, this.imagesDir);
    } finally {
      await release();
    }
  }

  /**
   * What the cache knows of an image, without asking any registry: `ref` is a reference (as
   * pulled or ensured) or a manifest or index digest. EMB_IMAGE_NOT_FOUND when the cache has
   * no such image (pull it first).
   */
  async inspect(ref: string): Promise<ImageInspect> {
    const all = await this.refs.all();
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
      else if (entry) resolved = await this.fromBlobs(reference, entry.manifestDigest);
      else if (DIGEST_RE.test(ref)) resolved = await this.fromBlobs(ref, ref);
    } catch (err) {
      if (!entry) throw err; // a local path that is not an image: say why
    }
    await resolved?.close();
    const manifestDigest = entry?.manifestDigest ?? resolved?.manifestDigest ?? (DIGEST_RE.test(ref) ? ref : undefined);
    const rootfs = manifestDigest ? await this.get(manifestDigest) : undefined;
    if (!manifestDigest || (!resolved && !rootfs)) {
      throw new EmbersError(
        'EMB_IMAGE_NOT_FOUND',
        `${reference} is not in the image cache of this node`,
        { reference: ref },
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
  private async layersBytes(manifestDigest: string): Promise<number | undefined> {
    try {
      const doc = JSON.parse(await readFile(this.blobs.path(manifestDigest), 'utf8')) as { layers?: { size?: unknown }[] };
      if (!Array.isArray(doc.layers)) return undefined;
      return doc.layers.reduce((s, l) => s + (typeof l.size === 'number' ? l.size : 0), 0);
    } catch {
      return undefined;
    }
  }

  /** `embers image ls`: every reference in the refs file, then every rootfs no reference names. */
  async listImages(): Promise<ImageListEntry[]> {
    const all = await this.refs.all();
    const out: ImageListEntry[] = [];
    const named = new Set<string>();
    for (const [reference, e] of Object.entries(all)) {
      named.add(e.manifestDigest);
      const rootfs = await this.get(e.manifestDigest);
      const layersBytes = await this.layersBytes(e.manifestDigest);
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
    for (const img of await this.list()) {
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

  /**
   * `embers image gc`: deletes the blobs and rootfs that nothing references. Roots are the
   * manifests and indexes of the refs file plus `inUse` (manifest digests that snapshots,
   * functions or instances use); a root keeps its blob, the manifests of an index that are in
   * the store, a manifest's config and layers, and every rootfs (all flattener versions) of
   * the manifest. Interrupted downloads are dropped too. Waits for running pulls, ensures and
   * restores (in any process of this node) to finish, and holds new ones back while it runs;
   * `inUse` may be a function, then it is read once they have finished.
   */
  async gc(inUse: Iterable<string> | (() => Promise<Iterable<string>>) = []): Promise<GcResult> {
    const release = await this.guard.exclusive();
    try {
      const refs = await this.refs.all();
      // read once gc holds the cache: an instance restored while gc waited for it counts
      const roots = new Set<string>(typeof inUse === 'function' ? await inUse() : inUse);
      for (const e of Object.values(refs)) {
        roots.add(e.manifestDigest);
        if (e.indexDigest) roots.add(e.indexDigest);
      }
      const keepBlobs = new Set<string>();
      const keepRootfs = new Set<string>();
      const walk = async (digest: string, depth: number): Promise<void> => {
        if (!DIGEST_RE.test(digest) || keepBlobs.has(digest)) return;
        keepRootfs.add(digest);
        if (!(await this.blobs.has(digest))) return;
        keepBlobs.add(digest);
        let doc: unknown;
        try {
          doc = JSON.parse(await readFile(this.blobs.path(digest), 'utf8'));
        } catch {
          return; // a layer, or not JSON: a leaf
        }
        if (typeof doc !== 'object' || doc === null || depth > 4) return;
        const d = doc as Record<string, unknown>;
        let kind: 'index' | 'manifest';
        try {
          kind = kindOf(d, { digest, size: 0 });
        } catch {
          return;
        }
        if (kind === 'index') {
          let entries: { digest: string }[] = [];
          try {
            entries = checkIndex(d, digest);
          } catch {
            return;
          }
          for (const child of entries) await walk(child.digest, depth + 1);
          return;
        }
        const config = (d.config as { digest?: unknown } | undefined)?.digest;
        if (typeof config === 'string' && DIGEST_RE.test(config)) keepBlobs.add(config);
        for (const layer of Array.isArray(d.layers) ? (d.layers as { digest?: unknown }[]) : []) {
          if (typeof layer?.digest === 'string' && DIGEST_RE.test(layer.digest)) keepBlobs.add(layer.digest);
        }
      };
      for (const root of roots) await walk(root, 0);

      const result: GcResult = { removedBlobs: [], removedRootfs: [], removedPartialBytes: 0, keptBlobs: 0, keptRootfs: 0, freedBytes: 0 };
      for (const blob of await this.blobs.list()) {
        if (keepBlobs.has(blob.digest)) {
          result.keptBlobs++;
          continue;
        }
        await this.blobs.remove(blob.digest);
        result.removedBlobs.push(blob);
        result.freedBytes += blob.size;
      }
      const names = await readdir(this.rootfsDir).catch(() => [] as string[]);
      for (const name of names.sort()) {
        const e = ENTRY_RE.exec(name);
        if (!e) continue;
        const digest = `sha256:${e[1]}`;
        if (keepRootfs.has(digest)) {
          result.keptRootfs++;
          continue;
        }
        for (const r of await this.removeRootfs(digest, Number(e[2]))) {
          result.removedRootfs.push({ manifestDigest: digest, ...r });
          result.freedBytes += r.diskBytes;
        }
      }
      result.removedPartialBytes = await this.blobs.cleanPartials(true);
      result.freedBytes += result.removedPartialBytes;
      return result;
    } finally {
      await release();
    }
  }

  /**
   * Removes leftovers of crashed builds and removals, incomplete cache entries, and the temp
   * files, locks and pins of dead processes. Interrupted layer downloads (`.part`) are kept: the
   * next pull resumes them (`gc` drops them).
   */
  async reconcile(): Promise<void> {
    await this.blobs.cleanPartials(false);
    await this.guard.cleanStale();
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
    const names = await readdir(this.rootfsDir).catch(() => [] as string[]);
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

/** The layers of a resolved image as `inspect` and `pull` report them. */
function layerInfos(layers: ResolvedLayer[]): ImageLayerInfo[] {
  return layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType, ...(l.diffId ? { diffId: l.diffId } : {}) }));
}

function rootfsFields(rootfs: FlattenedImage | undefined): Pick<ImageInspect, 'rootfsPath' | 'rootfsSha256' | 'rootfsSizeBytes' | 'flattenerVersion'> {
  return rootfs
    ? { rootfsPath: rootfs.rootfsPath, rootfsSha256: rootfs.rootfsSha256, rootfsSizeBytes: rootfs.sizeBytes, flattenerVersion: rootfs.flattenerVersion }
    : {};
}

/** Disk blocks used by the files of a directory, in bytes (rootfs files are sparse). */
async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  try {
    for (const name of await readdir(dir)) {
      const st = await stat(join(dir, name)).catch(() => undefined);
      if (st?.isFile()) total += st.blocks * 512;
    }
  } catch {
    /* gone */
  }
  return total;
}

/** True when a "<pid>-…" name belongs to a live process other than this one's finished work. */
async function ownerAlive(rest: string): Promise<boolean> {
  const pid = Number(rest.split('-')[0]);
  return Number.isInteger(pid) && pid > 0 && pid !== process.pid && (await pidAlive(pid));
}

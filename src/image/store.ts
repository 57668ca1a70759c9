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
 * Staging trees live in `tmpDir/image-flatten-*`. A build (build.ts) publishes with one rename
 * of its complete directory (rootfs-cache.ts): readers see a whole entry or none.
 * `reconcile()` removes what a crash left behind; `gc()` what nothing references (gc.ts);
 * `inspect()` and `listImages()` read the cache without asking a registry (inspect.ts).
 */
import { EmbersError } from '../errors.js';
import { crashPoint } from '../util/crash-point.js';
import { asNoSpaceError, sha256File } from '../util/fs.js';
import { buildImage } from './build.js';
import { collectGarbage, reconcileImages } from './gc.js';
import { locateImage } from './locate.js';
import { loadAuthFile, normalizeAuthKey, TokenCache } from './registry/auth.js';
import { BlobStore } from './registry/blob-store.js';
import { RegistryClient } from './registry/client.js';
import { CacheGuard } from './registry/guard.js';
import { compileRegistryOptions, type CompiledRegistryOptions, type RegistryOptions } from './registry/options.js';
import { describePullEvent, type PullEvent } from './registry/progress.js';
import { pullImage, type PullResult } from './registry/pull.js';
import { formatImageReference, type ImageReference } from './registry/reference.js';
import { RefStore, type RefEntry } from './registry/refs.js';
import { resolveFromBlobs, resolveImage, type ResolvedImage } from './resolve.js';
import { DIGEST_RE, RootfsCache } from './rootfs-cache.js';
import { inspectImage, layerInfos, listImages, resolveCached, rootfsFields } from './inspect.js';
import type {
  EnsureOptions,
  FlattenedImage,
  GcResult,
  ImageConfig,
  ImageInspect,
  ImageLayerInfo,
  ImageListEntry,
  PullImageOptions,
  RemoveOptions,
  RemoveResult,
} from './types.js';

export type * from './types.js';

export class ImageStore {
  private readonly inflight = new Map<string, Promise<FlattenedImage>>();
  /** Work and partial dirs of builds running in this process (reconcile leaves them). */
  readonly active = new Set<string>();
  /** The flattened images, by manifest digest. */
  readonly cache: RootfsCache;
  /** Pulled blobs, content-addressed. */
  readonly blobs: BlobStore;
  /** Reference → manifest digest of everything ensured or pulled. */
  readonly refs: RefStore;
  readonly guard: CacheGuard;
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
    this.cache = new RootfsCache(imagesDir);
  }

  private get registryConfig(): CompiledRegistryOptions {
    this.compiled ??= compileRegistryOptions(this.registryOptions);
    return this.compiled;
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
        await this.cache.remove(digest);
      }
      let pending = this.inflight.get(digest);
      if (!pending) {
        pending = buildImage(resolved, this, progress).finally(() => this.inflight.delete(digest));
        this.inflight.set(digest, pending);
      }
      const built = await pending;
      return { ...built, reference: ref };
    } finally {
      await resolved.close();
    }
  }

  /** The cached rootfs of a manifest for the current flattener version, if any. */
  get(manifestDigest: string): Promise<FlattenedImage | undefined> {
    return this.cache.get(manifestDigest);
  }

  /** Every cached rootfs (of any flattener version), sorted by manifest digest. */
  list(): Promise<FlattenedImage[]> {
    return this.cache.list();
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
        const dropped = Object.keys(images).filter(
          (r) => images[r]!.manifestDigest === refOrDigest || images[r]!.indexDigest === refOrDigest,
        );
        for (const r of dropped) delete images[r];
        return dropped;
      });
      const rootfs = !inUse.has(refOrDigest) && (await this.cache.remove(refOrDigest)).length > 0 ? [refOrDigest] : [];
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
      throw EmbersError.of(
        'EMB_IMAGE_NOT_FOUND',
        { problem: 'not-cached', reference: refOrDigest, key },
        { hint: 'list the cached images with `embers image ls`' },
      );
    }
    const digest = outcome.entry.manifestDigest;
    const rootfs =
      !outcome.stillNamed && !inUse.has(digest) && (await this.cache.remove(digest)).length > 0 ? [digest] : [];
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
  private fromBlobs(reference: string, digest: string): Promise<ResolvedImage | undefined> {
    return resolveCached(this.imagesDir, reference, digest);
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
  ): Promise<{
    reference: string;
    entry: Omit<RefEntry, 'updatedAt'>;
    config: ImageConfig;
    layers: ImageLayerInfo[];
    image?: FlattenedImage;
  }> {
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
          const indexDigest =
            known?.indexDigest ??
            (parsed.digest && parsed.digest !== resolved.manifestDigest ? parsed.digest : undefined);
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
      const image = await this.ensure(ref, {
        onProgress: (message) => opts.onProgress?.({ type: 'step', reference: ref, message }),
      });
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
  inspect(ref: string): Promise<ImageInspect> {
    return inspectImage(this, ref);
  }

  /** `embers image ls`: every reference in the refs file, then every rootfs no reference names. */
  listImages(): Promise<ImageListEntry[]> {
    return listImages(this);
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
      return await collectGarbage(this, inUse);
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
    await reconcileImages(this);
  }
}

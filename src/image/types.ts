import type { PullProgressListener } from './registry/progress.js';

/** The run configuration an OCI image carries (its config's `config` object), normalised. */
export interface ImageConfig {
  /** `Entrypoint`, or [] when the image has none. */
  entrypoint: string[];
  /** `Cmd`, or []. */
  cmd: string[];
  /** `Env` as `NAME=value` strings, in image order. */
  env: string[];
  /** `WorkingDir`, or '' (the guest then uses /). */
  workingDir: string;
  /** `User` (`uid`, `uid:gid`, `name`…), or '' for root. */
  user: string;
  /** The keys of `ExposedPorts` (`8080/tcp`), sorted. */
  exposedPorts: string[];
  /**
   * The restore hook the image declares: label `org.embers.restore-hook` (an absolute path in
   * the image) and optionally `org.embers.restore-hook-timeout-ms`. A function spec's
   * restoreHook overrides it. Absent in configs cached before embers read it.
   */
  restoreHook?: { path: string; timeoutMs?: number };
}

/** The image labels that declare a restore hook. */
export const RESTORE_HOOK_LABEL = 'org.embers.restore-hook';
export const RESTORE_HOOK_TIMEOUT_LABEL = 'org.embers.restore-hook-timeout-ms';

/** An OCI image flattened into a deterministic ext4 rootfs (see flatten.ts). */
export interface FlattenedImage {
  /** What the user passed to `ImageStore.ensure`. */
  reference: string;
  /** Digest of the image manifest the rootfs was built from: `sha256:<hex>`. */
  manifestDigest: string;
  /** The ext4 image file. Shared by every instance of the image: treat it as read-only. */
  rootfsPath: string;
  /** sha256 of the whole rootfs file, hex. The same on every node for the same manifest digest. */
  rootfsSha256: string;
  /** Size of the rootfs file in bytes (the file is sparse: it occupies less). */
  sizeBytes: number;
  config: ImageConfig;
  /** Version of the flattening algorithm; bumped whenever output bytes change. */
  flattenerVersion: number;
  /** The e2fsprogs release that built the rootfs (bytes are only reproducible with the same release). */
  e2fsprogsVersion?: string;
}

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

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

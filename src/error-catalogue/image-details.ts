/** The image area's error details (see image.ts): per code of images and registries, the shape of its details. */
import type { HostCommandDetails } from './shared.js';

/** A registry request that failed (image/registry/http.ts). */
export interface RegistryRequestDetails {
  /** Who answered, for messages: `registry NAME`, or `the token service of NAME`. */
  readonly server?: string;
  readonly registry?: string;
  readonly repository?: string;
  readonly username?: string;
  readonly digest?: string;
  readonly url?: string;
  readonly status?: number;
  /** The error code in the registry's answer (OCI distribution: MANIFEST_UNKNOWN, DENIED…). */
  readonly registryCode?: string;
  /** The error message in the registry's answer. */
  readonly registryMessage?: string;
}

export interface ImageErrorDetails {
  EMB_IMAGE_NOT_FOUND: {
    readonly problem:
      | 'empty-reference'
      | 'bad-digest'
      | 'no-image'
      | 'not-an-image'
      | 'not-a-digest'
      | 'no-manifest'
      | 'no-tag'
      | 'several-images'
      | 'legacy-digest'
      | 'not-cached'
      | 'rootfs-gone'
      | 'not-on-registry';
    /** A local reference as given (PATH, PATH:TAG, PATH@DIGEST). */
    readonly ref?: string;
    readonly reference?: string;
    /** The normalised reference the image cache was asked for. */
    readonly key?: string;
    readonly digest?: string;
    readonly manifestDigest?: string;
    readonly instance?: string;
    /** not-an-image: the file or directory, whether it is a directory, and why the archive reader refused it. */
    readonly path?: string;
    readonly directory?: boolean;
    readonly reason?: string;
    /** The image layout or archive searched. */
    readonly location?: string;
    readonly where?: string;
    readonly tag?: string;
    readonly tags?: string[];
    /** several-images: how many, and whether PATH@DIGEST can pick one too. */
    readonly count?: number;
    readonly byDigest?: boolean;
    /** not-on-registry: what the registry does not have. */
    readonly missing?: 'repository' | 'manifest' | 'tag';
    readonly registry?: string;
    readonly registryCode?: string;
    readonly repository?: string;
    readonly status?: number;
  };
  EMB_IMAGE_MANIFEST_INVALID: {
    readonly problem: 'not-json' | 'too-large' | 'not-sha256' | 'schema' | 'unreadable';
    /** What is invalid ("image index", "manifests[0]", "image config sha256:…", "the image refs file PATH"). */
    readonly subject?: string;
    /** schema: what is wrong with it ("has no digest", "Env must be an array of strings"). */
    readonly defect?: string;
    /** The document the subject is in, when the subject does not say. */
    readonly where?: string;
    /** not-json, unreadable: the parser's or reader's error. */
    readonly reason?: string;
    readonly size?: number;
    readonly digest?: string;
    /** The value of an image label that is not valid. */
    readonly label?: unknown;
    readonly location?: string;
    readonly mediaType?: string;
    readonly name?: string;
    readonly path?: string;
    readonly ref?: string;
    readonly reference?: string;
  };
  EMB_IMAGE_DIGEST_MISMATCH: {
    readonly problem:
      | 'descriptor'
      | 'diff-id'
      | 'config-name'
      | 'manifest-digest'
      | 'manifest-size'
      | 'too-long'
      | 'too-short'
      | 'shorter-than-downloaded'
      | 'blob-digest'
      | 'refused-store';
    /** What does not match, for messages ("image config sha256:…", "layer 2/3 (sha256:…)"). */
    readonly blob?: string;
    /** Where it came from (`registry/repository`), when the blob does not say. */
    readonly from?: string;
    readonly actual?: string;
    readonly diffId?: string;
    readonly digest?: string;
    readonly expectedSize?: number;
    readonly layer?: string;
    readonly location?: string;
    readonly name?: string;
    readonly offset?: number;
    readonly reference?: string;
    readonly registry?: string;
    readonly repository?: string;
    readonly size?: number;
    readonly status?: number;
  };
  EMB_IMAGE_LAYER_UNSAFE: {
    readonly problem:
      | 'absolute-path'
      | 'dot-dot'
      | 'through-symlink'
      | 'whiteout'
      | 'replaces-root'
      | 'hard-link-to-root'
      | 'hard-link-target';
    /** The entry's name in the layer. */
    readonly name: string;
    /** absolute-path, dot-dot: which name of the entry ('entry' or 'hard link target'). */
    readonly what?: string;
    readonly layer?: string;
    readonly linkname?: string;
    readonly symlink?: string;
  };
  EMB_IMAGE_LAYER_INVALID: {
    readonly problem: 'tar' | 'not-a-directory' | 'short-content' | 'empty-symlink' | 'gzip' | 'zstd';
    /** tar: what is wrong with the archive ("truncated archive (…)", "bad PAX record (no length)"). */
    readonly defect?: string;
    /** gzip, zstd: the decompressor's error. */
    readonly reason?: string;
    readonly exit?: number;
    readonly layer?: string;
    readonly name?: string;
    readonly offset?: number;
    readonly path?: string;
  };
  EMB_IMAGE_BLOB_MISSING: {
    /** Where the blob was looked for. */
    readonly source: 'layout' | 'archive' | 'blob-store' | 'registry';
    /** The blob, for messages ("index.json", "image config sha256:…", "layer 1/2 (sha256:…)"). */
    readonly blob?: string;
    readonly digest?: string;
    readonly location?: string;
    readonly manifestDigest?: string;
    readonly name?: string;
    readonly reference?: string;
    readonly registry?: string;
    readonly registryCode?: string;
    readonly repository?: string;
    readonly status?: number;
  };
  EMB_IMAGE_LAYER_UNSUPPORTED: {
    readonly problem: 'tar' | 'zstd-missing' | 'digest-algorithm' | 'media-type';
    /** tar: the feature ("GNU sparse files", "multi-volume archives"). */
    readonly defect?: string;
    /** digest-algorithm: the descriptor ("layers[0]", "config"). */
    readonly subject?: string;
    readonly digest?: string;
    /** media-type: the layer's position (from 1) and the image it is in, when the message should say. */
    readonly index?: number;
    readonly layer?: string;
    readonly mediaType?: string;
    readonly reference?: string;
    readonly where?: string;
  };
  EMB_IMAGE_PLATFORM_MISSING: {
    readonly problem: 'no-amd64' | 'empty-index' | 'config';
    readonly architecture?: unknown;
    readonly digest?: string;
    readonly os?: unknown;
    readonly platforms?: readonly ({ os?: string; architecture?: string } | undefined)[];
    readonly where?: string;
  };
  EMB_IMAGE_FLATTEN_FAILED: HostCommandDetails & {
    readonly problem:
      | 'xattrs-not-set'
      | 'xattrs-lost'
      | 'mke2fs'
      | 'e2fsck'
      | 'build'
      | 'flatten'
      | 'short-read'
      | 'short-write'
      | 'not-ext4';
    /** mke2fs, build, flatten: the error of the step. */
    readonly reason?: string;
    readonly layer?: string;
    readonly reference?: string;
    readonly bytesRead?: number;
    readonly imagePath?: string;
    readonly length?: number;
    readonly manifestDigest?: string;
    readonly missing?: string[];
    readonly position?: number;
  };
  EMB_IMAGE_REFERENCE_INVALID: {
    readonly reference: string;
    readonly problem:
      | 'empty'
      | 'white-space'
      | 'digest-algorithm'
      | 'digest'
      | 'tag'
      | 'no-repository'
      | 'registry'
      | 'component'
      | 'too-long';
    readonly digest?: string;
    readonly tag?: string;
    readonly registry?: string;
    readonly component?: string;
    readonly maxLength?: number;
  };
  EMB_IMAGE_CACHE_BUSY: {
    /** What is locked ("the image cache PATH", "the download of sha256:…"). */
    readonly resource?: string;
    /** gc: the cache is being garbage-collected; pins: pulls or ensures hold it; locked: the lock file is held. */
    readonly problem: 'gc' | 'pins' | 'locked';
    readonly lock?: string;
    readonly pid?: number;
    readonly pins?: string[];
    readonly waitedMs?: number;
  };
  EMB_REGISTRY_UNREACHABLE: {
    /** connect (the default): the request failed; body: the connection broke in the answer. */
    readonly problem?: 'connect' | 'body';
    readonly server?: string;
    readonly endpoint?: string;
    readonly errno?: string;
    /** connect: the errno, or the socket error's message when it has no network errno. */
    readonly reason?: string;
    /** false when retrying cannot help (e.g. the registry's name does not resolve): registry/http.ts does not retry it. */
    readonly transient?: boolean;
    readonly url?: string;
    /** A blob download that broke: its digest, where from, the bytes received and the size wanted. */
    readonly digest?: string;
    readonly from?: string;
    readonly got?: number;
    readonly want?: number;
  };
  EMB_REGISTRY_UNAVAILABLE: RegistryRequestDetails & { readonly retryAfterMs?: number; readonly realm?: string };
  EMB_REGISTRY_AUTH: RegistryRequestDetails & {
    /** status (the default): a request was refused; others: the answer to a challenge failed. */
    readonly problem?: 'status' | 'refused' | 'no-credentials' | 'credentials-refused' | 'no-challenge' | 'token';
    /** refused: the registry answered with a bearer challenge (Docker Hub also answers so for a missing repository). */
    readonly bearer?: boolean;
    /** no-challenge: the WWW-Authenticate header (absent: none). */
    readonly challenge?: string;
    readonly realm?: string;
    readonly scope?: string;
  };
  EMB_REGISTRY_TLS: {
    readonly problem: 'handshake' | 'redirect-to-http' | 'plain-http-realm';
    readonly server?: string;
    readonly reason?: string;
    readonly endpoint?: string;
    readonly errno?: string;
    readonly location?: string;
    readonly realm?: string;
    readonly registry?: string;
    readonly url?: string;
  };
  EMB_REGISTRY_REQUEST_FAILED: RegistryRequestDetails & {
    /** status (the default): an unexpected status; others: what is wrong with the answer. */
    readonly problem?:
      | 'status'
      | 'too-large'
      | 'redirect'
      | 'content-range'
      | 'range-start'
      | 'no-realm'
      | 'invalid-realm'
      | 'realm-scheme'
      | 'not-json'
      | 'no-token';
    readonly challenge?: unknown;
    readonly contentRange?: string;
    readonly location?: string;
    readonly maxBytes?: number;
    readonly realm?: string;
    readonly start?: number;
  };
}

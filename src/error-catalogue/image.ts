/** Errors of images and registries: the shape of each code's details and its catalogue entry (see shared.ts). */
import type { AreaCatalogue, NoDetails, HostCommandDetails } from './shared.js';

/** A registry request that failed (image/registry/http.ts). */
export interface RegistryRequestDetails {
  readonly registry?: string;
  readonly repository?: string;
  readonly username?: string;
  readonly digest?: string;
  readonly url?: string;
  readonly status?: number;
  /** The error code in the registry's answer (OCI distribution: MANIFEST_UNKNOWN, DENIED…). */
  readonly registryCode?: string;
}

export interface ImageErrorDetails {
  EMB_IMAGE_NOT_FOUND: {
    readonly digest?: string;
    readonly instance?: string;
    readonly key?: string;
    readonly manifestDigest?: string;
    readonly path?: string;
    readonly ref?: string;
    readonly reference?: string;
    readonly registry?: string;
    readonly registryCode?: string;
    readonly repository?: string;
    readonly status?: number;
    readonly tag?: string;
    readonly tags?: string[];
    readonly where?: string;
  };
  EMB_IMAGE_MANIFEST_INVALID: { readonly digest?: string; readonly path?: string };
  EMB_IMAGE_DIGEST_MISMATCH: {
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
  EMB_IMAGE_LAYER_UNSAFE: NoDetails;
  EMB_IMAGE_LAYER_INVALID: { readonly exit?: number; readonly layer?: string };
  EMB_IMAGE_BLOB_MISSING: {
    readonly digest?: string;
    readonly location?: string;
    readonly manifestDigest?: string;
    readonly name?: string;
    readonly reference?: string;
    readonly registry?: string;
    readonly repository?: string;
    readonly status?: number;
  };
  EMB_IMAGE_LAYER_UNSUPPORTED: {
    readonly digest?: unknown;
    readonly layer?: string;
    readonly mediaType?: string;
    readonly where?: string;
  };
  EMB_IMAGE_PLATFORM_MISSING: {
    readonly architecture?: unknown;
    readonly digest?: string;
    readonly os?: unknown;
    readonly platforms?: unknown;
    readonly where?: string;
  };
  EMB_IMAGE_FLATTEN_FAILED: HostCommandDetails & {
    readonly bytesRead?: number;
    readonly imagePath?: string;
    readonly length?: number;
    readonly manifestDigest?: string;
    readonly missing?: string[];
    readonly position?: number;
  };
  EMB_IMAGE_REFERENCE_INVALID: { readonly reference?: string };
  EMB_IMAGE_CACHE_BUSY: { readonly lock?: string; readonly pid?: number; readonly pins?: string[] };
  EMB_REGISTRY_UNREACHABLE: {
    readonly endpoint?: string;
    readonly errno?: string;
    /** false when retrying cannot help (e.g. the registry's name does not resolve): registry/http.ts does not retry it. */
    readonly transient?: boolean;
    readonly url?: string;
    /** A blob download that broke: its digest, the bytes received and the size wanted. */
    readonly digest?: string;
    readonly got?: number;
    readonly want?: number;
  };
  EMB_REGISTRY_UNAVAILABLE: RegistryRequestDetails & { readonly retryAfterMs?: number };
  EMB_REGISTRY_AUTH: RegistryRequestDetails & { readonly realm?: string; readonly scope?: string };
  EMB_REGISTRY_TLS: {
    readonly endpoint?: string;
    readonly errno?: string;
    readonly location?: string;
    readonly realm?: string;
    readonly registry?: string;
    readonly url?: string;
  };
  EMB_REGISTRY_REQUEST_FAILED: RegistryRequestDetails & {
    readonly challenge?: unknown;
    readonly contentRange?: string;
    readonly maxBytes?: number;
    readonly realm?: string;
    readonly start?: number;
  };
}

export const IMAGE_ERRORS = {
  // images
  EMB_IMAGE_NOT_FOUND: {
    summary: 'the image reference does not name an existing image',
    hint: 'check the path or reference; local images are OCI layout directories or `docker save` archives',
    exit: 66,
  },
  EMB_IMAGE_MANIFEST_INVALID: {
    summary: 'the image index, manifest or config is not valid JSON of the expected schema',
    hint: 'rebuild or re-export the image; embers reads OCI image layouts (oci-layout, index.json, blobs/sha256)',
    exit: 65,
  },
  EMB_IMAGE_DIGEST_MISMATCH: {
    summary: 'a blob does not match its digest',
    hint: 'the image is corrupt or was tampered with: re-export or re-pull it',
    exit: 65,
  },
  EMB_IMAGE_LAYER_UNSAFE: {
    summary: 'a layer holds an entry that would escape the root filesystem',
    hint: 'the image is malicious or broken; embers refuses it. Rebuild it without path traversal, absolute-link escapes or out-of-tree hard links',
    exit: 65,
  },
  EMB_IMAGE_LAYER_INVALID: {
    summary: 'a layer is not a valid tar archive (bad header, truncated, or a tree it cannot apply to)',
    hint: 'the layer is corrupt or was produced by a broken tool: rebuild or re-export the image',
    exit: 65,
  },
  EMB_IMAGE_BLOB_MISSING: {
    summary: 'a blob the image index or manifest names is not in the image',
    hint: 'the image layout is incomplete: re-export it with all its blobs (foreign or non-distributable layers must be included)',
    exit: 65,
  },
  EMB_IMAGE_LAYER_UNSUPPORTED: {
    summary: 'a layer uses a media type or tar feature embers does not read',
    hint: 'use gzip, zstd or uncompressed tar layers',
    exit: 65,
  },
  EMB_IMAGE_PLATFORM_MISSING: {
    summary: 'the image index has no linux/amd64 entry',
    hint: 'build or pull an image for linux/amd64',
    exit: 65,
  },
  EMB_IMAGE_FLATTEN_FAILED: {
    summary: 'building the ext4 rootfs from the image failed',
    hint: 'see the details; check free disk space under the embers home',
    exit: 70,
  },
  EMB_IMAGE_REFERENCE_INVALID: {
    summary: 'the image reference is neither a local image nor a valid registry reference',
    hint: 'write REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST] (lowercase repository; docker.io and library/ are implied for short names), or a local image as a path, oci:PATH or docker-archive:PATH',
    exit: 64,
  },
  EMB_IMAGE_CACHE_BUSY: {
    summary:
      'the image cache stayed locked by another process (a pull, or `embers image gc`) for longer than embers waits',
    hint: 'wait for the other `embers image` command to finish (the lock file and its pid are in the details); a lock whose process died is taken over automatically',
    exit: 75,
  },
  // registries (the OCI distribution API: Docker Hub, GHCR, Harbor, `registry`…)
  EMB_REGISTRY_UNREACHABLE: {
    summary:
      'the registry could not be reached, or the connection broke before the answer was complete (refused, reset, timed out), after retries',
    hint: 'check that the registry named in the details is up and reachable from this node; pull again: blob downloads resume where they stopped',
    exit: 69,
  },
  EMB_REGISTRY_UNAVAILABLE: {
    summary: 'the registry kept answering with a server error or throttling (5xx, 429), after retries',
    hint: 'the registry is failing or rate-limiting this node: retry later',
    exit: 75,
  },
  EMB_REGISTRY_AUTH: {
    summary:
      'the registry or its token service refused the credentials, or asked for credentials embers does not have (HTTP 401/403)',
    hint: 'add an `auths` entry for the registry to the credentials file (EMBERS_REGISTRY_AUTH_FILE, default ~/.docker/config.json; docker config.json format) and check the user name, the password and the access to the repository',
    exit: 77,
  },
  EMB_REGISTRY_TLS: {
    summary: 'the TLS connection to the registry failed (it serves plain HTTP, or its certificate is not trusted)',
    hint: 'for a registry serving plain HTTP on a trusted network, list it in EMBERS_INSECURE_REGISTRIES (host or host:port, comma-separated); for a private CA, pass it with NODE_EXTRA_CA_CERTS',
    exit: 69,
  },
  EMB_REGISTRY_REQUEST_FAILED: {
    summary: 'the registry answered in a way embers does not expect (status, headers or body)',
    hint: 'see the status and the registry error code in the details; the server may not implement the OCI distribution API',
    exit: 70,
  },
} as const satisfies AreaCatalogue<ImageErrorDetails>;

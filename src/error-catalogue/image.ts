/** Errors of images and registries: each code's catalogue entry and message template (see shared.ts); the shape of each code's details is in image-details.ts. */
import type { AreaCatalogue } from './shared.js';
import type { RegistryRequestDetails, ImageErrorDetails } from './image-details.js';

export type { RegistryRequestDetails, ImageErrorDetails } from './image-details.js';

/** The path part of a URL, for messages ('' when it is not one). */
function pathOf(url: string | undefined): string {
  try {
    return url === undefined ? '' : new URL(url).pathname;
  } catch {
    return url ?? '';
  }
}

/** " (CODE: message)" of a registry's error answer, '' without a code. */
function registrySaid(d: RegistryRequestDetails): string {
  if (!d.registryCode) return '';
  return ` (${d.registryCode}${d.registryMessage ? `: ${d.registryMessage}` : ''})`;
}

/** The reference `registry/repository:tag` or `registry/repository@digest`. */
function registryName(registry: string | undefined, repository: string | undefined, reference: string): string {
  return `${registry}/${repository}${reference.startsWith('sha256:') ? '@' : ':'}${reference}`;
}

export const IMAGE_ERRORS = {
  // images
  EMB_IMAGE_NOT_FOUND: {
    summary: 'the image reference does not name an existing image',
    message: (d) => {
      switch (d.problem) {
        case 'empty-reference':
          return 'empty image reference';
        case 'bad-digest':
          return `invalid digest in image reference ${JSON.stringify(d.ref)} (want sha256:<64 hex>)`;
        case 'no-image':
          return `no image at ${JSON.stringify(d.ref)}: not an OCI layout directory or docker save archive`;
        case 'not-an-image':
          return d.reason !== undefined
            ? `${d.path} is not an OCI image layout or a docker save archive (${d.reason})`
            : `${d.path} is not an OCI image layout (no index.json)${d.directory ? '' : ' or docker save archive (no manifest.json)'}`;
        case 'not-a-digest':
          return `not a manifest digest: ${JSON.stringify(d.manifestDigest)}`;
        case 'no-manifest':
          return `no manifest ${d.digest} in ${d.location}`;
        case 'no-tag':
          return `no image tagged ${JSON.stringify(d.tag)} in ${d.location} (tags: ${d.tags?.join(', ') || 'none'})`;
        case 'several-images':
          return `${d.where} holds ${d.count} images: pick one with PATH:TAG${d.byDigest ? ' or PATH@DIGEST' : ''}${d.tags?.length ? ` (tags: ${d.tags.join(', ')})` : ''}`;
        case 'legacy-digest':
          return `${d.location} is a legacy docker save archive: select images by tag, not digest`;
        case 'not-cached':
          return `${d.key ?? d.reference} is not in the image cache of this node`;
        case 'rootfs-gone':
          return `the rootfs of ${d.reference} (${d.manifestDigest}) is no longer cached`;
        case 'not-on-registry': {
          const tags = d.tags ?? [];
          const why =
            d.missing === 'repository'
              ? 'the repository does not exist'
              : d.missing === 'manifest'
                ? 'no manifest has that digest'
                : `the tag does not exist${tags.length ? ` (tags: ${tags.slice(0, 10).join(', ')}${tags.length > 10 ? ', …' : ''})` : ''}`;
          const name = registryName(d.registry, d.repository, d.reference ?? '');
          return `${name} is not on the registry: ${why}${d.registryCode ? ` (${d.registryCode})` : ''}`;
        }
      }
    },
    hint: 'check the path or reference; local images are OCI layout directories or `docker save` archives',
    exit: 66,
  },
  EMB_IMAGE_MANIFEST_INVALID: {
    summary: 'the image index, manifest or config is not valid JSON of the expected schema',
    message: (d) => {
      const where = d.where !== undefined ? ` (${d.where})` : '';
      switch (d.problem) {
        case 'not-json':
          return `${d.subject} is not valid JSON${where}: ${d.reason}`;
        case 'too-large':
          return `${d.subject} is too large (${d.size} bytes)`;
        case 'not-sha256':
          return `not a sha256 digest: ${JSON.stringify(d.digest)}`;
        case 'schema':
          return `${d.subject} ${d.defect}${where}`;
        case 'unreadable':
          return `reading ${d.subject} failed: ${d.reason}`;
      }
    },
    hint: 'rebuild or re-export the image; embers reads OCI image layouts (oci-layout, index.json, blobs/sha256)',
    exit: 65,
  },
  EMB_IMAGE_DIGEST_MISMATCH: {
    summary: 'a blob does not match its digest',
    message: (d) => {
      const from = d.from !== undefined ? ` from ${d.from}` : '';
      switch (d.problem) {
        case 'descriptor':
          return `${d.blob}${from} does not match its descriptor (sha256 ${d.actual}, ${d.size} bytes, expected ${d.expectedSize})`;
        case 'diff-id':
          return `${d.layer}: uncompressed content ${d.actual} does not match the config's diff_id ${d.diffId}`;
        case 'config-name':
          return `image config ${d.name} does not match its name (sha256 ${d.actual})`;
        case 'manifest-digest':
          return `the manifest ${registryName(d.registry, d.repository, d.reference ?? '')} does not match its digest (got ${d.actual}, expected ${d.digest})`;
        case 'manifest-size':
          return `manifest ${d.digest} of ${d.reference} is ${d.size} bytes, its index says ${d.expectedSize}`;
        case 'too-long':
          return `${d.from} sent more than the ${d.expectedSize} bytes of blob ${d.digest}`;
        case 'too-short':
          return `blob ${d.digest} on ${d.from} is ${d.size} bytes, but its descriptor says ${d.expectedSize}`;
        case 'shorter-than-downloaded':
          return `blob ${d.digest} on ${d.from} is shorter than the ${d.offset} bytes already downloaded`;
        case 'blob-digest':
          return `blob ${d.digest}${from} does not match its digest (sha256 ${d.actual})`;
        case 'refused-store':
          return `refusing to store bytes that do not match ${d.digest}`;
      }
    },
    hint: 'the image is corrupt or was tampered with: re-export or re-pull it',
    exit: 65,
  },
  EMB_IMAGE_LAYER_UNSAFE: {
    summary: 'a layer holds an entry that would escape the root filesystem',
    message: (d) => {
      const name = JSON.stringify(d.name);
      switch (d.problem) {
        case 'absolute-path':
          return `${d.what ?? 'entry'} has an absolute path: ${name}`;
        case 'dot-dot':
          return `${d.what ?? 'entry'} path contains "..": ${name}`;
        case 'through-symlink':
          return `layer entry ${name} would be written through the symlink ${d.symlink}`;
        case 'whiteout':
          return `invalid whiteout ${name}`;
        case 'replaces-root':
          return `layer entry ${name} would replace the root directory`;
        case 'hard-link-to-root':
          return `hard link ${name} points at the root directory`;
        case 'hard-link-target':
          return `hard link ${name} -> ${JSON.stringify(d.linkname)}: the target is not an existing regular file in the image`;
      }
    },
    hint: 'the image is malicious or broken; embers refuses it. Rebuild it without path traversal, absolute-link escapes or out-of-tree hard links',
    exit: 65,
  },
  EMB_IMAGE_LAYER_INVALID: {
    summary: 'a layer is not a valid tar archive (bad header, truncated, or a tree it cannot apply to)',
    message: (d) => {
      switch (d.problem) {
        case 'tar':
          return `invalid tar archive: ${d.defect}`;
        case 'not-a-directory':
          return `layer entry ${JSON.stringify(d.name)} needs ${d.path} to be a directory, but it is not`;
        case 'short-content':
          return `short content for ${d.name}`;
        case 'empty-symlink':
          return `symlink ${JSON.stringify(d.name)} has an empty target`;
        case 'gzip':
        case 'zstd':
          return `${d.layer}: corrupt ${d.problem} stream: ${d.reason}`;
      }
    },
    hint: 'the layer is corrupt or was produced by a broken tool: rebuild or re-export the image',
    exit: 65,
  },
  EMB_IMAGE_BLOB_MISSING: {
    summary: 'a blob the image index or manifest names is not in the image',
    message: (d) => {
      switch (d.source) {
        case 'layout':
          return `${d.blob} is missing from ${d.location}`;
        case 'archive':
          return `${d.blob} is missing from the archive ${d.location}`;
        case 'blob-store':
          return `manifest ${d.manifestDigest} of ${d.reference} is not in the blob store ${d.location}`;
        case 'registry':
          return `${d.registry}/${d.repository} has no blob ${d.digest} though its manifest names it (HTTP ${d.status}${d.registryCode ? `, ${d.registryCode}` : ''})`;
      }
    },
    hint: 'the image layout is incomplete: re-export it with all its blobs (foreign or non-distributable layers must be included)',
    exit: 65,
  },
  EMB_IMAGE_LAYER_UNSUPPORTED: {
    summary: 'a layer uses a media type or tar feature embers does not read',
    message: (d) => {
      switch (d.problem) {
        case 'tar':
          return `unsupported tar archive: ${d.defect}`;
        case 'zstd-missing':
          return `${d.layer} is zstd-compressed and the zstd program is not installed`;
        case 'digest-algorithm':
          return `${d.subject} uses an unsupported digest algorithm: ${d.digest}`;
        case 'media-type':
          return `layer ${d.index} (${d.digest})${d.reference !== undefined ? ` of ${d.reference}` : ''} has the unsupported media type ${d.mediaType}`;
      }
    },
    hint: 'use gzip, zstd or uncompressed tar layers',
    exit: 65,
  },
  EMB_IMAGE_PLATFORM_MISSING: {
    summary: 'the image index has no linux/amd64 entry',
    message: (d) => {
      switch (d.problem) {
        case 'no-amd64':
          return `no linux/amd64 image in ${d.where} (has ${(d.platforms ?? []).map((p) => `${p?.os}/${p?.architecture}`).join(', ')})`;
        case 'empty-index':
          return `the image index ${d.where} lists no image`;
        case 'config':
          return `the image ${d.digest} is for ${String(d.os)}/${String(d.architecture)}, not linux/amd64`;
      }
    },
    hint: 'build or pull an image for linux/amd64',
    exit: 65,
  },
  EMB_IMAGE_FLATTEN_FAILED: {
    summary: 'building the ext4 rootfs from the image failed',
    message: (d) => {
      switch (d.problem) {
        case 'xattrs-not-set':
          return `could not set the extended attributes of layer ${d.layer} (does the staging file system support them?)`;
        case 'xattrs-lost':
          return `the staging file system did not keep the image's extended attributes: ${(d.missing ?? []).slice(0, 5).join(', ')}`;
        case 'mke2fs':
          return `mke2fs failed: ${d.reason}`;
        case 'e2fsck':
          return 'the built rootfs does not pass e2fsck';
        case 'build':
          return `building the rootfs failed: ${d.reason}`;
        case 'flatten':
          return `flattening ${d.reference} failed: ${d.reason}`;
        case 'short-read':
          return `short read of the ext4 image at ${d.position}`;
        case 'short-write':
          return 'short write to the ext4 image';
        case 'not-ext4':
          return 'not an ext4 image (bad superblock magic)';
      }
    },
    hint: 'see the details; check free disk space under the embers home',
    exit: 70,
  },
  EMB_IMAGE_REFERENCE_INVALID: {
    summary: 'the image reference is neither a local image nor a valid registry reference',
    message: (d) => {
      const why = ((): string => {
        switch (d.problem) {
          case 'empty':
            return 'it is empty';
          case 'white-space':
            return 'it contains white space';
          case 'digest-algorithm':
            return `embers verifies sha256 digests only, not ${d.digest?.split(':')[0]}`;
          case 'digest':
            return `the digest ${JSON.stringify(d.digest)} is not sha256:<64 lowercase hex>`;
          case 'tag':
            return `the tag ${JSON.stringify(d.tag)} is not valid (letters, digits, _ . -, at most 128, not starting with . or -)`;
          case 'no-repository':
            return 'it names no repository';
          case 'registry':
            return `${JSON.stringify(d.registry)} is not a registry host[:port]`;
          case 'component': {
            const c = d.component ?? '';
            const rule =
              c.toLowerCase() !== c
                ? 'repositories are lowercase'
                : 'components are lowercase letters and digits joined by . _ __ or dashes';
            return `the repository component ${JSON.stringify(c)} is not valid (${rule})`;
          }
          case 'too-long':
            return `the name is longer than ${d.maxLength} characters`;
        }
      })();
      return `invalid image reference ${JSON.stringify(d.reference)}: ${why}`;
    },
    hint: 'write REGISTRY[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST] (lowercase repository; docker.io and library/ are implied for short names), or a local image as a path, oci:PATH or docker-archive:PATH',
    exit: 64,
  },
  EMB_IMAGE_CACHE_BUSY: {
    summary:
      'the image cache stayed locked by another process (a pull, or `embers image gc`) for longer than embers waits',
    message: (d) =>
      d.problem === 'gc'
        ? `${d.resource} is being garbage-collected by process ${d.pid ?? '?'}`
        : d.problem === 'pins'
          ? `${d.resource} is in use by ${d.pins?.length} running pull(s) or ensure(s)`
          : `${d.resource} is locked by process ${d.pid} (waited ${Math.round((d.waitedMs ?? 0) / 1000)} s)`,
    hint: 'wait for the other `embers image` command to finish (the lock file and its pid are in the details); a lock whose process died is taken over automatically',
    exit: 75,
  },
  // registries (the OCI distribution API: Docker Hub, GHCR, Harbor, `registry`…)
  EMB_REGISTRY_UNREACHABLE: {
    summary:
      'the registry could not be reached, or the connection broke before the answer was complete (refused, reset, timed out), after retries',
    message: (d) => {
      const failed =
        d.problem === 'body'
          ? `the connection to ${d.server} broke while reading ${pathOf(d.url)}`
          : `${d.server} (${d.endpoint}) could not be reached: ${d.reason ?? d.errno}`;
      return d.got === undefined
        ? failed
        : `the download of ${d.digest} from ${d.from} broke after ${d.got} of ${d.want} bytes: ${failed}`;
    },
    hint: 'check that the registry named in the details is up and reachable from this node; pull again: blob downloads resume where they stopped',
    exit: 69,
  },
  EMB_REGISTRY_UNAVAILABLE: {
    summary: 'the registry kept answering with a server error or throttling (5xx, 429), after retries',
    message: (d) =>
      d.realm !== undefined
        ? `${d.server} answered HTTP ${d.status}${d.registryMessage ? ` (${d.registryMessage})` : ''}`
        : `${d.server} answered HTTP ${d.status} for ${pathOf(d.url)}${registrySaid(d)}`,
    hint: 'the registry is failing or rate-limiting this node: retry later',
    exit: 75,
  },
  EMB_REGISTRY_AUTH: {
    summary:
      'the registry or its token service refused the credentials, or asked for credentials embers does not have (HTTP 401/403)',
    message: (d) => {
      const user = d.username !== undefined ? ` as ${JSON.stringify(d.username)}` : ' without credentials';
      switch (d.problem ?? 'status') {
        case 'status':
          return `${d.server} refused access to ${pathOf(d.url)}: HTTP ${d.status}${registrySaid(d)}`;
        case 'refused':
          return `${d.server} refused access to ${d.repository}${user}: HTTP ${d.status}${d.registryMessage ? ` (${d.registryMessage})` : ''}${d.bearer ? ' (registries such as Docker Hub also answer so for a repository that does not exist)' : ''}`;
        case 'no-credentials':
          return `${d.server} needs credentials for ${d.repository} (basic auth, realm ${JSON.stringify(d.realm ?? '')}) and the credentials file has none for it`;
        case 'credentials-refused':
          return `${d.server} refused the credentials${user}: HTTP ${d.status}`;
        case 'no-challenge':
          return `${d.server} answered HTTP ${d.status} for ${d.repository} with no challenge embers can answer (${d.challenge ?? 'no WWW-Authenticate'})`;
        case 'token':
          return d.username !== undefined
            ? `${d.server} (${d.url}) refused the credentials of ${JSON.stringify(d.username)} for ${d.scope}: HTTP ${d.status}${d.registryMessage ? ` (${d.registryMessage})` : ''}`
            : `${d.server} (${d.url}) refused anonymous access to ${d.scope}: HTTP ${d.status}; credentials are needed`;
      }
    },
    hint: 'add an `auths` entry for the registry to the credentials file (EMBERS_REGISTRY_AUTH_FILE, default ~/.docker/config.json; docker config.json format) and check the user name, the password and the access to the repository',
    exit: 77,
  },
  EMB_REGISTRY_TLS: {
    summary: 'the TLS connection to the registry failed (it serves plain HTTP, or its certificate is not trusted)',
    message: (d) => {
      switch (d.problem) {
        case 'handshake':
          return `the TLS connection to ${d.server} (${d.endpoint}) failed: ${d.reason}`;
        case 'redirect-to-http':
          return `${d.server} redirected ${pathOf(d.url)} to plain HTTP (${d.location ? new URL(d.location).host : ''})`;
        case 'plain-http-realm':
          return `the token realm ${d.realm} of registry ${d.registry} is plain HTTP and ${d.realm ? new URL(d.realm).host : ''} is not an insecure registry: credentials are not sent in clear`;
      }
    },
    hint: 'for a registry serving plain HTTP on a trusted network, list it in EMBERS_INSECURE_REGISTRIES (host or host:port, comma-separated); for a private CA, pass it with NODE_EXTRA_CA_CERTS',
    exit: 69,
  },
  EMB_REGISTRY_REQUEST_FAILED: {
    summary: 'the registry answered in a way embers does not expect (status, headers or body)',
    message: (d) => {
      switch (d.problem ?? 'status') {
        case 'status':
          return d.realm !== undefined
            ? `${d.server} answered HTTP ${d.status}${d.registryMessage ? ` (${d.registryMessage})` : ''}`
            : `${d.server} answered HTTP ${d.status} for ${pathOf(d.url)}${registrySaid(d)}`;
        case 'too-large':
          return `${d.server} sent more than ${d.maxBytes} bytes for ${pathOf(d.url)}`;
        case 'redirect':
          return `${d.server} redirected ${pathOf(d.url)} ${d.location ? 'too many times' : 'without a Location'}`;
        case 'content-range':
          return `${d.server} answered a range request for ${d.digest} without a valid Content-Range`;
        case 'range-start':
          return `${d.registry}/${d.repository} answered a range request for ${d.digest} from byte ${d.start}`;
        case 'no-realm':
          return `registry ${d.registry} asked for a bearer token without naming a realm`;
        case 'invalid-realm':
          return `registry ${d.registry} named an invalid token realm ${JSON.stringify(d.realm)}`;
        case 'realm-scheme':
          return `unsupported token realm ${d.realm}`;
        case 'not-json':
          return `${d.server} answered with a body that is not JSON`;
        case 'no-token':
          return `${d.server} answered without a token`;
      }
    },
    hint: 'see the status and the registry error code in the details; the server may not implement the OCI distribution API',
    exit: 70,
  },
} as const satisfies AreaCatalogue<ImageErrorDetails>;

/**
 * The message templates of the image and registry codes (src/error-catalogue/image.ts): for each
 * code with several situations, the message each situation gives from its typed details alone.
 * The expected texts are the messages the call sites wrote by hand before the templates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbersError } from '../../src/errors.js';

const D = `sha256:${'a'.repeat(64)}`;
const E = `sha256:${'b'.repeat(64)}`;

function check(cases: [EmbersError, string][]): void {
  for (const [err, message] of cases) assert.equal(err.message, message, `${err.code} ${JSON.stringify(err.details)}`);
}

test('EMB_IMAGE_NOT_FOUND: each situation names the reference and why', () => {
  check([
    [EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'empty-reference', ref: ' ' }), 'empty image reference'],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'bad-digest', ref: '/x@sha256:12' }),
      'invalid digest in image reference "/x@sha256:12" (want sha256:<64 hex>)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'no-image', ref: '/nope' }),
      'no image at "/nope": not an OCI layout directory or docker save archive',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'not-an-image', path: '/d', directory: true }),
      '/d is not an OCI image layout (no index.json)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'not-an-image', path: '/f.tar', directory: false }),
      '/f.tar is not an OCI image layout (no index.json) or docker save archive (no manifest.json)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'not-an-image', path: '/f', reason: 'invalid tar archive: x' }),
      '/f is not an OCI image layout or a docker save archive (invalid tar archive: x)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'not-a-digest', manifestDigest: 'abc' }),
      'not a manifest digest: "abc"',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'no-manifest', digest: D, location: '/l' }),
      `no manifest ${D} in /l`,
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'no-tag', tag: 'v2', location: '/l', tags: ['v1', 'v3'] }),
      'no image tagged "v2" in /l (tags: v1, v3)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'no-tag', tag: 'v2', location: '/l', tags: [] }),
      'no image tagged "v2" in /l (tags: none)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', {
        problem: 'several-images',
        where: '/l/index.json',
        count: 2,
        byDigest: true,
        tags: ['a', 'b'],
      }),
      '/l/index.json holds 2 images: pick one with PATH:TAG or PATH@DIGEST (tags: a, b)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'several-images', where: '/a.tar', count: 3, tags: ['x:1'] }),
      '/a.tar holds 3 images: pick one with PATH:TAG (tags: x:1)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'legacy-digest', location: '/a.tar' }),
      '/a.tar is a legacy docker save archive: select images by tag, not digest',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', {
        problem: 'not-cached',
        reference: 'fn',
        key: 'docker.io/library/fn:latest',
      }),
      'docker.io/library/fn:latest is not in the image cache of this node',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'rootfs-gone', reference: 'r:1', manifestDigest: D }),
      `the rootfs of r:1 (${D}) is no longer cached`,
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', {
        problem: 'not-on-registry',
        missing: 'repository',
        registry: 'r:5000',
        repository: 'acme/fn',
        reference: 'v1',
        registryCode: 'NAME_UNKNOWN',
      }),
      'r:5000/acme/fn:v1 is not on the registry: the repository does not exist (NAME_UNKNOWN)',
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', {
        problem: 'not-on-registry',
        missing: 'manifest',
        registry: 'r:5000',
        repository: 'acme/fn',
        reference: D,
      }),
      `r:5000/acme/fn@${D} is not on the registry: no manifest has that digest`,
    ],
    [
      EmbersError.of('EMB_IMAGE_NOT_FOUND', {
        problem: 'not-on-registry',
        missing: 'tag',
        registry: 'r:5000',
        repository: 'acme/fn',
        reference: 'v9',
        tags: Array.from({ length: 11 }, (_, i) => `v${i}`),
      }),
      'r:5000/acme/fn:v9 is not on the registry: the tag does not exist (tags: v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, …)',
    ],
  ]);
});

test('EMB_IMAGE_MANIFEST_INVALID: JSON, size, digest, schema and read failures', () => {
  check([
    [
      EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
        problem: 'not-json',
        subject: 'index.json',
        where: '/l',
        reason: 'Unexpected token',
      }),
      'index.json is not valid JSON (/l): Unexpected token',
    ],
    [
      EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
        problem: 'not-json',
        subject: 'the image refs file /h/refs.json',
        reason: 'Unexpected end',
      }),
      'the image refs file /h/refs.json is not valid JSON: Unexpected end',
    ],
    [
      EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', { problem: 'too-large', subject: `image config ${D}`, size: 9 }),
      `image config ${D} is too large (9 bytes)`,
    ],
    [
      EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', { problem: 'not-sha256', digest: 'md5:1' }),
      'not a sha256 digest: "md5:1"',
    ],
    [
      EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
        problem: 'schema',
        subject: 'manifests[0]',
        defect: 'has no digest',
        where: '/l/index.json',
      }),
      'manifests[0] has no digest (/l/index.json)',
    ],
    [
      EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
        problem: 'schema',
        subject: `image config ${D}: Env`,
        defect: 'must be an array of strings',
      }),
      `image config ${D}: Env must be an array of strings`,
    ],
    [
      EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', { problem: 'unreadable', subject: '/l', reason: 'EACCES' }),
      'reading /l failed: EACCES',
    ],
  ]);
});

test('EMB_IMAGE_DIGEST_MISMATCH: each check names the blob, what it should be and what it is', () => {
  check([
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'descriptor',
        blob: `image config ${D}`,
        actual: E,
        size: 3,
        expectedSize: 4,
      }),
      `image config ${D} does not match its descriptor (sha256 ${E}, 3 bytes, expected 4)`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'descriptor',
        blob: `image config ${D}`,
        from: 'r:5000/acme/fn',
        actual: E,
        size: 3,
        expectedSize: 4,
      }),
      `image config ${D} from r:5000/acme/fn does not match its descriptor (sha256 ${E}, 3 bytes, expected 4)`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', { problem: 'diff-id', layer: 'layer 1/2', actual: E, diffId: D }),
      `layer 1/2: uncompressed content ${E} does not match the config's diff_id ${D}`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', { problem: 'config-name', name: 'c.json', actual: E }),
      `image config c.json does not match its name (sha256 ${E})`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'manifest-digest',
        registry: 'r:5000',
        repository: 'acme/fn',
        reference: 'v1',
        digest: D,
        actual: E,
      }),
      `the manifest r:5000/acme/fn:v1 does not match its digest (got ${E}, expected ${D})`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'manifest-size',
        reference: 'r/fn:v1',
        digest: D,
        size: 5,
        expectedSize: 6,
      }),
      `manifest ${D} of r/fn:v1 is 5 bytes, its index says 6`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', { problem: 'too-long', from: 'r/fn', digest: D, expectedSize: 6 }),
      `r/fn sent more than the 6 bytes of blob ${D}`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'too-short',
        from: 'r/fn',
        digest: D,
        size: 5,
        expectedSize: 6,
      }),
      `blob ${D} on r/fn is 5 bytes, but its descriptor says 6`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'shorter-than-downloaded',
        from: 'r/fn',
        digest: D,
        offset: 7,
      }),
      `blob ${D} on r/fn is shorter than the 7 bytes already downloaded`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', { problem: 'blob-digest', from: 'r/fn', digest: D, actual: E }),
      `blob ${D} from r/fn does not match its digest (sha256 ${E})`,
    ],
    [
      EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', { problem: 'refused-store', digest: D }),
      `refusing to store bytes that do not match ${D}`,
    ],
  ]);
});

test('EMB_IMAGE_LAYER_UNSAFE, LAYER_INVALID, LAYER_UNSUPPORTED: each names the entry or layer and the defect', () => {
  check([
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSAFE', { problem: 'absolute-path', what: 'entry', name: '/etc/x' }),
      'entry has an absolute path: "/etc/x"',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSAFE', { problem: 'dot-dot', what: 'hard link target', name: '../x' }),
      'hard link target path contains "..": "../x"',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSAFE', { problem: 'through-symlink', name: 'a/b', symlink: '/a' }),
      'layer entry "a/b" would be written through the symlink /a',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSAFE', { problem: 'whiteout', name: 'd/.wh...' }),
      'invalid whiteout "d/.wh..."',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSAFE', { problem: 'replaces-root', name: './' }),
      'layer entry "./" would replace the root directory',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSAFE', { problem: 'hard-link-to-root', name: 'l', linkname: '.' }),
      'hard link "l" points at the root directory',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSAFE', { problem: 'hard-link-target', name: 'l', linkname: 'etc' }),
      'hard link "l" -> "etc": the target is not an existing regular file in the image',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_INVALID', { problem: 'tar', defect: 'bad PAX record (no length)' }),
      'invalid tar archive: bad PAX record (no length)',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_INVALID', { problem: 'not-a-directory', name: 'a/b', path: '/a' }),
      'layer entry "a/b" needs /a to be a directory, but it is not',
    ],
    [EmbersError.of('EMB_IMAGE_LAYER_INVALID', { problem: 'short-content', name: 'f' }), 'short content for f'],
    [
      EmbersError.of('EMB_IMAGE_LAYER_INVALID', { problem: 'empty-symlink', name: 's' }),
      'symlink "s" has an empty target',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_INVALID', {
        problem: 'gzip',
        layer: 'layer 1/1',
        reason: 'incorrect header check',
      }),
      'layer 1/1: corrupt gzip stream: incorrect header check',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_INVALID', { problem: 'zstd', layer: 'layer 1/1', reason: 'bad magic', exit: 1 }),
      'layer 1/1: corrupt zstd stream: bad magic',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSUPPORTED', { problem: 'tar', defect: 'GNU sparse files' }),
      'unsupported tar archive: GNU sparse files',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSUPPORTED', { problem: 'zstd-missing', layer: 'layer 1/1' }),
      'layer 1/1 is zstd-compressed and the zstd program is not installed',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSUPPORTED', {
        problem: 'digest-algorithm',
        subject: 'config',
        digest: 'sha512:ab',
      }),
      'config uses an unsupported digest algorithm: sha512:ab',
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSUPPORTED', {
        problem: 'media-type',
        index: 2,
        digest: D,
        mediaType: 'application/x-bzip2',
      }),
      `layer 2 (${D}) has the unsupported media type application/x-bzip2`,
    ],
    [
      EmbersError.of('EMB_IMAGE_LAYER_UNSUPPORTED', {
        problem: 'media-type',
        reference: 'r/fn:v1',
        index: 1,
        digest: D,
        mediaType: 'x',
      }),
      `layer 1 (${D}) of r/fn:v1 has the unsupported media type x`,
    ],
  ]);
});

test('EMB_IMAGE_PLATFORM_MISSING, FLATTEN_FAILED, REFERENCE_INVALID, CACHE_BUSY: each situation', () => {
  check([
    [
      EmbersError.of('EMB_IMAGE_PLATFORM_MISSING', {
        problem: 'no-amd64',
        where: 'index.json',
        platforms: [
          { os: 'linux', architecture: 'arm64' },
          { os: 'windows', architecture: 'amd64' },
        ],
      }),
      'no linux/amd64 image in index.json (has linux/arm64, windows/amd64)',
    ],
    [
      EmbersError.of('EMB_IMAGE_PLATFORM_MISSING', { problem: 'empty-index', where: 'index.json' }),
      'the image index index.json lists no image',
    ],
    [
      EmbersError.of('EMB_IMAGE_PLATFORM_MISSING', {
        problem: 'config',
        digest: D,
        os: 'linux',
        architecture: 'arm64',
      }),
      `the image ${D} is for linux/arm64, not linux/amd64`,
    ],
    [
      EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'xattrs-not-set', layer: 'layer 1/1' }),
      'could not set the extended attributes of layer layer 1/1 (does the staging file system support them?)',
    ],
    [
      EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'xattrs-lost', missing: ['a', 'b', 'c', 'd', 'e', 'f'] }),
      "the staging file system did not keep the image's extended attributes: a, b, c, d, e",
    ],
    [EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'mke2fs', reason: 'exit 1' }), 'mke2fs failed: exit 1'],
    [EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'e2fsck' }), 'the built rootfs does not pass e2fsck'],
    [EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'build', reason: 'x' }), 'building the rootfs failed: x'],
    [
      EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'flatten', reference: 'r:1', reason: 'ENOSPC' }),
      'flattening r:1 failed: ENOSPC',
    ],
    [
      EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'short-read', position: 1024, length: 1024, bytesRead: 0 }),
      'short read of the ext4 image at 1024',
    ],
    [EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'short-write' }), 'short write to the ext4 image'],
    [EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'not-ext4' }), 'not an ext4 image (bad superblock magic)'],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: '', problem: 'empty' }),
      'invalid image reference "": it is empty',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: 'a b', problem: 'white-space' }),
      'invalid image reference "a b": it contains white space',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', {
        reference: 'a@sha512:ab',
        problem: 'digest-algorithm',
        digest: 'sha512:ab',
      }),
      'invalid image reference "a@sha512:ab": embers verifies sha256 digests only, not sha512',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: 'a@sha256:1', problem: 'digest', digest: 'sha256:1' }),
      'invalid image reference "a@sha256:1": the digest "sha256:1" is not sha256:<64 lowercase hex>',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: 'a:.x', problem: 'tag', tag: '.x' }),
      'invalid image reference "a:.x": the tag ".x" is not valid (letters, digits, _ . -, at most 128, not starting with . or -)',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: ':v1', problem: 'no-repository' }),
      'invalid image reference ":v1": it names no repository',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: 'a_b.c/x', problem: 'registry', registry: 'a_b.c' }),
      'invalid image reference "a_b.c/x": "a_b.c" is not a registry host[:port]',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: 'r/Acme', problem: 'component', component: 'Acme' }),
      'invalid image reference "r/Acme": the repository component "Acme" is not valid (repositories are lowercase)',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: 'r/a..b', problem: 'component', component: 'a..b' }),
      'invalid image reference "r/a..b": the repository component "a..b" is not valid (components are lowercase letters and digits joined by . _ __ or dashes)',
    ],
    [
      EmbersError.of('EMB_IMAGE_REFERENCE_INVALID', { reference: 'x', problem: 'too-long', maxLength: 255 }),
      'invalid image reference "x": the name is longer than 255 characters',
    ],
    [
      EmbersError.of('EMB_IMAGE_CACHE_BUSY', { problem: 'gc', resource: 'the image cache /h/images', pid: 42 }),
      'the image cache /h/images is being garbage-collected by process 42',
    ],
    [
      EmbersError.of('EMB_IMAGE_CACHE_BUSY', { problem: 'gc', resource: 'the image cache /h/images' }),
      'the image cache /h/images is being garbage-collected by process ?',
    ],
    [
      EmbersError.of('EMB_IMAGE_CACHE_BUSY', {
        problem: 'pins',
        resource: 'the image cache /h/images',
        pins: ['a', 'b'],
      }),
      'the image cache /h/images is in use by 2 running pull(s) or ensure(s)',
    ],
    [
      EmbersError.of('EMB_IMAGE_CACHE_BUSY', {
        problem: 'locked',
        resource: `the download of ${D}`,
        lock: '/l',
        pid: 7,
        waitedMs: 2600,
      }),
      `the download of ${D} is locked by process 7 (waited 3 s)`,
    ],
  ]);
});

test('EMB_IMAGE_BLOB_MISSING: in a layout, an archive, the blob store or on a registry', () => {
  check([
    [
      EmbersError.of('EMB_IMAGE_BLOB_MISSING', { source: 'layout', blob: `image config ${D}`, location: '/l' }),
      `image config ${D} is missing from /l`,
    ],
    [
      EmbersError.of('EMB_IMAGE_BLOB_MISSING', { source: 'archive', blob: 'layer x/layer.tar', location: '/a.tar' }),
      'layer x/layer.tar is missing from the archive /a.tar',
    ],
    [
      EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
        source: 'blob-store',
        reference: 'r:1',
        manifestDigest: D,
        location: '/b',
      }),
      `manifest ${D} of r:1 is not in the blob store /b`,
    ],
    [
      EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
        source: 'registry',
        registry: 'r:5000',
        repository: 'acme/fn',
        digest: D,
        status: 404,
        registryCode: 'BLOB_UNKNOWN',
      }),
      `r:5000/acme/fn has no blob ${D} though its manifest names it (HTTP 404, BLOB_UNKNOWN)`,
    ],
  ]);
});

test('registry codes: connection, TLS, status and answer failures name the server and the request', () => {
  const url = 'https://r:5000/v2/acme/fn/manifests/v1';
  check([
    [
      EmbersError.of('EMB_REGISTRY_UNREACHABLE', {
        server: 'registry r:5000',
        endpoint: 'r:5000',
        reason: 'ECONNREFUSED',
        url,
      }),
      'registry r:5000 (r:5000) could not be reached: ECONNREFUSED',
    ],
    [
      EmbersError.of('EMB_REGISTRY_UNREACHABLE', { problem: 'body', server: 'registry r:5000', url }),
      'the connection to registry r:5000 broke while reading /v2/acme/fn/manifests/v1',
    ],
    [
      EmbersError.of('EMB_REGISTRY_UNREACHABLE', {
        server: 'registry r:5000',
        endpoint: 'r:5000',
        reason: 'ECONNRESET',
        digest: D,
        from: 'r:5000/acme/fn',
        got: 10,
        want: 20,
      }),
      `the download of ${D} from r:5000/acme/fn broke after 10 of 20 bytes: registry r:5000 (r:5000) could not be reached: ECONNRESET`,
    ],
    [
      EmbersError.of('EMB_REGISTRY_UNAVAILABLE', {
        server: 'registry r:5000',
        url,
        status: 503,
        registryCode: 'UNAVAILABLE',
        registryMessage: 'busy',
      }),
      'registry r:5000 answered HTTP 503 for /v2/acme/fn/manifests/v1 (UNAVAILABLE: busy)',
    ],
    [
      EmbersError.of('EMB_REGISTRY_UNAVAILABLE', {
        server: 'the token service of r:5000',
        realm: 'https://auth/token',
        status: 429,
      }),
      'the token service of r:5000 answered HTTP 429',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', { server: 'registry r:5000', url, status: 403, registryCode: 'DENIED' }),
      'registry r:5000 refused access to /v2/acme/fn/manifests/v1: HTTP 403 (DENIED)',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'refused',
        server: 'registry r:5000',
        repository: 'acme/fn',
        username: 'bob',
        status: 401,
        registryMessage: 'no',
        bearer: true,
      }),
      'registry r:5000 refused access to acme/fn as "bob": HTTP 401 (no) (registries such as Docker Hub also answer so for a repository that does not exist)',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'refused',
        server: 'registry r:5000',
        repository: 'acme/fn',
        status: 403,
      }),
      'registry r:5000 refused access to acme/fn without credentials: HTTP 403',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'no-credentials',
        server: 'registry r:5000',
        repository: 'acme/fn',
        realm: 'Registry',
      }),
      'registry r:5000 needs credentials for acme/fn (basic auth, realm "Registry") and the credentials file has none for it',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'credentials-refused',
        server: 'registry r:5000',
        username: 'bob',
        status: 401,
      }),
      'registry r:5000 refused the credentials as "bob": HTTP 401',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'no-challenge',
        server: 'registry r:5000',
        repository: 'a',
        status: 401,
      }),
      'registry r:5000 answered HTTP 401 for a with no challenge embers can answer (no WWW-Authenticate)',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'token',
        server: 'the token service of r:5000',
        url: 'https://auth/token',
        username: 'bob',
        scope: 'repository:a:pull',
        status: 401,
      }),
      'the token service of r:5000 (https://auth/token) refused the credentials of "bob" for repository:a:pull: HTTP 401',
    ],
    [
      EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'token',
        server: 'the token service of r:5000',
        url: 'https://auth/token',
        scope: 'repository:a:pull',
        status: 401,
      }),
      'the token service of r:5000 (https://auth/token) refused anonymous access to repository:a:pull: HTTP 401; credentials are needed',
    ],
    [
      EmbersError.of('EMB_REGISTRY_TLS', {
        problem: 'handshake',
        server: 'registry r:5000',
        endpoint: 'r:5000',
        reason: 'wrong version number',
      }),
      'the TLS connection to registry r:5000 (r:5000) failed: wrong version number',
    ],
    [
      EmbersError.of('EMB_REGISTRY_TLS', {
        problem: 'redirect-to-http',
        server: 'registry r:5000',
        url,
        location: 'http://blobs:9000/x',
      }),
      'registry r:5000 redirected /v2/acme/fn/manifests/v1 to plain HTTP (blobs:9000)',
    ],
    [
      EmbersError.of('EMB_REGISTRY_TLS', {
        problem: 'plain-http-realm',
        registry: 'r:5000',
        realm: 'http://auth:80/t',
      }),
      'the token realm http://auth:80/t of registry r:5000 is plain HTTP and auth is not an insecure registry: credentials are not sent in clear',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { server: 'registry r:5000', url, status: 400 }),
      'registry r:5000 answered HTTP 400 for /v2/acme/fn/manifests/v1',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
        server: 'the token service of r',
        realm: 'https://a',
        status: 400,
      }),
      'the token service of r answered HTTP 400',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'too-large', server: 'registry r', url, maxBytes: 10 }),
      'registry r sent more than 10 bytes for /v2/acme/fn/manifests/v1',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'redirect', server: 'registry r', url, status: 302 }),
      'registry r redirected /v2/acme/fn/manifests/v1 without a Location',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
        problem: 'redirect',
        server: 'registry r',
        url,
        status: 302,
        location: '/again',
      }),
      'registry r redirected /v2/acme/fn/manifests/v1 too many times',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'content-range', server: 'registry r', digest: D }),
      `registry r answered a range request for ${D} without a valid Content-Range`,
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
        problem: 'range-start',
        registry: 'r',
        repository: 'a',
        digest: D,
        start: 5,
      }),
      `r/a answered a range request for ${D} from byte 5`,
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'no-realm', registry: 'r' }),
      'registry r asked for a bearer token without naming a realm',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'invalid-realm', registry: 'r', realm: '::' }),
      'registry r named an invalid token realm "::"',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'realm-scheme', registry: 'r', realm: 'ftp://a' }),
      'unsupported token realm ftp://a',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'not-json', server: 'the token service of r' }),
      'the token service of r answered with a body that is not JSON',
    ],
    [
      EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'no-token', server: 'the token service of r' }),
      'the token service of r answered without a token',
    ],
  ]);
});

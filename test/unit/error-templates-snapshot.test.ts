import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbersError } from '../../src/errors.js';

const id = 'snap-0123456789abcdef01234567';

/** Each situation of a code of the snapshot area, and the message its template gives. */
const cases: [EmbersError, string][] = [
  [
    EmbersError.of('EMB_NO_SPACE', { step: 'pulling x', path: '/h', freeBytes: 1048576, totalBytes: 2097152 }),
    'pulling x failed: no space left on the filesystem of /h (1.0 MiB free of 2.0 MiB after cleaning up); nothing partial was kept',
  ],
  [
    EmbersError.of('EMB_NO_SPACE', { step: 'pulling x', path: '/h', needBytes: 2097152, freeBytes: 1048576 }),
    'pulling x needs about 2.0 MiB on the filesystem of /h, and 1.0 MiB are free; nothing was started',
  ],
  [EmbersError.of('EMB_SNAPSHOT_NOT_FOUND', { id, store: '/s' }), `no snapshot ${id} in /s`],
  [
    EmbersError.of('EMB_SNAPSHOT_NOT_FOUND', { id: 'x', problem: 'not-an-id' }),
    '"x" is not a snapshot id (snap-<hex>)',
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'manifest-invalid', source: 'm.json', reason: 'files' }),
    'snapshot manifest m.json is invalid: files',
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'size', id, file: 'memory.bin', actualBytes: 1, sizeBytes: 2 }),
    `snapshot ${id}: memory.bin is 1 bytes, the manifest says 2 (truncated or replaced)`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
      problem: 'size',
      fetched: true,
      id,
      file: 'a',
      actualBytes: 1,
      sizeBytes: 2,
    }),
    `fetched snapshot ${id}: a is 1 bytes, the manifest says 2`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'chunk-digest', id, file: 'm', chunk: 1, start: 4, end: 8 }),
    `snapshot ${id}: chunk 1 of m (bytes 4-7) does not match its sha256 (corrupt or tampered)`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
      problem: 'remote-missing',
      remote: 's3',
      id,
      source: 's3://b/p',
      file: 'm',
      key: 'p/m',
    }),
    `remote snapshot ${id} in s3://b/p is incomplete: its manifest lists m, but the object p/m does not exist`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
      problem: 'remote-size',
      remote: 'peer',
      id,
      endpoint: 'http://p',
      file: 'm',
      actualBytes: 3,
      sizeBytes: 4,
    }),
    `snapshot ${id} at the peer http://p: m is 3 bytes there, the manifest says 4 (corrupt or tampered)`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'manifest-of-another', id, manifestId: 'snap-1' }),
    `snapshot dir ${id} holds the manifest of snap-1`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
      problem: 'manifest-of-another',
      id,
      manifestId: 'snap-1',
      source: 'peer',
    }),
    `peer: the manifest stored for ${id} is the manifest of snap-1`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_INCOMPATIBLE', { problem: 'vmm', id, recorded: 'qemu', here: 'firecracker' }),
    `snapshot ${id} cannot be restored here: it was made by qemu, this node runs firecracker`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_INCOMPATIBLE', { problem: 'format', source: 's', formatVersion: 9, readsFormat: 1 }),
    'snapshot s has format 9; this embers reads format 1',
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_VERSION_MISMATCH', { snapshotVersion: '2.0.0', binarySnapshotVersion: '1.0.0' }),
    'snapshot format v2.0.0 has major version 2, but firecracker loads snapshot format v1.0.0 (major 1): refused before load',
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_VERSION_MISMATCH', {
      snapshotVersion: '1.2.0',
      binarySnapshotVersion: '1.1.0',
      binaryVersion: '1.9.0',
      source: 's',
    }),
    'snapshot format v1.2.0 (s) is newer than v1.1.0, the newest firecracker v1.9.0 loads: refused before load',
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_HOST_MISMATCH', {
      id,
      mismatches: [{ what: 'kernel', recorded: '6.1', here: '6.2' }],
    }),
    `snapshot ${id} was made on a host that differs from this one: guest kernel: 6.1 recorded, 6.2 here`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_DISK_MISMATCH', {
      id,
      which: 'image manifest digest',
      reference: 'r',
      expected: 'a',
      actual: 'b',
    }),
    'image r now resolves to b, the snapshot was made from a',
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_DISK_MISMATCH', { id, which: 'disk sha256', expected: 'a', actual: 'b' }),
    `restored disk of ${id} has sha256 b, the disk at pause had a`,
  ],
  [
    EmbersError.of('EMB_SNAPSHOT_DISK_MISMATCH', { id, which: 'disk sha256', diff: 'rsync' }),
    `snapshot ${id} captured its disk with rsync: the patched disk has the same files but not the same bytes as the disk at pause, so the guest's cached filesystem state would not match it`,
  ],
  [
    EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'invalid', source: 'ws', reason: 'range 0 has no pages' }),
    'working set ws is invalid: range 0 has no pages',
  ],
  [
    EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'size', id, file: 'p', actualBytes: 1, sizeBytes: 2 }),
    `working set of ${id}: p is 1 bytes, its manifest says 2 (corrupt or tampered)`,
  ],
  [EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'none', id }), `snapshot ${id} has no working set`],
  [
    EmbersError.of('EMB_WORKING_SET_RECORD_FAILED', { id, residentPages: 3 }),
    `3 pages of ${id}'s memory file stay in the page cache after posix_fadvise(DONTNEED): running clones of it map them`,
  ],
  [
    EmbersError.of('EMB_WORKING_SET_RECORD_FAILED', { id, recordPath: '/r', timeoutMs: 5 }),
    `the page server recording the working set of ${id} wrote nothing to /r within 5 ms of its VM stopping`,
  ],
  [
    EmbersError.of('EMB_WORKING_SET_RECORD_FAILED', { id }),
    `the page server recorded no page of ${id}: the clone touched no guest memory`,
  ],
  [
    EmbersError.of('EMB_REMOTE_UNREACHABLE', {
      problem: 'connect',
      remote: 'peer',
      endpoint: 'http://p',
      cause: 'ECONNREFUSED',
    }),
    'cannot reach the peer http://p (ECONNREFUSED)',
  ],
  [
    EmbersError.of('EMB_REMOTE_UNREACHABLE', {
      problem: 'connect',
      remote: 's3',
      endpoint: 'http://s',
      cause: 'ECONNRESET',
      request: 'GET k',
    }),
    'cannot reach the S3 endpoint http://s (ECONNRESET) for GET k',
  ],
  [
    EmbersError.of('EMB_REMOTE_UNREACHABLE', {
      problem: 'broken',
      endpoint: 'loc',
      file: 'm',
      got: 1,
      want: 2,
      reason: 'reset',
    }),
    'the connection to loc broke after 1 of 2 bytes of m: reset',
  ],
  [
    EmbersError.of('EMB_REMOTE_UNREACHABLE', {
      problem: 'broken',
      remote: 'peer',
      endpoint: 'http://p',
      reading: 'the snapshot list',
    }),
    'the connection to the peer http://p broke while reading the snapshot list',
  ],
  [
    EmbersError.of('EMB_REMOTE_UNREACHABLE', {
      problem: 'stalled',
      remote: 'peer',
      endpoint: 'http://p',
      stallTimeoutMs: 9,
      request: 'GET /x',
    }),
    'the peer http://p sent nothing for 9 ms during GET /x: stalled',
  ],
  [
    EmbersError.of('EMB_REMOTE_UNREACHABLE', {
      problem: 'ended-early',
      endpoint: 'loc',
      file: 'm',
      id,
      start: 0,
      end: 4,
    }),
    `loc ended bytes 0-3 of m of ${id} early`,
  ],
  [
    EmbersError.of('EMB_REMOTE_UNAVAILABLE', {
      remote: 's3',
      endpoint: 'http://s',
      request: 'PUT k',
      status: 503,
      serviceCode: 'SlowDown',
    }),
    'the S3 endpoint http://s failed PUT k (503 SlowDown)',
  ],
  [
    EmbersError.of('EMB_REMOTE_UNAVAILABLE', { endpoint: 'http://s', key: 'k', part: 2, etag: 'e', md5: 'm' }),
    'part 2 of k arrived altered at http://s (ETag e, sent MD5 m)',
  ],
  [
    EmbersError.of('EMB_REMOTE_AUTH', { problem: 'no-credentials', endpoint: 'http://s', reason: 'none set' }),
    'no S3 credentials for http://s: none set',
  ],
  [
    EmbersError.of('EMB_REMOTE_AUTH', {
      remote: 's3',
      endpoint: 'http://s',
      request: 'GET k',
      status: 403,
      serviceCode: 'AccessDenied',
    }),
    'the S3 endpoint http://s refused the credentials for GET k (403 AccessDenied)',
  ],
  [EmbersError.of('EMB_REMOTE_NOT_FOUND', { id, endpoint: 'http://p' }), `the peer http://p has no snapshot ${id}`],
  [
    EmbersError.of('EMB_REMOTE_NOT_FOUND', { bucket: 'b', endpoint: 'http://s' }),
    'the bucket b does not exist at http://s',
  ],
  [
    EmbersError.of('EMB_REMOTE_NOT_FOUND', { id, bucket: 'b', location: 's3://b/p', endpoint: 'http://s', key: 'p/k' }),
    `no snapshot ${id} in s3://b/p (http://s): p/k does not exist`,
  ],
  [
    EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
      problem: 'refused',
      remote: 'peer',
      endpoint: 'http://p',
      request: 'list snapshots',
      status: 418,
      serviceCode: 'TEAPOT',
    }),
    'the peer http://p refused list snapshots (418 TEAPOT)',
  ],
  [
    EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
      problem: 'unexpected',
      remote: 's3',
      endpoint: 'http://s',
      request: 'CREATE k',
      reason: 'no UploadId',
    }),
    'the S3 endpoint http://s, CREATE k: no UploadId',
  ],
  [
    EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
      problem: 'too-many-bytes',
      source: 'loc',
      file: 'm',
      start: 2,
      end: 6,
    }),
    'loc sent more than the 4 bytes asked for m [2, 6)',
  ],
  [
    EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
      problem: 'wrong-range',
      remote: 'peer',
      endpoint: 'http://p',
      path: '/x',
      contentRange: 'bytes 0-1',
      start: 2,
      end: 4,
    }),
    'the peer http://p sent bytes 0-1 of /x for bytes=2-3',
  ],
  [
    EmbersError.of('EMB_PEER_AUTH', { endpoint: 'http://p', request: 'GET /x' }),
    'the peer http://p refused the token (401) for GET /x',
  ],
];

test('error templates (snapshot area): each situation of a code gets its own message', () => {
  for (const [err, message] of cases) assert.equal(err.message, message, err.code);
});

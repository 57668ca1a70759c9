/**
 * Serves this node's local snapshots to peers over HTTP, read-only:
 *
 *   GET /v1/snapshots                   → { snapshots: [{ id, createdAt, sizeBytes }] }
 *   GET /v1/snapshots/<id>/manifest.json
 *   GET /v1/snapshots/<id>/<file>       → the file; Range (one range: 206 + Content-Range,
 *                                         416 when unsatisfiable); its sha256 in X-Embers-Sha256
 *   GET /v1/snapshots/<id>/workingset/manifest.json and /v1/snapshots/<id>/workingset/<file>
 *                                       → its working set (snapshot/working-set-store.ts), if recorded
 *   (HEAD on each of these)
 *
 * Every request needs `Authorization: Bearer <token>` (compared in constant time; 401
 * otherwise). Only ids matching the snapshot id pattern and file names listed in that
 * snapshot's manifest are served; paths are matched segment by segment, never decoded or
 * normalised, so `..` or encoded variants name nothing; no symlink is followed (the snapshot
 * dir must be a real directory, files are opened with O_NOFOLLOW).
 */
import { constants, createReadStream } from 'node:fs';
import { lstat, open, type FileHandle } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { EmbersError, isEmbersError } from '../errors.js';
import { bearerTokenCheck } from '../util/bearer.js';
import { sha256 } from '../util/fs.js';
import type { LocalSnapshotStore } from './local-store.js';
import {
  FILE_NAME_RE,
  MANIFEST_NAME,
  WORKING_SET_DIR,
  isSnapshotId,
  parseManifest,
  type SnapshotManifest,
} from './manifest.js';
import { parseWorkingSetManifest, type WorkingSetManifest } from './working-set-store.js';

/** The path under which a node serves its snapshots. */
export const PEER_API_PATH = '/v1/snapshots';
/** The response header holding the sha256 (hex) of the whole file served. */
export const PEER_SHA256_HEADER = 'x-embers-sha256';
/** The shortest peer token accepted. */
const PEER_TOKEN_MIN_LENGTH = 16;

/** The answer to GET /v1/snapshots. */
export interface PeerSnapshotList {
  snapshots: { id: string; createdAt: string; sizeBytes: number }[];
}

export interface PeerServerOptions {
  store: LocalSnapshotStore;
  /** The shared secret peers send as `Authorization: Bearer <token>`; at least 16 characters. */
  token: string;
  /** @default '127.0.0.1' */
  host?: string;
  /** @default 0 (any free port) */
  port?: number;
}

export interface PeerServer {
  /** The base URL peers pull from, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  readonly port: number;
  /** Stops listening and drops open connections (transfers in flight break; peers resume later). */
  close(): Promise<void>;
}

/** Starts an HTTP server for `peerRequestHandler`. */
export async function startPeerServer(opts: PeerServerOptions): Promise<PeerServer> {
  const handler = peerRequestHandler(opts);
  const server: Server = createServer((req, res) => void handler(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port, family } = server.address() as AddressInfo;
  const host = family === 'IPv6' ? `[${address}]` : address;
  return {
    url: `http://${host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * The request handler, for mounting on a server of one's own. It answers every request it
 * gets (paths outside /v1/snapshots with 404).
 */
export function peerRequestHandler(
  opts: Pick<PeerServerOptions, 'store' | 'token'>,
): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  if (typeof opts.token !== 'string' || opts.token.length < PEER_TOKEN_MIN_LENGTH) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'the peer token (EMBERS_PEER_TOKEN)',
      expected: `at least ${PEER_TOKEN_MIN_LENGTH} characters`,
    });
  }
  const tokenMatches = bearerTokenCheck(opts.token);
  const { store } = opts;
  return async (req, res) => {
    try {
      if (!tokenMatches(req.headers.authorization)) {
        res.setHeader('WWW-Authenticate', 'Bearer realm="embers"');
        return reply(res, 401, 'EMB_PEER_AUTH', 'missing or wrong peer token');
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return reply(res, 405, 'EMB_USAGE', `method ${req.method} is not allowed`);
      }
      const path = (req.url ?? '').split('?')[0];
      const segments = path.split('/');
      if (path === PEER_API_PATH || path === `${PEER_API_PATH}/`) return await serveList(store, req, res);
      // /v1/snapshots/<id>/<file>, or /v1/snapshots/<id>/workingset/<file> for its working set
      const workingSet = segments.length === 6 && segments[4] === WORKING_SET_DIR;
      if (!path.startsWith(`${PEER_API_PATH}/`) || (segments.length !== 5 && !workingSet))
        return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', 'no such resource');
      const id = segments[3];
      const name = segments[segments.length - 1];
      if (!isSnapshotId(id)) return reply(res, 400, 'EMB_USAGE', 'not a snapshot id (snap-<hex>)');
      if (!FILE_NAME_RE.test(name)) return reply(res, 400, 'EMB_USAGE', 'not a snapshot file name');
      if (workingSet) await serveWorkingSetFile(store, id, name, req, res);
      else await serveFile(store, id, name, req, res);
    } catch (err) {
      if (!res.headersSent) {
        const e = isEmbersError(err) ? err : undefined;
        reply(res, 500, e?.code ?? 'EMB_INTERNAL', e?.message ?? 'internal error');
      } else {
        res.destroy();
      }
    }
  };
}

async function serveList(store: LocalSnapshotStore, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const list: PeerSnapshotList = { snapshots: [] };
  for (const m of await store.list()) {
    // Only what serveFile would serve: a real directory, not a symlink to one.
    if (!(await lstat(join(store.dir, m.id)).catch(() => undefined))?.isDirectory()) continue;
    list.snapshots.push({ id: m.id, createdAt: m.createdAt, sizeBytes: m.files.reduce((n, f) => n + f.sizeBytes, 0) });
  }
  const body = Buffer.from(`${JSON.stringify(list)}\n`);
  res.writeHead(200, {
    'Content-Type': 'application/json',
    'Content-Length': body.length,
    'Cache-Control': 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

async function serveFile(
  store: LocalSnapshotStore,
  id: string,
  name: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const dir = join(store.dir, id);
  const dirStat = await lstat(dir).catch(() => undefined);
  if (!dirStat?.isDirectory()) return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `no snapshot ${id}`);
  const manifestBytes = await readNoFollow(join(dir, MANIFEST_NAME));
  if (!manifestBytes) return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `no snapshot ${id}`);
  let manifest: SnapshotManifest;
  try {
    manifest = parseManifest(manifestBytes.toString('utf8'), `${id}/${MANIFEST_NAME}`);
  } catch {
    return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `snapshot ${id} has no valid manifest here`);
  }
  if (manifest.id !== id) return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `no snapshot ${id}`);

  if (name === MANIFEST_NAME) return sendManifest(manifestBytes, req, res);
  const entry = manifest.files.find((f) => f.name === name);
  if (!entry) return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `snapshot ${id} has no file ${name}`);
  await sendFile(join(dir, name), entry.sha256, `snapshot ${id} lacks ${name} here`, req, res);
}

/** A file of a snapshot's working set (its manifest, or a file the manifest lists); 404 when the snapshot has none. */
async function serveWorkingSetFile(
  store: LocalSnapshotStore,
  id: string,
  name: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const snapshotDir = join(store.dir, id);
  if (!(await lstat(snapshotDir).catch(() => undefined))?.isDirectory())
    return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `no snapshot ${id}`);
  const dir = join(snapshotDir, WORKING_SET_DIR);
  if (!(await lstat(dir).catch(() => undefined))?.isDirectory())
    return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `snapshot ${id} has no working set here`);
  const manifestBytes = await readNoFollow(join(dir, MANIFEST_NAME));
  if (!manifestBytes) return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `snapshot ${id} has no working set here`);
  let manifest: WorkingSetManifest;
  try {
    manifest = parseWorkingSetManifest(manifestBytes.toString('utf8'), `${id}/${WORKING_SET_DIR}/${MANIFEST_NAME}`, id);
  } catch {
    return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `snapshot ${id} has no valid working set here`);
  }
  if (name === MANIFEST_NAME) return sendManifest(manifestBytes, req, res);
  const entry = manifest.files.find((f) => f.name === name);
  if (!entry) return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', `the working set of ${id} has no file ${name}`);
  await sendFile(join(dir, name), entry.sha256, `the working set of ${id} lacks ${name} here`, req, res);
}

/** Sends a manifest (of a snapshot or of its working set), with its sha256 in a header. */
function sendManifest(manifestBytes: Buffer, req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, {
    'Content-Type': 'application/json',
    'Content-Length': manifestBytes.length,
    [PEER_SHA256_HEADER]: sha256(manifestBytes),
    'Cache-Control': 'no-store',
  });
  res.end(req.method === 'HEAD' ? undefined : manifestBytes);
}

/** Sends a regular file (never through a symlink), whole or one byte range of it, with its sha256 in a header. */
async function sendFile(
  path: string,
  sha: string,
  missing: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const name = basename(path);
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', missing);
  }
  let streaming = false;
  try {
    const st = await fh.stat();
    if (!st.isFile()) return reply(res, 404, 'EMB_SNAPSHOT_NOT_FOUND', missing);
    const size = st.size;
    const range = parseRange(req.headers.range, size);
    const headers: Record<string, string | number> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      [PEER_SHA256_HEADER]: sha,
      'Cache-Control': 'no-store',
    };
    if (range === 'unsatisfiable') {
      res.setHeader('Content-Range', `bytes */${size}`);
      return reply(res, 416, 'EMB_USAGE', `range ${req.headers.range} is outside the ${size} bytes of ${name}`);
    }
    const [start, end] = range ?? [0, size];
    if (range) headers['Content-Range'] = `bytes ${start}-${end - 1}/${size}`;
    headers['Content-Length'] = end - start;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === 'HEAD' || end === start) {
      res.end();
      return;
    }
    streaming = true;
    const stream = createReadStream('', { fd: fh, start, end: end - 1, autoClose: true });
    await pipeline(stream, res).catch(() => {
      /* the peer went away: it resumes later */
    });
  } finally {
    if (!streaming) await fh.close();
  }
}

/**
 * One byte range of a `size`-byte file as [start, end), from a Range header: `bytes=a-b`,
 * `bytes=a-` or `bytes=-n`. No header, another unit or several ranges: undefined (the whole
 * file is sent, which RFC 9110 allows); a range that starts past the end: 'unsatisfiable'.
 */
export function parseRange(header: string | undefined, size: number): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return [Math.max(0, size - n), size];
  }
  const start = Number(m[1]);
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined; // invalid: ignored
  if (start >= size) return 'unsatisfiable';
  return [start, last + 1];
}

async function readNoFollow(path: string): Promise<Buffer | undefined> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch {
    return undefined;
  }
  try {
    if (!(await fh.stat()).isFile()) return undefined;
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

function reply(res: ServerResponse, status: number, code: string, message: string): void {
  const body = Buffer.from(`${JSON.stringify({ code, message })}\n`);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
}

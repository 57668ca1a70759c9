/**
 * `embers serve`: the node daemon. One per home (a pid lock in <home>/daemon/serve.lock; a
 * lock whose process is gone, after kill -9, is taken over and the home reconciled). It owns
 * the functions and their instances (node/lifecycle.ts) and serves the HTTP API
 * (api/server.ts). Binds 127.0.0.1 unless told otherwise; any other address needs an API
 * token. Shutdown stops accepting, drains in-flight requests (bounded), stops every instance
 * and releases every slot.
 */
import { mkdir, rm } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { EmbersError } from '../errors.js';
import { environment } from '../config.js';
import { isHttpUrl } from '../util/url.js';
import { acquireLock, heldHere } from '../util/lock.js';
import { EmbersNode, type NodeOptions } from '../node/node.js';
import { Lifecycle } from '../node/lifecycle.js';
import { buildApi } from './server.js';

export const DEFAULT_API_PORT = 7070;
export const DEFAULT_API_URL = `http://127.0.0.1:${DEFAULT_API_PORT}`;
const TOKEN_MIN_LENGTH = 16;

export interface DaemonOptions extends NodeOptions {
  /** Address to bind. @default '127.0.0.1' */
  listen?: string;
  /** @default 7070 (0: any free port) */
  port?: number;
  /** API bearer token. @default EMBERS_API_TOKEN; required off loopback */
  token?: string;
  /** Peer-transfer token, for this node's peer routes and for pulling from `peers`. @default EMBERS_PEER_TOKEN; without one the peer routes are off */
  peerToken?: string;
  /** Peer nodes (base URLs) whose snapshots cold starts may restore from; they share the peer token. @default EMBERS_PEERS (comma-separated) */
  peers?: string[];
  /** Largest JSON body. @default 1 MiB */
  bodyLimit?: number;
  /** Largest invocation body. @default 6 MiB */
  invokeBodyLimit?: number;
  /** Record each new snapshot's working set (REAP) with a clone of its own. @default true */
  recordWorkingSets?: boolean;
  /** How long shutdown waits for in-flight requests. @default 30000 */
  drainMs?: number;
  logLevel?: string;
}

export interface Daemon {
  url: string;
  port: number;
  engine: Lifecycle;
  app: FastifyInstance;
  /** Stops accepting, drains, stops instances, releases the lock. */
  close(): Promise<void>;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

export async function startDaemon(opts: DaemonOptions): Promise<Daemon> {
  const host = opts.listen ?? '127.0.0.1';
  const env = environment().daemon;
  const token = opts.token ?? env.apiToken;
  const peerToken = opts.peerToken ?? env.peerToken;
  if (!isLoopback(host) && !token) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      { option: '--listen', value: host, problem: '(not loopback) needs an API token' },
      {
        hint: `set EMBERS_API_TOKEN (${TOKEN_MIN_LENGTH} characters or more); clients send it as Authorization: Bearer <token>`,
      },
    );
  }
  if (token !== undefined && token.length < TOKEN_MIN_LENGTH) {
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'the API token (EMBERS_API_TOKEN)',
      expected: `at least ${TOKEN_MIN_LENGTH} characters`,
    });
  }

  const peers = opts.peers ?? env.peers;
  for (const url of peers) {
    if (!isHttpUrl(url))
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        { option: '--peer', value: url, problem: 'is not an http(s) URL' },
        { hint: 'give each peer as --peer http://HOST:PORT (its embers serve)' },
      );
  }
  if (peers.length > 0 && !peerToken) {
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      {
        option: '--peer',
        value: peers.join(','),
        problem: 'needs the peer token the peers were started with, to pull snapshots from them',
      },
      { hint: 'set EMBERS_PEER_TOKEN (or --peer-token) to the token the peer nodes share' },
    );
  }

  const node = await EmbersNode.open(opts);
  const lock = join(node.config.home, 'daemon', 'serve.lock');
  await takeLock(lock, node.config.home);
  let engine: Lifecycle | undefined;
  let app: FastifyInstance | undefined;
  try {
    engine = await Lifecycle.start({
      node,
      peers: peers.map((url) => ({ url, token: peerToken! })),
      recordWorkingSets: opts.recordWorkingSets,
      log: (level, msg, fields) => app?.log[level](fields ?? {}, msg),
    });
    app = await buildApi({
      engine,
      token,
      peerToken,
      bodyLimit: opts.bodyLimit,
      invokeBodyLimit: opts.invokeBodyLimit,
      logLevel: opts.logLevel,
    });
    await app.listen({ host, port: opts.port ?? DEFAULT_API_PORT });
  } catch (err) {
    await app?.close().catch(() => undefined);
    await engine?.close(0).catch(() => undefined);
    await releaseLock(lock);
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : (opts.port ?? DEFAULT_API_PORT);
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  const started = { engine, app };
  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    engine,
    app,
    close: () =>
      (closing ??= (async () => {
        // stop listening at once; requests in flight go on while the engine drains them
        const appClosed = started.app.close();
        try {
          await started.engine.close(opts.drainMs ?? 30_000);
          started.app.server.closeAllConnections();
          await appClosed;
        } finally {
          await releaseLock(lock);
        }
      })()),
  };
}

async function takeLock(lock: string, home: string): Promise<void> {
  await mkdir(join(lock, '..'), { recursive: true });
  // a lock of a process that is gone (killed) is taken over; released by releaseLock
  await acquireLock(lock, {
    busy: (pid) => EmbersError.of('EMB_NODE_BUSY', { home, lock, pid }),
  });
}

async function releaseLock(lock: string): Promise<void> {
  await rm(lock, { force: true });
  heldHere.delete(lock);
}

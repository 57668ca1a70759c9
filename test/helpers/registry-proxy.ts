/**
 * A loopback HTTP proxy in front of a test registry that logs every request and can cut a
 * response body short: it forwards status and headers (Content-Length included), passes
 * `cut(...)` bytes of the body, then closes the connection, as a flaky network does.
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';

export interface ProxiedRequest {
  method: string;
  url: string;
  range?: string;
  status?: number;
  /** Body bytes passed to the client. */
  bytes: number;
  /** True when the proxy closed the connection before the end of the body. */
  cut: boolean;
}

export interface ProxyOptions {
  /**
   * Bytes of the response body to pass before closing the connection, or undefined to pass it
   * all. `n` counts the requests for the same path so far (1 for the first).
   */
  cut?: (req: { method: string; url: string; n: number; range?: string }) => number | undefined;
  /** Milliseconds to hold a request before forwarding it (to make concurrency visible). */
  delayMs?: (req: { method: string; url: string }) => number;
}

export interface TestProxy {
  host: string;
  requests: ProxiedRequest[];
  /** The most blob requests (`/blobs/` in the path) that were open at once. */
  maxBlobsInFlight(): number;
  stop(): Promise<void>;
}

export async function startProxy(target: string, opts: ProxyOptions = {}): Promise<TestProxy> {
  const requests: ProxiedRequest[] = [];
  const seen = new Map<string, number>();
  const sockets = new Set<Socket>();
  let blobsInFlight = 0;
  let maxBlobs = 0;
  const [targetHost, targetPort] = target.split(':');
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '/';
    const n = (seen.get(url) ?? 0) + 1;
    seen.set(url, n);
    const range = typeof req.headers.range === 'string' ? req.headers.range : undefined;
    const entry: ProxiedRequest = {
      method: req.method ?? 'GET',
      url,
      ...(range ? { range } : {}),
      bytes: 0,
      cut: false,
    };
    requests.push(entry);
    const limit = opts.cut?.({ method: entry.method, url, n, ...(range ? { range } : {}) });
    const headers: IncomingHttpHeaders = { ...req.headers, host: target };
    if (url.includes('/blobs/')) {
      blobsInFlight++;
      maxBlobs = Math.max(maxBlobs, blobsInFlight);
      res.on('close', () => blobsInFlight--);
    }
    const forward = (): void => {
      const upstream = request(
        { host: targetHost, port: Number(targetPort), method: req.method, path: url, headers },
        (up) => {
          entry.status = up.statusCode;
          res.writeHead(up.statusCode ?? 502, up.headers);
          if (limit === undefined) {
            up.on('data', (b: Buffer) => (entry.bytes += b.length));
            up.pipe(res);
            return;
          }
          res.flushHeaders();
          if (limit === 0) {
            entry.cut = true;
            up.destroy();
            res.socket?.end();
            return;
          }
          let passed = 0;
          up.on('data', (chunk: Buffer) => {
            if (entry.cut) return;
            const part = chunk.subarray(0, Math.max(0, limit - passed));
            if (part.length > 0) {
              res.write(part);
              passed += part.length;
              entry.bytes += part.length;
            }
            if (passed >= limit) {
              entry.cut = true;
              up.destroy();
              // flush what was written, then close the connection mid-body
              res.socket?.end();
            }
          });
          up.on('end', () => {
            if (!entry.cut) res.end();
          });
        },
      );
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    };
    const wait = opts.delayMs?.({ method: entry.method, url }) ?? 0;
    if (wait > 0) setTimeout(forward, wait);
    else forward();
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${(server.address() as { port: number }).port}`,
    requests,
    maxBlobsInFlight: () => maxBlobs,
    async stop(): Promise<void> {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

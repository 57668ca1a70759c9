/**
 * A real HTTP proxy on loopback that tests put between embers and a store (the S3 test server,
 * a peer node) to inject faults into chosen requests: connection resets in the middle of a
 * request or response body, error statuses (500, 503 SlowDown with Retry-After), truncated
 * bodies, a wrong ETag, a stalled response. Requests that no rule matches pass through
 * untouched (headers included, so SigV4 signatures still verify). Every request is logged.
 */
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Fault =
  /** Read `afterBytes` of the request body, then reset the connection (a PUT dies mid-part). */
  | { kind: 'reset-request'; afterBytes: number }
  /** Forward, pass `afterBytes` of the response body, then reset the connection (a GET dies mid-range). */
  | { kind: 'reset-response'; afterBytes: number }
  /** Answer `status` without forwarding; `headers` e.g. Retry-After; `body` e.g. an S3 XML error. */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** Forward, but send only the first `bytes` of the response body, with a Content-Length that says so. */
  | { kind: 'truncate'; bytes: number }
  /** Forward, with the first byte of the response body inverted (right length, wrong bytes). */
  | { kind: 'corrupt' }
  /** Forward, but replace the response's ETag with `etag`. */
  | { kind: 'etag'; etag: string }
  /** Forward the response headers and `afterBytes` of the body, then send nothing more (the connection stays open). */
  | { kind: 'stall'; afterBytes: number };

export interface FaultRule {
  /** Which requests: method and a pattern the URL (path and query) must match. */
  method?: string;
  url?: RegExp;
  fault: Fault;
  /** How many matching requests get the fault. @default 1 */
  times?: number;
}

export interface ProxiedRequest {
  method: string;
  url: string;
  /** ms since the proxy started, when the request arrived. */
  at: number;
  fault?: Fault['kind'];
}

export interface FaultProxy {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** Adds a rule; rules are tried in the order added. */
  inject(rule: FaultRule): void;
  /** Rules whose faults have not all been applied yet. */
  pending(): FaultRule[];
  log: ProxiedRequest[];
  close(): Promise<void>;
}

export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const target = new URL(upstream);
  const rules: (FaultRule & { left: number })[] = [];
  const log: ProxiedRequest[] = [];
  const sockets = new Set<Socket>();
  const started = performance.now();

  const forward = (req: IncomingMessage, onResponse: (up: IncomingMessage) => void, onError: () => void) => {
    const up = httpRequest(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      onResponse,
    );
    up.on('error', onError);
    req.pipe(up);
    return up;
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const entry: ProxiedRequest = { method: req.method ?? '', url: req.url ?? '', at: performance.now() - started };
    log.push(entry);
    const rule = rules.find(
      (r) => r.left > 0 && (!r.method || r.method === req.method) && (!r.url || r.url.test(req.url ?? '')),
    );
    const fail = () => res.socket?.destroy();
    if (!rule) {
      forward(
        req,
        (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
        fail,
      );
      return;
    }
    rule.left--;
    const fault = rule.fault;
    entry.fault = fault.kind;
    switch (fault.kind) {
      case 'status': {
        req.resume();
        req.on('end', () => {
          res.writeHead(fault.status, { 'content-type': 'application/xml', ...fault.headers });
          res.end(fault.body ?? '');
        });
        return;
      }
      case 'reset-request': {
        let got = 0;
        req.on('data', (chunk: Buffer) => {
          got += chunk.length;
          if (got >= fault.afterBytes) req.socket.destroy();
        });
        req.on('end', () => res.socket?.destroy());
        return;
      }
      default: {
        forward(
          req,
          (up) => {
            const headers = { ...up.headers };
            if (fault.kind === 'etag' || fault.kind === 'corrupt') {
              if (fault.kind === 'etag') headers.etag = fault.etag;
              res.writeHead(up.statusCode ?? 502, headers);
              let first = fault.kind === 'corrupt';
              up.on('data', (chunk: Buffer) => {
                if (first && chunk.length > 0) {
                  chunk = Buffer.from(chunk);
                  chunk[0] = chunk[0]! ^ 0xff;
                  first = false;
                }
                res.write(chunk);
              });
              up.on('end', () => res.end());
              return;
            }
            if (fault.kind === 'truncate')
              headers['content-length'] = String(
                Math.min(fault.bytes, Number(headers['content-length'] ?? fault.bytes)),
              );
            res.writeHead(up.statusCode ?? 502, headers);
            const limit = fault.kind === 'truncate' ? fault.bytes : fault.afterBytes;
            let sent = 0;
            up.on('data', (chunk: Buffer) => {
              if (sent >= limit) return;
              const part = chunk.subarray(0, (limit as number) - sent);
              sent += part.length;
              res.write(part);
              if (sent < limit) return;
              up.destroy();
              if (fault.kind === 'truncate') res.end();
              else if (fault.kind === 'reset-response') res.socket?.destroy();
              // 'stall': nothing more is sent; the socket stays open until the client gives up
            });
            up.on('end', () => {
              if (sent < limit) res.end();
            });
          },
          fail,
        );
      }
    }
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    log,
    inject(rule) {
      rules.push({ ...rule, left: rule.times ?? 1 });
    },
    pending() {
      return rules.filter((r) => r.left > 0);
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

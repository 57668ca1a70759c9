/**
 * The invoke proxy: /v1/functions/<name>/invoke[/<path>] takes an instance from the lifecycle
 * (node/lifecycle.ts acquire), streams the request to it and its answer back (no body parsing,
 * the body size counted), then gives the instance back. Registered by api/server.ts.
 */
import {
  request as httpRequest,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { FastifyInstance } from 'fastify';
import { EmbersError } from '../errors.js';
import type { Lease, Lifecycle } from '../node/lifecycle.js';
import { sendRawError } from './errors.js';
import { errorRef, nameParams } from './schemas.js';

/** Methods a proxy may send again when the connection failed before any answer (RFC 9110 idempotent, and bodiless here). */
const RETRYABLE = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authorization',
]);
const INVOKE_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'] as const;

const errorRefs = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, errorRef]));

/** Registers the invoke routes; `invokeLimit` is the largest invocation body, bytes. */
export async function registerInvokeRoutes(
  app: FastifyInstance,
  engine: Lifecycle,
  invokeLimit: number,
): Promise<void> {
  // the invoke proxy streams bodies: no parsing in its scope
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_req, _payload, done) => done(null));
    const schema = (suffix: boolean) => ({
      summary: suffix
        ? 'invoke the function with a path: the request is proxied (method, path below /invoke, query, headers, streamed body)'
        : 'invoke the function at / (the request is proxied, streamed both ways)',
      params: {
        type: 'object',
        required: suffix ? ['name', '*'] : ['name'],
        properties: suffix
          ? { ...nameParams.properties, '*': { type: 'string', description: 'the path at the function' } }
          : nameParams.properties,
      },
      response: {
        default: {
          description:
            "the function's answer, streamed; with x-embers-start (warm|restore|boot), x-embers-instance and server-timing (queue and cold-start phases)",
          type: 'string',
        },
        ...errorRefs(401, 404, 413, 429, 502, 503, 504),
      },
    });
    for (const suffix of [false, true]) {
      scope.route<{ Params: { name: string; '*'?: string } }>({
        method: [...INVOKE_METHODS],
        url: suffix ? '/v1/functions/:name/invoke/*' : '/v1/functions/:name/invoke',
        schema: schema(suffix),
        handler: async (req, reply) => {
          const lease = await engine.acquire(req.params.name);
          reply.hijack();
          proxy(req.raw, reply.raw, lease, `/${req.params['*'] ?? ''}`, invokeLimit);
        },
      });
    }
  });
}

/**
 * Streams the request to the instance and its answer back, then gives the instance back
 * (successful when the function answered below 400 and everything was delivered).
 */
function proxy(req: IncomingMessage, res: ServerResponse, lease: Lease, path: string, bodyLimit: number): void {
  const query = req.url?.includes('?') ? req.url.slice(req.url.indexOf('?')) : '';
  const embersHeaders: Record<string, string> = {
    'x-embers-start': lease.start,
    'x-embers-instance': lease.instance.name,
  };
  let done = false;
  const finish = (ok: boolean) => {
    if (done) return;
    done = true;
    lease.release(ok);
  };
  let bodyBytes = 0;
  const send = (retried: boolean): ClientRequest => {
    const { socket, preopened } = lease.connect();
    const upstream = httpRequest(
      {
        createConnection: () => socket,
        method: req.method,
        path: `${path}${query}`,
        headers: {
          ...forwardHeaders(req.headers, req.socket.remoteAddress),
          host: `${lease.instance.cloneIp}:${lease.instance.port}`,
        },
      },
      (up) => {
        const timing = Object.entries(lease.timing).map(([k, v]) => `${k};dur=${v}`);
        const headers: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
        res.writeHead(up.statusCode ?? 502, { ...headers, ...embersHeaders, 'server-timing': timing.join(', ') });
        up.pipe(res);
        up.on('error', () => {
          res.destroy();
          finish(false);
        });
        res.on('finish', () => finish((up.statusCode ?? 500) < 400));
        res.on('close', () => {
          if (!res.writableFinished) up.destroy(); // the client went away: stop reading from the function
          finish(false);
        });
      },
    );
    upstream.on('error', (err) => {
      // a connection opened in advance that the function had closed meanwhile: a request
      // without a body that got no answer is sent once more, on a new connection
      if (
        preopened &&
        !retried &&
        bodyBytes === 0 &&
        req.complete &&
        !res.headersSent &&
        RETRYABLE.has(req.method ?? '')
      ) {
        current = send(true);
        current.end();
        return;
      }
      sendRawError(
        res,
        EmbersError.of('EMB_INSTANCE_INVOKE_FAILED', { name: lease.instance.name, reason: err.message }),
        embersHeaders,
      );
      finish(false);
    });
    return upstream;
  };
  let current = send(false);
  req.on('data', (chunk: Buffer) => {
    bodyBytes += chunk.length;
    if (bodyBytes > bodyLimit) {
      req.unpipe(current);
      current.destroy();
      sendRawError(
        res,
        EmbersError.of('EMB_API_BODY_TOO_LARGE', { limit: bodyLimit, what: 'invocation' }),
        embersHeaders,
      );
      finish(false);
    }
  });
  req.on('aborted', () => {
    current.destroy();
    finish(false);
  });
  req.pipe(current);
}

function forwardHeaders(h: IncomingHttpHeaders, remote: string | undefined): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined || HOP_BY_HOP.has(k) || k === 'authorization' || k === 'host') continue;
    out[k] = v;
  }
  out['x-forwarded-for'] = [h['x-forwarded-for'], remote].filter(Boolean).join(', ');
  out.connection = 'close';
  return out;
}

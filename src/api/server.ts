/**
 * The node's HTTP API (fastify): functions, instances, snapshots, the invoke proxy (api/invoke-proxy.ts), the
 * peer-transfer endpoints, /healthz, /metrics and /openapi.json (generated from the routes'
 * schemas). Thin: every decision is the lifecycle's (node/lifecycle.ts).
 *
 * Auth: when a token is set (it must be, off loopback) every route but /healthz needs
 * `Authorization: Bearer <token>`, compared in constant time. The peer routes
 * (/v1/snapshots/<id>/<file>) check the peer token instead, and GET /v1/snapshots takes either.
 */
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { EmbersError, asEmbersError, isEmbersError } from '../errors.js';
import type { Lifecycle } from '../node/lifecycle.js';
import { peerRequestHandler } from '../snapshot/peer-server.js';
import { bearerTokenCheck } from '../util/bearer.js';
import { errorBody, httpStatusOf } from './errors.js';
import { registerInvokeRoutes } from './invoke-proxy.js';
import { SHARED_SCHEMAS, errorRef, instanceParams, nameParams, noQuery } from './schemas.js';
import { exitCodeOf } from '../guest/agent-protocol.js';

/** What an exec answer keeps of each output stream. */
const EXEC_OUTPUT_LIMIT = 1024 * 1024;

export interface ApiOptions {
  engine: Lifecycle;
  /** Bearer token for the API; required when listening off loopback. */
  token?: string;
  /** Token peers use for the snapshot-transfer routes; without one those routes answer 404. */
  peerToken?: string;
  /** Largest JSON body, bytes. @default 1 MiB */
  bodyLimit?: number;
  /** Largest invocation body, bytes (streamed, counted). @default 6 MiB */
  invokeBodyLimit?: number;
  /** pino log level. @default 'info' */
  logLevel?: string;
  /** Version string reported by /healthz and the OpenAPI document. */
  version?: string;
}

export async function buildApi(opts: ApiOptions): Promise<FastifyInstance> {
  const { engine } = opts;
  const app = Fastify({
    logger: { level: opts.logLevel ?? 'info', stream: process.stderr },
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: opts.bodyLimit ?? 1024 * 1024,
    // validation is strict: no coercion, no silently dropped fields, no defaults filled in
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  for (const s of SHARED_SCHEMAS) app.addSchema(s);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'embers node API',
        version: opts.version ?? '0.1.0',
        description: 'Functions with an automatic snapshot lifecycle, on one embers node',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
  });

  const apiToken = opts.token ? bearerTokenCheck(opts.token) : undefined;
  const peerToken = opts.peerToken ? bearerTokenCheck(opts.peerToken) : undefined;
  const matches = (req: FastifyRequest, check: ((authorization: string | undefined) => boolean) | undefined) =>
    !!check && check(req.headers.authorization);

  app.addHook('onRequest', async (req, reply) => {
    const path = req.url.split('?')[0];
    if (path === '/healthz') return;
    if (path.startsWith('/v1/snapshots/')) return; // the peer handler checks the peer token
    if (path === '/v1/snapshots' && matches(req, peerToken)) return;
    if (apiToken && !matches(req, apiToken)) {
      reply.header('www-authenticate', 'Bearer realm="embers"');
      throw EmbersError.of('EMB_API_AUTH', {});
    }
  });

  app.setErrorHandler((err: FastifyError | EmbersError, req, reply) => {
    let e: EmbersError;
    if (isEmbersError(err)) e = err;
    else if ((err as FastifyError).validation) {
      const ctx = (err as FastifyError).validationContext;
      const code =
        ctx === 'body' && req.method === 'PUT'
          ? 'EMB_FUNCTION_SPEC_INVALID'
          : ctx === 'params'
            ? 'EMB_FUNCTION_SPEC_INVALID'
            : 'EMB_USAGE';
      e = EmbersError.of(code, {
        option: `the request ${ctx ?? ''}`.trim(),
        problem: 'is invalid',
        reason: err.message,
      });
    } else if ((err as FastifyError).code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      e = EmbersError.of('EMB_API_BODY_TOO_LARGE', { limit: opts.bodyLimit ?? 1024 * 1024 });
    } else if ((err as FastifyError).statusCode && (err as FastifyError).statusCode! < 500) {
      e = EmbersError.of('EMB_USAGE', { reason: err.message }, { cause: err });
    } else e = asEmbersError(err);
    if (isEmbersError(e, 'EMB_FUNCTION_QUEUE_FULL'))
      reply.header('retry-after', String(e.details.retryAfterSeconds ?? 1));
    const status = httpStatusOf(e);
    if (status >= 500) req.log.error({ code: e.code, err: e.message }, 'request failed');
    void reply.status(status).send(errorBody(e));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply
      .status(404)
      .send(errorBody(EmbersError.of('EMB_API_ROUTE_NOT_FOUND', { method: req.method, url: req.url.split('?')[0] })));
  });

  const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, errorRef]));

  app.get(
    '/healthz',
    {
      schema: {
        summary: 'liveness: the daemon answers',
        querystring: noQuery,
        security: [],
        response: {
          200: {
            type: 'object',
            properties: { status: { type: 'string' }, functions: { type: 'integer' }, instances: { type: 'integer' } },
          },
        },
      },
    },
    async () => ({ status: 'ok', functions: engine.list().length, instances: engine.instances().length }),
  );

  app.get(
    '/openapi.json',
    {
      schema: {
        summary: 'this API as an OpenAPI 3 document, generated from the route schemas',
        querystring: noQuery,
        response: { 200: { type: 'object', additionalProperties: true }, ...errors(401) },
      },
    },
    async () => app.swagger(),
  );

  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics (text exposition format)',
        querystring: noQuery,
        produces: ['text/plain'],
        response: { 200: { type: 'string', description: 'Prometheus text format 0.0.4' }, ...errors(401) },
      },
    },
    async (_req, reply) => {
      const { contentType, body } = await engine.metrics.text();
      return reply.type(contentType).send(body);
    },
  );

  app.put<{ Params: { name: string }; Body: unknown }>(
    '/v1/functions/:name',
    {
      schema: {
        summary: 'create or update a function; answers with its revision',
        params: nameParams,
        body: { $ref: 'FunctionSpecInput#' },
        response: {
          200: { type: 'object', properties: { changed: { type: 'boolean' }, function: { $ref: 'Function#' } } },
          ...errors(400, 401, 413, 422, 503),
        },
      },
    },
    async (req) => {
      const r = await engine.deploy(req.params.name, req.body);
      return { changed: r.changed, function: r.function };
    },
  );

  app.get(
    '/v1/functions',
    {
      schema: {
        summary: 'list functions',
        querystring: noQuery,
        response: {
          200: { type: 'object', properties: { functions: { type: 'array', items: { $ref: 'Function#' } } } },
          ...errors(401),
        },
      },
    },
    async () => ({ functions: engine.list() }),
  );

  app.get<{ Params: { name: string } }>(
    '/v1/functions/:name',
    {
      schema: {
        summary: 'a function: spec, revision, instances (origin, state) and snapshot state',
        params: nameParams,
        response: { 200: { $ref: 'Function#' }, ...errors(401, 404) },
      },
    },
    async (req) => engine.get(req.params.name),
  );

  app.delete<{ Params: { name: string }; Querystring: { snapshots?: 'delete' | 'keep' } }>(
    '/v1/functions/:name',
    {
      schema: {
        summary: 'remove a function: drains its instances; ?snapshots=delete removes its snapshots too',
        params: nameParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { snapshots: { type: 'string', enum: ['delete', 'keep'] } },
        },
        response: {
          200: {
            type: 'object',
            properties: { removed: { type: 'string' }, removedSnapshots: { type: 'array', items: { type: 'string' } } },
          },
          ...errors(400, 401, 404),
        },
      },
    },
    async (req) => {
      const r = await engine.remove(req.params.name, { deleteSnapshots: req.query.snapshots === 'delete' });
      return { removed: req.params.name, removedSnapshots: r.removedSnapshots };
    },
  );

  app.get(
    '/v1/instances',
    {
      schema: {
        summary: 'the instances this node runs for its functions',
        querystring: noQuery,
        response: {
          200: { type: 'object', properties: { instances: { type: 'array', items: { $ref: 'Instance#' } } } },
          ...errors(401),
        },
      },
    },
    async () => ({ instances: engine.instances() }),
  );

  app.post<{
    Params: { name: string };
    Body: { argv: string[]; shell?: boolean; kitRoot?: boolean; timeoutSeconds?: number };
  }>(
    '/v1/instances/:name/exec',
    {
      schema: {
        summary:
          "run a command in an instance's guest through the guest agent (never the guest network); answers when it ends",
        params: instanceParams,
        body: { $ref: 'ExecRequest#' },
        response: { 200: { $ref: 'ExecResult#' }, ...errors(400, 401, 404, 413, 502, 503) },
      },
    },
    async (req) => {
      const { name } = req.params;
      if (!engine.instances().some((i) => i.name === name)) {
        throw EmbersError.of('EMB_INSTANCE_NOT_FOUND', { name }, { hint: 'GET /v1/instances lists them' });
      }
      const keep = (into: { parts: Buffer[]; size: number; truncated: boolean }) => (b: Buffer) => {
        const room = EXEC_OUTPUT_LIMIT - into.size;
        if (b.length > room) into.truncated = true;
        if (room > 0) into.parts.push(b.subarray(0, room));
        into.size += Math.min(room, b.length);
      };
      const out = { parts: [] as Buffer[], size: 0, truncated: false };
      const err = { parts: [] as Buffer[], size: 0, truncated: false };
      const status = await engine.node.exec(name, {
        argv: req.body.argv,
        shell: req.body.shell,
        kitRoot: req.body.kitRoot,
        timeoutMs: Math.round((req.body.timeoutSeconds ?? 60) * 1000),
        onStdout: keep(out),
        onStderr: keep(err),
      });
      return {
        ...status,
        exitCode: exitCodeOf(status),
        stdout: Buffer.concat(out.parts).toString('utf8'),
        stderr: Buffer.concat(err.parts).toString('utf8'),
        truncated: out.truncated || err.truncated,
      };
    },
  );

  app.get(
    '/v1/snapshots',
    {
      schema: {
        summary: "this node's snapshots (also the peer list: the peer token is accepted here)",
        querystring: noQuery,
        response: {
          200: { type: 'object', properties: { snapshots: { type: 'array', items: { $ref: 'Snapshot#' } } } },
          ...errors(401),
        },
      },
    },
    async () => ({ snapshots: await engine.snapshots() }),
  );

  // peer transfers: the same handler as the standalone peer server, with its own token
  const peer = opts.peerToken
    ? peerRequestHandler({ store: engine.node.snapshots.store, token: opts.peerToken })
    : undefined;
  app.route<{ Params: { id: string; file: string } }>({
    method: ['GET', 'HEAD'],
    url: '/v1/snapshots/:id/:file',
    schema: {
      summary:
        'a snapshot file for a peer node (Range supported; X-Embers-Sha256 holds its digest); peer token required',
      params: {
        type: 'object',
        required: ['id', 'file'],
        properties: { id: { type: 'string' }, file: { type: 'string' } },
      },
      response: {
        200: { type: 'string', format: 'binary', description: 'the file' },
        206: { type: 'string', format: 'binary', description: 'a byte range of the file' },
        ...errors(400, 401, 404, 416),
      },
    },
    handler: async (req, reply) => {
      if (!peer)
        throw EmbersError.of('EMB_API_ROUTE_NOT_FOUND', {
          method: req.method,
          url: req.url.split('?')[0],
          problem: 'this node serves no snapshots to peers: start it with EMBERS_PEER_TOKEN',
        });
      reply.hijack();
      await peer(req.raw, reply.raw);
    },
  });

  await registerInvokeRoutes(app, engine, opts.invokeBodyLimit ?? 6 * 1024 * 1024);
  return app;
}

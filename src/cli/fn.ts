/**
 * `embers fn deploy|ls|inspect|rm|invoke`: thin clients of the node daemon's API
 * (EMBERS_API, default http://127.0.0.1:7070; EMBERS_API_TOKEN as the bearer token).
 */
import { resolve } from 'node:path';
import { environment, parseDurationMs } from '../config.js';
import { EmbersError, type ErrorCode } from '../errors.js';
import { DEFAULT_API_URL } from '../api/daemon.js';
import { exists } from '../util/fs.js';
import { intOption, parse } from './args.js';
import { COMMANDS } from './commands.js';
import type { Output } from './output.js';

export const FN_USAGE = `usage: embers fn <command>  (a client of \`embers serve\`: EMBERS_API, default ${DEFAULT_API_URL})

  deploy <name> <image> [--vcpus 1] [--memory 256] [--port 8080] [--env K=V]... [--min 0] [--max 10]
         [--concurrency 1] [--idle-timeout 60s] [--snapshots disabled|local|remote]
         [--snapshot-when first-invocation|ready] [--max-queue 100] [--request-timeout 60s]
                          create or update a function (a new revision when anything changed)
  ls                      functions, their revision, instances and snapshot state
  inspect <name>          spec, revision, instances and snapshot of one function
  rm <name> [--delete-snapshots]
                          drain and remove a function (and its snapshots)
  invoke <name> [--path /] [--data TEXT] [--method GET] [--header K:V]...
                          one request through the daemon; prints the answer
`;

interface ApiAnswer {
  status: number;
  headers: Headers;
  text: string;
}

async function call(
  method: string,
  path: string,
  body?: unknown,
  extra: { headers?: Record<string, string>; raw?: string } = {},
): Promise<ApiAnswer> {
  const env = environment().daemon;
  const base = (env.apiUrl ?? DEFAULT_API_URL).replace(/\/+$/, '');
  const headers: Record<string, string> = { ...extra.headers };
  if (env.apiToken) headers.authorization = `Bearer ${env.apiToken}`;
  let payload: string | undefined = extra.raw;
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, { method, headers, body: payload });
  } catch (err) {
    const cause = (err as Error & { cause?: Error }).cause;
    throw EmbersError.of(
      'EMB_API_UNREACHABLE',
      { api: base, reason: cause?.message ?? (err as Error).message },
      { cause: err },
    );
  }
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** The API's error answer as an EmbersError with the same code, message and hint. */
function apiError(a: ApiAnswer): EmbersError {
  try {
    const e = (JSON.parse(a.text) as { error: { code: ErrorCode; message: string; hint: string } }).error;
    return EmbersError.received(e.code, e.message, { status: a.status }, { hint: e.hint });
  } catch {
    return EmbersError.of('EMB_INTERNAL', {
      problem: `the daemon answered ${a.status}: ${a.text.slice(0, 200)}`,
      status: a.status,
    });
  }
}

async function json<T>(method: string, path: string, body?: unknown): Promise<T> {
  const a = await call(method, path, body);
  if (a.status >= 400) throw apiError(a);
  return JSON.parse(a.text) as T;
}

interface FunctionView {
  name: string;
  spec: { image: string; memoryMiB: number; minInstances: number; maxInstances: number };
  revision: { id: string };
  instances: { name: string; origin: string; state: string }[];
  queued: number;
  snapshot: { state: string; id?: string };
}

export async function fnCommand(argv: string[], out: Output): Promise<number> {
  const { values, positionals } = parse(argv, COMMANDS.fn.options);
  const [sub, name, image] = positionals;
  const need = (what: string, v: string | undefined) => {
    if (!v) throw EmbersError.of('EMB_USAGE', { usage: `embers fn ${sub} <${what}>\n\n${FN_USAGE}` });
    return v;
  };
  switch (sub) {
    case 'deploy': {
      need('name', name);
      let ref = need('image', image);
      if (await exists(ref)) ref = resolve(ref); // a local layout: the daemon runs elsewhere
      const spec: Record<string, unknown> = { image: ref };
      const ints: [string, string, number][] = [
        ['vcpus', 'vcpus', 1],
        ['memory', 'memoryMiB', 64],
        ['port', 'port', 1],
        ['min', 'minInstances', 0],
        ['max', 'maxInstances', 1],
        ['concurrency', 'concurrency', 1],
        ['max-queue', 'maxQueue', 0],
      ];
      for (const [flag, field, min] of ints) {
        const v = values[flag as keyof typeof values] as string | undefined;
        if (v !== undefined) spec[field] = intOption(v, flag, 0, min);
      }
      if (values.env) spec.env = values.env;
      if (values['idle-timeout'])
        spec.idleTimeoutSeconds = parseDurationMs(values['idle-timeout'], '--idle-timeout') / 1000;
      if (values['request-timeout'])
        spec.requestTimeoutSeconds = parseDurationMs(values['request-timeout'], '--request-timeout') / 1000;
      if (values.snapshots) spec.snapshots = values.snapshots;
      if (values['snapshot-when']) spec.snapshotWhen = values['snapshot-when'];
      const r = await json<{ changed: boolean; function: FunctionView }>(
        'PUT',
        `/v1/functions/${encodeURIComponent(name)}`,
        spec,
      );
      out.result(`${r.function.name}\t${r.function.revision.id}\t${r.changed ? 'deployed' : 'unchanged'}`, r);
      return 0;
    }
    case 'ls': {
      const r = await json<{ functions: FunctionView[] }>('GET', '/v1/functions');
      const lines = [
        'NAME\tREVISION\tINSTANCES\tQUEUED\tSNAPSHOT\tIMAGE',
        ...r.functions.map(
          (f) =>
            `${f.name}\t${f.revision.id}\t${f.instances.length}\t${f.queued}\t${f.snapshot.state}${f.snapshot.id ? ` ${f.snapshot.id}` : ''}\t${f.spec.image}`,
        ),
      ];
      out.result(lines.join('\n'), r);
      return 0;
    }
    case 'inspect': {
      const r = await json<FunctionView>('GET', `/v1/functions/${encodeURIComponent(need('name', name))}`);
      out.result(JSON.stringify(r, null, 2), r);
      return 0;
    }
    case 'rm': {
      const q = values['delete-snapshots'] ? '?snapshots=delete' : '';
      const r = await json<{ removed: string; removedSnapshots: string[] }>(
        'DELETE',
        `/v1/functions/${encodeURIComponent(need('name', name))}${q}`,
      );
      out.result(
        `removed ${r.removed}${r.removedSnapshots.length ? ` and snapshots ${r.removedSnapshots.join(', ')}` : ''}`,
        r,
      );
      return 0;
    }
    case 'invoke': {
      const fn = encodeURIComponent(need('name', name));
      const path = values.path ?? '/';
      if (!path.startsWith('/'))
        throw EmbersError.of('EMB_USAGE', { option: '--path', value: path, expected: 'a path starting with /' });
      const headers: Record<string, string> = {};
      for (const h of values.header ?? []) {
        const colon = h.indexOf(':');
        if (colon <= 0) throw EmbersError.of('EMB_USAGE', { option: '--header', value: h, expected: 'NAME:VALUE' });
        headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
      }
      const method = values.method ?? (values.data === undefined ? 'GET' : 'POST');
      const t0 = performance.now();
      const a = await call(method, `/v1/functions/${fn}/invoke${path === '/' ? '' : path}`, undefined, {
        headers,
        raw: values.data,
      });
      const latencyMs = Math.round((performance.now() - t0) * 10) / 10;
      if (a.status >= 400 && a.headers.get('x-embers-instance') === null) throw apiError(a);
      out.result(a.text.replace(/\n$/, ''), {
        status: a.status,
        body: a.text,
        start: a.headers.get('x-embers-start'),
        instance: a.headers.get('x-embers-instance'),
        serverTiming: a.headers.get('server-timing'),
        latencyMs,
      });
      return a.status < 400 ? 0 : 1;
    }
    default:
      throw EmbersError.of('EMB_USAGE', { usage: FN_USAGE.replace(/^usage: /, '') });
  }
}

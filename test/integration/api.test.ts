import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { exists } from '../../src/util/fs.js';
import { filesBelow, leakedSince, readHostResources } from '../helpers/leaks.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { repoPath } from '../helpers/repo.js';
import { buildTestFunctionImage } from '../../src/examples/test-function.js';
import { run } from '../../src/util/exec.js';

/** `embers fn …` against a daemon: exit code and the JSON object of its last line. */
async function fn(api: string, ...args: string[]): Promise<{ code: number; json: any }> {
  // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await run(process.execPath, [repoPath('bin/embers.js'), 'fn', ...args, '--json'], {
    okCodes: [0, 1, 64, 65, 66, 69, 70, 75, 77],
    env: { ...process.env, EMBERS_API: api },
  });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  return { code: r.code, json: JSON.parse(last) };
}

/** Prometheus text format 0.0.4, strictly enough to catch a broken exposition: every sample belongs to a declared family. */
function parsePrometheus(text: string): Map<string, { type: string; samples: { labels: string; value: number }[] }> {
  const families = new Map<string, { type: string; samples: { labels: string; value: number }[] }>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const typeLine = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (typeLine) {
      families.set(typeLine[1], { type: typeLine[2], samples: [] });
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const m =
      /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(
        line,
      );
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    const family = [...families.keys()].find(
      (f) => m[1] === f || (/_(bucket|sum|count)$/.test(m[1]) && m[1].replace(/_(bucket|sum|count)$/, '') === f),
    );
    assert.ok(family, `sample ${m[1]} has no # TYPE line`);
    families.get(family)!.samples.push({ labels: m[2] ?? '', value: Number(m[3]) });
  }
  return families;
}

async function stopAndCheck(d: TestDaemon, before: Awaited<ReturnType<typeof readHostResources>>): Promise<void> {
  assert.equal(await d.stop(), 0, `embers serve exit code; log:\n${d.log()}`);
  assert.deepEqual(await filesBelow(`${d.home}/instances`), []);
  assert.deepEqual(await filesBelow(`${d.home}/daemon/owned`), [], 'ownership marks left');
  assert.equal(await exists(`${d.home}/daemon/serve.lock`), false, 'the daemon lock is left');
  assert.deepEqual(await leakedSince(before), {});
  await rm(d.home, { recursive: true, force: true });
}

test('API without guests: errors, bad specs, unknown functions, OpenAPI from the route schemas, metrics, one daemon per home', async () => {
  const before = await readHostResources();
  const d = await startTestDaemon();
  try {
    // errors are {error:{code,message,hint}} with fitting statuses
    const unknown = await d.api('GET', '/v1/functions/nope');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error.code, 'EMB_FUNCTION_NOT_FOUND');
    assert.ok(unknown.json.error.message && unknown.json.error.hint);
    const unknownInvoke = await d.api('POST', '/v1/functions/nope/invoke/x?y=1', 'data');
    assert.equal(unknownInvoke.status, 404);
    assert.equal(unknownInvoke.json.error.code, 'EMB_FUNCTION_NOT_FOUND');
    const noRoute = await d.api('GET', '/v2/whatever');
    assert.equal(noRoute.status, 404);
    assert.equal(noRoute.json.error.code, 'EMB_API_ROUTE_NOT_FOUND');

    // bad specs: 400 with the code, whether the schema or the node's own check finds it
    for (const [name, body] of [
      ['ok-name', { image: '/x', memoryMiB: 1 }],
      ['ok-name', { image: '/x', memoryMiB: '256' }],
      ['ok-name', { image: '/x', surprise: true }],
      ['ok-name', {}],
      ['ok-name', { image: '/x', minInstances: 5, maxInstances: 2 }],
      ['Bad_Name', { image: '/x' }],
    ] as const) {
      const r = await d.api('PUT', `/v1/functions/${name}`, body);
      assert.equal(r.status, 400, `${name} ${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.json.error.code, 'EMB_FUNCTION_SPEC_INVALID', r.text);
    }
    const notJson = await d.api('PUT', '/v1/functions/ok-name', '{"image":', { 'content-type': 'application/json' });
    assert.equal(notJson.status, 400);
    const tooBig = await d.api('PUT', '/v1/functions/ok-name', { image: 'x'.repeat(2 * 1024 * 1024) });
    assert.equal(tooBig.status, 413);
    assert.equal(tooBig.json.error.code, 'EMB_API_BODY_TOO_LARGE');
    // an image that does not exist is the client's problem, not the node's
    const noImage = await d.api('PUT', '/v1/functions/ok-name', { image: '/nonexistent/layout' });
    assert.ok(noImage.status >= 400 && noImage.status < 500, noImage.text);
    assert.deepEqual((await d.api('GET', '/v1/functions')).json, { functions: [] });

    // the OpenAPI document is generated from the routes: every route is in it, each with request and response schemas
    const doc = (await d.api('GET', '/openapi.json')).json;
    assert.match(doc.openapi, /^3\./);
    const expected: [string, string][] = [
      ['put', '/v1/functions/{name}'],
      ['get', '/v1/functions'],
      ['get', '/v1/functions/{name}'],
      ['delete', '/v1/functions/{name}'],
      ['get', '/v1/instances'],
      ['post', '/v1/instances/{name}/exec'],
      ['get', '/v1/snapshots'],
      ['get', '/v1/snapshots/{id}/{file}'],
      ['head', '/v1/snapshots/{id}/{file}'],
      ['post', '/v1/functions/{name}/invoke'],
      ['get', '/v1/functions/{name}/invoke/{*}'],
      ['get', '/healthz'],
      ['get', '/metrics'],
      ['get', '/openapi.json'],
    ];
    const listed = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m} ${p}`),
    );
    for (const [method, path] of expected)
      assert.ok(listed.includes(`${method} ${path}`), `${method} ${path} is missing from ${listed.join(', ')}`);
    for (const [path, ops] of Object.entries(
      doc.paths as Record<
        string,
        Record<string, { parameters?: unknown[]; requestBody?: unknown; responses?: Record<string, unknown> }>
      >,
    )) {
      for (const [method, op] of Object.entries(ops)) {
        const hasRequest =
          (op.parameters?.length ?? 0) > 0 ||
          op.requestBody !== undefined ||
          ['/v1/functions', '/v1/instances', '/v1/snapshots', '/healthz', '/metrics', '/openapi.json'].includes(path);
        assert.ok(hasRequest, `${method} ${path} has no request schema`);
        assert.ok(op.responses && Object.keys(op.responses).length > 0, `${method} ${path} has no response schema`);
        for (const [status, resp] of Object.entries(op.responses)) {
          const content = (resp as { content?: Record<string, { schema?: unknown }> }).content;
          assert.ok(content && Object.values(content).every((c) => c.schema), `${method} ${path} ${status}: no schema`);
        }
      }
    }
    assert.ok(
      doc.paths['/v1/functions/{name}'].put.requestBody.content['application/json'].schema,
      'the spec body schema',
    );

    // exec: an instance this daemon does not run is 404, a bad command 400, before any guest is asked
    const noInstance = await d.api('POST', '/v1/instances/nope/exec', { argv: ['true'] });
    assert.equal(noInstance.status, 404, noInstance.text);
    assert.equal(noInstance.json.error.code, 'EMB_INSTANCE_NOT_FOUND');
    for (const body of [{}, { argv: [] }, { argv: ['ls'], timeoutSeconds: 0 }, { argv: ['ls'], extra: 1 }]) {
      const bad = await d.api('POST', '/v1/instances/nope/exec', body);
      assert.equal(bad.status, 400, `${JSON.stringify(body)}: ${bad.text}`);
    }

    // metrics parse as Prometheus text and have the families the issue asks for
    const metrics = await d.api('GET', '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.headers.get('content-type') ?? '', /text\/plain/);
    const families = parsePrometheus(metrics.text);
    for (const [name, type] of [
      ['embers_cold_start_seconds', 'histogram'],
      ['embers_boot_phase_seconds', 'histogram'],
      ['embers_restore_phase_seconds', 'histogram'],
      ['embers_invocations_total', 'counter'],
      ['embers_instances', 'gauge'],
      ['embers_snapshot_create_seconds', 'histogram'],
      ['embers_snapshot_transfer_bytes_total', 'counter'],
      ['embers_network_free_slots', 'gauge'],
    ]) {
      assert.equal(families.get(name)?.type, type, `${name} (${type}) in\n${metrics.text}`);
    }
    assert.equal(families.get('embers_network_free_slots')!.samples.length, 1);

    assert.deepEqual((await d.api('GET', '/healthz')).json, { status: 'ok', functions: 0, instances: 0 });

    // the fn commands are thin clients: same codes, exit codes from the catalogue
    assert.deepEqual((await fn(d.url, 'ls')).json, { functions: [] });
    const image = await buildTestFunctionImage(`${d.home}/fn`);
    const deployed = await fn(
      d.url,
      'deploy',
      'cli-fn',
      image,
      '--memory',
      '128',
      '--idle-timeout',
      '30s',
      '--max',
      '2',
      '--env',
      'A=1',
    );
    assert.equal(deployed.code, 0, JSON.stringify(deployed.json));
    assert.equal(deployed.json.changed, true);
    assert.deepEqual(
      [
        deployed.json.function.spec.memoryMiB,
        deployed.json.function.spec.idleTimeoutSeconds,
        deployed.json.function.spec.maxInstances,
        deployed.json.function.spec.env,
      ],
      [128, 30, 2, ['A=1']],
    );
    assert.equal((await fn(d.url, 'inspect', 'cli-fn')).json.revision.id, deployed.json.function.revision.id);
    assert.deepEqual(
      (await fn(d.url, 'ls')).json.functions.map((f: { name: string }) => f.name),
      ['cli-fn'],
    );
    const bad = await fn(d.url, 'deploy', 'cli-fn', image, '--memory', '32');
    assert.equal(bad.code, 64, 'usage error before any request');
    const badSpec = await fn(d.url, 'deploy', 'cli-fn', image, '--snapshot-when', 'never');
    assert.equal(badSpec.json.error.code, 'EMB_FUNCTION_SPEC_INVALID');
    assert.equal(badSpec.code, 65);
    const missing = await fn(d.url, 'invoke', 'nope');
    assert.equal(missing.json.error.code, 'EMB_FUNCTION_NOT_FOUND');
    assert.equal(missing.code, 66);
    // a function that fails to start answers 502 with the EMB code of what failed (here: its image is gone)
    await rm(image, { recursive: true, force: true });
    const failed = await d.api('GET', '/v1/functions/cli-fn/invoke');
    assert.equal(failed.status, 502, failed.text);
    assert.match(failed.json.error.code, /^EMB_IMAGE_/);
    assert.match(failed.json.error.message, /cli-fn failed to start/);
    assert.deepEqual(
      (await d.api('GET', '/v1/functions/cli-fn')).json.instances,
      [],
      'nothing left of the failed start',
    );
    assert.equal((await fn(d.url, 'rm', 'cli-fn')).json.removed, 'cli-fn');
    assert.equal((await fn(d.url, 'inspect', 'cli-fn')).json.error.code, 'EMB_FUNCTION_NOT_FOUND');
    const down = await fn('http://127.0.0.1:9', 'ls');
    assert.equal(down.json.error.code, 'EMB_API_UNREACHABLE');
    assert.equal(down.code, 69);

    // one daemon per home
    const second = await startTestDaemon({ home: d.home }).then(
      async (other) => {
        await other.stop();
        return undefined;
      },
      (err: Error) => err,
    );
    assert.match(String(second?.message), /EMB_NODE_BUSY/);
  } finally {
    await stopAndCheck(d, before);
  }
});

test('API off loopback: refused without a token; with one, every route but /healthz needs it (constant-time compare)', async () => {
  const before = await readHostResources();
  const refused = await startTestDaemon({ args: ['--listen', '0.0.0.0'], env: { EMBERS_API_TOKEN: undefined } }).then(
    async (d) => {
      await d.stop();
      await rm(d.home, { recursive: true, force: true });
      return undefined;
    },
    (err: Error) => err,
  );
  assert.match(String(refused?.message), /EMB_CONFIG_INVALID/);
  assert.match(String(refused?.message), /token/);

  const token = randomBytes(16).toString('hex');
  const peerToken = randomBytes(16).toString('hex');
  const d = await startTestDaemon({
    args: ['--listen', '0.0.0.0'],
    env: { EMBERS_API_TOKEN: token, EMBERS_PEER_TOKEN: peerToken },
  });
  try {
    const url = d.url.replace('0.0.0.0', '127.0.0.1');
    const get = (path: string, auth?: string) =>
      fetch(`${url}${path}`, { headers: auth ? { authorization: auth } : {} });
    const exec = await fetch(`${url}/v1/instances/x/exec`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"argv":["id"]}',
    });
    assert.equal(exec.status, 401, 'exec needs the API token');
    for (const path of ['/v1/functions', '/v1/instances', '/metrics', '/openapi.json']) {
      const none = await get(path);
      assert.equal(none.status, 401, path);
      assert.equal(((await none.json()) as { error: { code: string } }).error.code, 'EMB_API_AUTH');
      assert.equal((await get(path, `Bearer ${token.slice(0, -1)}x`)).status, 401, `${path} with a wrong token`);
      assert.equal((await get(path, `Bearer ${peerToken}`)).status, 401, `${path} with the peer token`);
      assert.equal((await get(path, `Bearer ${token}`)).status, 200, `${path} with the token`);
    }
    assert.equal((await get('/healthz')).status, 200);
    // the peer routes keep their own token
    assert.equal((await get('/v1/snapshots', `Bearer ${peerToken}`)).status, 200);
    assert.equal((await get('/v1/snapshots/snap-0123456789abcdef/manifest.json', `Bearer ${token}`)).status, 401);
    assert.equal((await get('/v1/snapshots/snap-0123456789abcdef/manifest.json', `Bearer ${peerToken}`)).status, 404);
  } finally {
    await stopAndCheck(d, before);
  }
});

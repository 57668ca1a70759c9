import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { FirecrackerClient } from '../../src/vmm/firecracker/client.js';

async function withServer(
  handler: Parameters<typeof createServer>[1],
  body: (socket: string) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'embers-fc-client-'));
  const socket = join(dir, 'api.sock');
  const server = createServer(handler);
  await new Promise<void>((r) => server.listen(socket, r));
  try {
    await body(socket);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  }
}

test('client: sends a Content-Length body (micro_http reads no chunked requests), fills path params, parses 200 and 204', async () => {
  const seen: { method?: string; url?: string; headers: IncomingHttpHeaders; body: string }[] = [];
  await withServer(
    (req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        seen.push({ method: req.method, url: req.url, headers: req.headers, body });
        if (req.method === 'GET') {
          res.writeHead(200, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify({ firecracker_version: '1.16.1' }));
        } else {
          res.writeHead(204);
          res.end();
        }
      });
    },
    async (socket) => {
      const c = new FirecrackerClient(socket);
      assert.deepEqual(await c.call('GET /version', {}), { firecracker_version: '1.16.1' });
      assert.equal(
        await c.call('PUT /drives/{drive_id}', {
          params: { drive_id: 'vda' },
          body: { drive_id: 'vda', is_root_device: false, path_on_host: '/d', is_read_only: false },
        }),
        undefined,
      );
    },
  );
  assert.equal(seen[1].method, 'PUT');
  assert.equal(seen[1].url, '/drives/vda');
  assert.equal(seen[1].headers['content-length'], String(Buffer.byteLength(seen[1].body)));
  assert.equal(seen[1].headers['transfer-encoding'], undefined);
  assert.equal(seen[1].headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(seen[1].body), {
    drive_id: 'vda',
    is_root_device: false,
    path_on_host: '/d',
    is_read_only: false,
  });
  assert.equal(seen[0].headers['content-length'], undefined, 'a GET has no body');
});

test('client: a call that gets no answer times out (EMB_VMM_TIMEOUT), per call', async () => {
  await withServer(
    () => {
      /* never answers */
    },
    async (socket) => {
      const c = new FirecrackerClient(socket, { timeoutMs: 5000 });
      const t0 = Date.now();
      await assert.rejects(
        c.call('GET /', { timeoutMs: 150 }),
        (e) => isEmbersError(e, 'EMB_VMM_TIMEOUT') && e.details.method === 'GET' && e.details.path === '/',
      );
      assert.ok(Date.now() - t0 < 2000);
    },
  );
});

test('client: no socket is EMB_VMM_API_UNREACHABLE; a 400 is EMB_VMM_API_FAULT with fault_message', async () => {
  await assert.rejects(
    new FirecrackerClient('/nonexistent/api.sock').call('GET /', {}),
    (e) => isEmbersError(e, 'EMB_VMM_API_UNREACHABLE') && e.details.errno === 'ENOENT',
  );
  await withServer(
    (_req, res) => {
      res.writeHead(400, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({ fault_message: 'The requested operation is not supported before starting the microVM.' }),
      );
    },
    async (socket) => {
      await assert.rejects(new FirecrackerClient(socket).call('PATCH /vm', { body: { state: 'Paused' } }), (e) => {
        assert.ok(isEmbersError(e, 'EMB_VMM_API_FAULT'));
        assert.deepEqual([e.details.method, e.details.path, e.details.statusCode], ['PATCH', '/vm', 400]);
        assert.equal(e.details.faultMessage, 'The requested operation is not supported before starting the microVM.');
        return true;
      });
    },
  );
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImageStore } from '../../src/image/store.js';
import {
  buildTestFunctionImage,
  expectedBytes,
  expectedLine,
  GENERATOR_AWK,
  TEST_FUNCTION_REF_NAME,
} from '../../src/examples/test-function.js';
import { catImage, lsImage, statImage, tempDir } from './image-helpers.js';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        res(true);
      });
      s.on('error', () => res(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('the generator: host expectedBytes() equals busybox awk output', () => {
  for (const [seed, size] of [
    ['s1', 0],
    ['s1', 5],
    ['a', 8],
    ['b', 4099],
    ['clone-1', 100_000],
    [42, 17],
  ] as const) {
    const h = spawnSync('busybox', ['sha256sum'], { input: String(seed) }).stdout.toString();
    const r = spawnSync('busybox', ['awk', '-v', `h=${h}`, '-v', `n=${size}`, GENERATOR_AWK], { maxBuffer: 1 << 26 });
    assert.equal(r.status, 0, r.stderr.toString());
    assert.deepEqual(r.stdout, expectedBytes(seed, size), `seed ${seed} size ${size}`);
  }
});

test('the test function image builds deterministically and its rootfs holds busybox and the CGI scripts', async (t) => {
  const base = await tempDir(t, 'tf');
  const ref = await buildTestFunctionImage(join(base, 'layout'));
  await buildTestFunctionImage(join(base, 'layout2'));
  assert.equal(
    await readFile(join(base, 'layout2', 'index.json'), 'utf8'),
    await readFile(join(ref, 'index.json'), 'utf8'),
  );
  assert.match(await readFile(join(ref, 'index.json'), 'utf8'), new RegExp(TEST_FUNCTION_REF_NAME));

  const started = Date.now();
  const img = await new ImageStore(join(base, 'images'), join(base, 'tmp')).ensure(ref);
  t.diagnostic(
    `flattened the test function in ${Date.now() - started} ms (${img.sizeBytes} bytes, sha256 ${img.rootfsSha256})`,
  );
  assert.deepEqual(img.config.entrypoint, ['/bin/busybox', 'httpd', '-f', '-v', '-p', '8080', '-h', '/www']);
  assert.deepEqual(img.config.exposedPorts, ['8080/tcp']);
  assert.deepEqual(img.config.env, ['PATH=/bin']);

  const p = img.rootfsPath;
  const busybox = statImage(p, '/bin/busybox');
  assert.equal(busybox.mode & 0o7777, 0o755);
  assert.equal(busybox.size, (await readFile('/bin/busybox')).length);
  assert.match(statImage(p, '/bin/sh').raw, /Fast link dest: "busybox"/);
  assert.deepEqual(
    lsImage(p, '/www/cgi-bin').map((e) => [e.name, e.mode & 0o7777]),
    [
      ['delete', 0o755],
      ['dropcaches', 0o755],
      ['files', 0o755],
      ['read', 0o755],
      ['rename', 0o755],
      ['write', 0o755],
    ],
  );
  for (const cgi of ['delete', 'dropcaches', 'files', 'read', 'rename', 'write'])
    assert.match(catImage(p, `/www/cgi-bin/${cgi}`).toString(), /^#!\/bin\/sh\n/);
  assert.equal(catImage(p, '/www/index.html').toString(), 'hello from embers\n');
  assert.equal(statImage(p, '/data').type, 'directory');
  assert.equal(statImage(p, '/tmp').mode & 0o7777, 0o1777);

  // Run it: the rootfs content, chrooted, served by its own busybox httpd.
  const root = join(base, 'root');
  const dump = spawnSync('bash', ['-c', `mkdir -p "${root}" && debugfs -R 'rdump / ${root}' "${p}"`]);
  assert.equal(dump.status, 0, dump.stderr.toString());
  const port = await freePort();
  const httpd = spawn('chroot', [root, '/bin/busybox', 'httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', '/www'], {
    stdio: 'ignore',
  });
  t.after(() => {
    httpd.kill('SIGKILL');
  });
  await waitForPort(port, 5000);
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: res.status, body: await res.text() };
  };
  assert.deepEqual(await get('/'), { status: 200, body: 'hello from embers\n' });
  assert.deepEqual(await get('/cgi-bin/write?name=b.bin&size=100000&seed=s1&sync=1'), {
    status: 200,
    body: `${expectedLine('b.bin', 's1', 100000)}\n`,
  });
  assert.deepEqual(await get('/cgi-bin/write?name=a&size=13&seed=7&sync=0'), {
    status: 200,
    body: `${expectedLine('a', 7, 13)}\n`,
  });
  assert.deepEqual(await get('/cgi-bin/write?name=empty&size=0&seed=x'), {
    status: 200,
    body: `${expectedLine('empty', 'x', 0)}\n`,
  });
  assert.deepEqual(await get('/cgi-bin/read?name=b.bin'), {
    status: 200,
    body: `${expectedLine('b.bin', 's1', 100000)}\n`,
  });
  assert.deepEqual(await get('/cgi-bin/read?name=nope'), { status: 404, body: 'missing nope\n' });
  assert.deepEqual(await get('/cgi-bin/files'), {
    status: 200,
    body: `${expectedLine('a', 7, 13)}\n${expectedLine('b.bin', 's1', 100000)}\n${expectedLine('empty', 'x', 0)}\n`,
  });
  assert.deepEqual(await readFile(join(root, 'data', 'b.bin')), expectedBytes('s1', 100000));
  assert.deepEqual(await get('/cgi-bin/rename?from=a&to=b.bin&sync=1'), {
    status: 200,
    body: `${expectedLine('b.bin', 7, 13)}\n`,
  });
  assert.deepEqual(await get('/cgi-bin/read?name=a'), { status: 404, body: 'missing a\n' });
  assert.deepEqual(await get('/cgi-bin/rename?from=a&to=c'), { status: 404, body: 'missing a\n' });
  assert.deepEqual(await get('/cgi-bin/delete?name=empty'), { status: 200, body: 'deleted empty\n' });
  assert.deepEqual(await get('/cgi-bin/delete?name=empty'), { status: 404, body: 'missing empty\n' });
  assert.deepEqual(await get('/cgi-bin/files'), { status: 200, body: `${expectedLine('b.bin', 7, 13)}\n` });
  assert.equal((await get('/cgi-bin/rename?from=b.bin&to=../x')).status, 400);
  assert.equal((await get('/cgi-bin/delete?name=../etc/passwd')).status, 400);
  assert.equal((await get('/cgi-bin/write?name=../etc/x&size=1&seed=1')).status, 400);
  assert.equal((await get('/cgi-bin/write?name=ok&size=1e3&seed=1')).status, 400);
  assert.equal((await get('/cgi-bin/read?name=.hidden')).status, 400);
  assert.deepEqual(await readFile(join(root, 'data', 'b.bin')), expectedBytes(7, 13));
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import { buildTestFunctionImage, expectedFileSha256, reportedSha256 } from '../../src/examples/test-function.js';
import { filesBelow, leakedSince, readHostResources } from '../helpers/leaks.js';
import { openTestNode } from '../helpers/node.js';

const BIN = new URL('../../../bin/embers.js', import.meta.url).pathname;

/** Runs the embers CLI with --json and returns the last line parsed. */
function cli(home: string, args: string[]): Promise<{ code: number; json: Record<string, unknown>; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args, '--home', home, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      try {
        resolve({ code: code ?? 1, json: JSON.parse(last) as Record<string, unknown>, stderr: err });
      } catch {
        reject(new Error(`embers ${args.join(' ')} printed no JSON last line (exit ${code}):\n${out}\n${err}`));
      }
    });
  });
}

test('CLI: run boots the function from its OCI image, invoke/ps/logs work, stop releases everything', async () => {
  const before = await readHostResources();
  const home = await mkdtemp(join(tmpdir(), 'embers-cli-'));
  try {
    const image = await buildTestFunctionImage(join(home, 'fn'));
    const run = await cli(home, ['run', image, '--name', 'hello', '--memory', '128']);
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.json.name, 'hello');
    assert.match(String(run.json.cloneIp), /^10\.\d+\.\d+\.\d+$/);
    assert.ok(['kvm', 'tcg'].includes(String(run.json.accelerator)));

    const hello = await cli(home, ['invoke', 'hello', '--path', '/']);
    assert.equal(hello.code, 0, hello.stderr);
    assert.equal(String(hello.json.body).trim(), 'hello from embers');

    const wrote = await cli(home, [
      'invoke',
      'hello',
      '--path',
      '/cgi-bin/write?name=a.bin&size=100000&seed=s1&sync=1',
    ]);
    assert.equal(reportedSha256(String(wrote.json.body)), expectedFileSha256('s1', 100000));
    const read = await cli(home, ['invoke', 'hello', '--path', '/cgi-bin/read?name=a.bin']);
    assert.equal(reportedSha256(String(read.json.body)), expectedFileSha256('s1', 100000));

    const ps = await cli(home, ['ps']);
    const instances = ps.json.instances as { name: string; status: string }[];
    assert.deepEqual(
      instances.map((i) => [i.name, i.status]),
      [['hello', 'running']],
    );
    const logs = await cli(home, ['logs', 'hello']);
    assert.match(String(logs.json.console), /embers-init/);

    const stop = await cli(home, ['stop', 'hello']);
    assert.deepEqual(stop.json.stopped, ['hello']);
    const down = await cli(home, ['down']);
    assert.equal(down.code, 0);
    assert.deepEqual(await filesBelow(join(home, 'instances')), []);
    assert.deepEqual(await filesBelow(join(home, 'tmp')), []);
  } finally {
    await cli(home, ['down']).catch(() => undefined);
    await rm(home, { recursive: true, force: true });
  }
  assert.deepEqual(await leakedSince(before), {});
});

test('a guest that never answers: EMB_INSTANCE_NOT_READY after the timeout, and nothing is left behind', async () => {
  const t = await openTestNode();
  try {
    const image = await buildTestFunctionImage(join(t.home, 'fn'));
    await assert.rejects(
      t.node.run(
        { image, vcpus: 1, memoryMiB: 128, port: 8080, env: [], entrypoint: ['/bin/busybox', 'sleep', '600'] },
        { name: 'silent', readyTimeoutMs: 8000 },
      ),
      (err) => isEmbersError(err, 'EMB_INSTANCE_NOT_READY'),
    );
    assert.deepEqual(await t.node.list(), []);
    assert.equal((await t.node.pool.stats()).leased, 0);
  } finally {
    await t.close();
  }
});

test('a function that exits at once: the error says the VM stopped, and nothing is left behind', async () => {
  const t = await openTestNode();
  try {
    const image = await buildTestFunctionImage(join(t.home, 'fn'));
    await assert.rejects(
      t.node.run(
        { image, vcpus: 1, memoryMiB: 128, port: 8080, env: [], entrypoint: ['/bin/busybox', 'false'] },
        { name: 'exits' },
      ),
      (err) => isEmbersError(err, 'EMB_INSTANCE_NOT_READY') && /stopped|exited/.test((err as Error).message),
    );
    assert.deepEqual(await t.node.list(), []);
  } finally {
    await t.close();
  }
});

test('a missing image dir: EMB_IMAGE_NOT_FOUND before any resource is taken', async () => {
  const t = await openTestNode();
  try {
    await assert.rejects(
      t.node.run({ image: join(t.home, 'no-such-image'), vcpus: 1, memoryMiB: 128, port: 8080, env: [] }),
      (err) => isEmbersError(err, 'EMB_IMAGE_NOT_FOUND'),
    );
  } finally {
    await t.close();
  }
});

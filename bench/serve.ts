import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTestFunctionImage } from '../src/examples/test-function.js';
import { median, optionValue, printTable } from './table.js';

const EMBERS = fileURLToPath(new URL('../../bin/embers.js', import.meta.url));

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/**
 * Clients keep their connection to the daemon (as a load balancer in front of a node does).
 * The function's busybox httpd closes every connection, so a direct call connects each time;
 * the daemon keeps one connection to a warm instance opened ahead of its next request
 * (node/upstream.ts), which is part of what is measured.
 */
const toDaemon = new Agent({ keepAlive: true, maxSockets: 16 });

/** ms until the response headers (the first byte of the answer) arrive, then the body is drained. */
function timeToFirstByte(
  url: string,
  agent: Agent | false = false,
): Promise<{ ms: number; status: number; start: string }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers: agent ? {} : { connection: 'close' } }, (res) => {
      const ms = performance.now() - t0;
      res.resume();
      res.on('end', () =>
        resolve({ ms, status: res.statusCode ?? 0, start: String(res.headers['x-embers-start'] ?? '') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * The node daemon, measured through its API (a real `embers serve` in its own process):
 * - cold start to first byte, restore vs boot, scaled to zero between repeats;
 * - warm invocation latency through the daemon vs straight to the instance's clone IP (the
 *   proxy's overhead), the same number of requests, interleaved;
 * - a burst of N first requests on a fresh function: fan-out (one boot, then restores from
 *   its snapshot) vs N parallel boots, time until all N answered.
 */
export async function benchServe(args: string[]): Promise<Record<string, unknown>> {
  const repeats = optionValue(args, 'repeats', 3);
  const warmRequests = optionValue(args, 'requests', 200);
  const burstN = optionValue(args, 'burst', 5);
  const memoryMiB = optionValue(args, 'memory', 256);
  const home = await mkdtemp(join(tmpdir(), 'embers-bench-serve-'));
  const proc = spawn(
    process.execPath,
    [EMBERS, 'serve', '--home', home, '--port', '0', '--net-pool-size', String(burstN + 1), '--json'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, EMBERS_S3_ENDPOINT: undefined, EMBERS_S3_BUCKET: undefined },
    },
  );
  let log = '';
  proc.stderr.on('data', (c: Buffer) => (log += c.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      proc.stdout.on('data', (c: Buffer) => {
        out += c.toString();
        const m = /"url":"([^"]+)"/.exec(out);
        if (m) resolve(m[1]);
      });
      void exited.then((code) => reject(new Error(`embers serve exited (${code}):\n${log}`)));
    });
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: body ? { 'content-type': 'application/json' } : {},
        body: body ? JSON.stringify(body) : undefined,
      });
      const json = (await res.json()) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
      if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    const waitFor = async (what: string, check: () => Promise<boolean>) => {
      const deadline = Date.now() + 300_000;
      while (!(await check())) {
        if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    const zero = (fn: string) =>
      waitFor(`${fn} at zero`, async () => (await api('GET', `/v1/functions/${fn}`)).instances.length === 0);
    const invoke = (fn: string, path = '') => timeToFirstByte(`${url}/v1/functions/${fn}/invoke${path}`, toDaemon);

    const image = await buildTestFunctionImage(join(home, 'fn'));
    const base = { image, memoryMiB, idleTimeoutSeconds: 0.5, maxInstances: burstN };
    process.stdout.write(
      `serve: through embers serve; ${repeats} repeats, ${warmRequests} warm requests, burst of ${burstN}, ${memoryMiB} MiB guests\n`,
    );

    // 1. cold start to first byte: boots (snapshots disabled) vs restores, alternately
    await api('PUT', '/v1/functions/booter', { ...base, snapshots: 'disabled' });
    await api('PUT', '/v1/functions/restorer', { ...base, env: ['BENCH=restore'] });
    await invoke('restorer'); // its first start boots and is snapshotted
    await waitFor('the snapshot', async () => (await api('GET', '/v1/functions/restorer')).snapshot.state === 'ready');
    await zero('restorer');
    await invoke('restorer').then(() => zero('restorer')); // the first restore warms the page cache of the snapshot, as in production
    const boots: number[] = [];
    const restores: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const b = await invoke('booter');
      if (b.start !== 'boot') throw new Error(`expected a boot, got ${b.start}`);
      boots.push(b.ms);
      await zero('booter');
      const r = await invoke('restorer');
      if (r.start !== 'restore') throw new Error(`expected a restore, got ${r.start}`);
      restores.push(r.ms);
      await zero('restorer');
    }

    // 2. warm latency: through the daemon vs straight to the clone IP, interleaved
    await api('PUT', '/v1/functions/warm', { ...base, env: ['BENCH=warm'], idleTimeoutSeconds: 600, maxInstances: 1 });
    await invoke('warm');
    await waitFor('the warm snapshot', async () => (await api('GET', '/v1/functions/warm')).snapshot.state === 'ready');
    const inst = (await api('GET', '/v1/functions/warm')).instances[0] as { cloneIp: string };
    const direct: number[] = [];
    const proxied: number[] = [];
    for (let i = 0; i < 10; i++) await Promise.all([invoke('warm'), timeToFirstByte(`http://${inst.cloneIp}:8080/`)]); // warm-up
    for (let i = 0; i < warmRequests; i++) {
      direct.push((await timeToFirstByte(`http://${inst.cloneIp}:8080/`)).ms);
      const p = await invoke('warm');
      if (p.start !== 'warm') throw new Error(`expected warm, got ${p.start}`);
      proxied.push(p.ms);
    }
    await api('DELETE', '/v1/functions/warm');

    // 3. a burst of N first requests: fan-out vs N parallel boots
    const burst = async (fn: string, spec: Record<string, unknown>) => {
      await api('PUT', `/v1/functions/${fn}`, spec);
      const t0 = performance.now();
      const answers = await Promise.all(Array.from({ length: burstN }, () => invoke(fn)));
      const ms = performance.now() - t0;
      if (answers.some((a) => a.status !== 200)) throw new Error(`${fn}: ${answers.map((a) => a.status).join(',')}`);
      const starts = answers.map((a) => a.start);
      await zero(fn).catch(() => undefined);
      await api('DELETE', `/v1/functions/${fn}?snapshots=delete`);
      return { ms, starts };
    };
    const parallel = await burst('parallel', { ...base, env: ['BENCH=parallel'], snapshots: 'disabled' });
    const fanout = await burst('fanout', { ...base, env: ['BENCH=fanout'] });

    const rows: (string | number)[][] = [
      ['cold start: boot, p50', median(boots), percentile(boots, 95), 1],
      ['cold start: restore, p50', median(restores), percentile(restores, 95), median(boots) / median(restores)],
      [`warm: direct to clone IP (${warmRequests})`, median(direct), percentile(direct, 99), 1],
      [
        `warm: through the daemon (${warmRequests})`,
        median(proxied),
        percentile(proxied, 99),
        median(direct) / median(proxied),
      ],
      [`burst of ${burstN}: parallel boots, all answered`, parallel.ms, parallel.ms, 1],
      [`burst of ${burstN}: fan-out, all answered`, fanout.ms, fanout.ms, parallel.ms / fanout.ms],
    ];
    printTable(['what', 'p50 ms', 'p95/p99 ms', 'ratio'], rows);
    const overheadPct = ((median(proxied) - median(direct)) / median(direct)) * 100;
    process.stdout.write(
      `restore is ${(median(boots) / median(restores)).toFixed(1)}× faster than boot to first byte (goal ≥15×)\n` +
        `proxy overhead at p50: ${(median(proxied) - median(direct)).toFixed(2)} ms (${overheadPct.toFixed(1)}% of a direct call; goal ≤10%)\n` +
        `burst of ${burstN}: fan-out ${(parallel.ms / fanout.ms).toFixed(2)}× faster than parallel boots (starts: ${fanout.starts.join(',')} vs ${parallel.starts.join(',')})\n`,
    );
    return {
      bench: 'serve',
      coldStartMs: { boot: boots, restore: restores },
      warmMs: { direct, proxied },
      proxyOverheadPct: overheadPct,
      burst: { n: burstN, parallelBootsMs: parallel.ms, fanoutMs: fanout.ms, fanoutStarts: fanout.starts },
    };
  } finally {
    toDaemon.destroy();
    proc.kill('SIGTERM');
    const code = await exited;
    if (code !== 0)
      process.stderr.write(`embers serve exited with ${code}:\n${log.split('\n').slice(-30).join('\n')}\n`);
    await rm(home, { recursive: true, force: true });
  }
}

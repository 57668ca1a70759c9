import { request } from 'node:http';
import { startDaemon } from '../api/daemon.js';
import { expectedFileSha256 } from '../examples/test-function.js';
import type { NodeOptions } from '../node/node.js';
import { roundMs } from '../util/format.js';
import { sleep } from '../util/sleep.js';

export interface LifecycleDemo {
  url: string;
  firstInvoke: { start: string; firstByteMs: number };
  snapshot: { id: string; readyAfterMs: number };
  scaleToZeroAfterMs: number;
  restoreInvoke: { start: string; firstByteMs: number; fileIntact: boolean };
  burst: { n: number; allAnsweredMs: number; starts: string[] };
  speedupFirstByte: number;
}

function get(url: string): Promise<{ status: number; start: string; body: string; firstByteMs: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      const firstByteMs = roundMs(performance.now() - t0);
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, start: String(res.headers['x-embers-start'] ?? ''), body, firstByteMs }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * The lifecycle through the node daemon (`embers serve`, started here on a free loopback
 * port): deploy the test function, first invoke (boot), the snapshot taken after it, scale to
 * zero, an invoke served by a restore (with the file the first invoke wrote), and a burst of
 * `burst` first requests on a fresh function (one boot, then restores: fan-out).
 */
export async function runLifecycleDemo(
  opts: NodeOptions,
  image: string,
  say: (m: string) => void,
  burst = 5,
): Promise<LifecycleDemo> {
  const daemon = await startDaemon({ ...opts, port: 0, logLevel: 'warn', drainMs: 10_000 });
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${daemon.url}${path}`, {
      method,
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const json = (await res.json()) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    if (res.status >= 400) throw new Error(`${method} ${path}: ${JSON.stringify(json)}`);
    return json;
  };
  const until = async (check: () => Promise<boolean>) => {
    const t0 = performance.now();
    const deadline = Date.now() + 300_000;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error('the daemon did not get there in 5 minutes');
      await sleep(50);
    }
    return roundMs(performance.now() - t0);
  };
  try {
    say(`lifecycle through the daemon (embers serve at ${daemon.url}):`);
    const spec = { image, memoryMiB: 256, idleTimeoutSeconds: 2 };
    await api('PUT', '/v1/functions/demo', spec);
    say('  deployed function demo');
    const invokeUrl = `${daemon.url}/v1/functions/demo/invoke`;
    const first = await get(`${invokeUrl}/cgi-bin/write?name=lifecycle.bin&size=65536&seed=lifecycle&sync=0`);
    say(`  first invoke: ${first.start}, first byte after ${first.firstByteMs} ms`);
    let snapshotId = '';
    const snapMs = await until(async () => {
      const s = (await api('GET', '/v1/functions/demo')).snapshot;
      if (s.state === 'failed') throw new Error(`snapshot failed: ${s.error}`);
      snapshotId = s.id ?? '';
      return s.state === 'ready';
    });
    say(`  snapshot ${snapshotId} ready ${snapMs} ms after the answer (taken in the background)`);
    const zeroMs = await until(async () => (await api('GET', '/v1/functions/demo')).instances.length === 0);
    say(`  scaled to zero ${zeroMs} ms later (idle timeout ${spec.idleTimeoutSeconds} s)`);
    const again = await get(`${invokeUrl}/cgi-bin/read?name=lifecycle.bin`);
    const fileIntact = again.body.startsWith(expectedFileSha256('lifecycle', 65536));
    say(
      `  next invoke: ${again.start}, first byte after ${again.firstByteMs} ms, file written before the snapshot ${fileIntact ? 'intact' : 'WRONG'}`,
    );

    await api('PUT', '/v1/functions/burst', { ...spec, env: ['DEMO=burst'] });
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: burst }, () => get(`${daemon.url}/v1/functions/burst/invoke`)),
    );
    const allAnsweredMs = roundMs(performance.now() - t0);
    const starts = answers.map((a) => a.start);
    say(
      `  burst of ${burst} first requests on a fresh function: all answered in ${allAnsweredMs} ms (${starts.join(', ')})`,
    );
    await api('DELETE', '/v1/functions/burst?snapshots=delete');
    await api('DELETE', '/v1/functions/demo?snapshots=delete');
    return {
      url: daemon.url,
      firstInvoke: { start: first.start, firstByteMs: first.firstByteMs },
      snapshot: { id: snapshotId, readyAfterMs: snapMs },
      scaleToZeroAfterMs: zeroMs,
      restoreInvoke: { start: again.start, firstByteMs: again.firstByteMs, fileIntact },
      burst: { n: burst, allAnsweredMs, starts },
      speedupFirstByte: roundMs(first.firstByteMs / again.firstByteMs),
    };
  } finally {
    await daemon.close();
  }
}

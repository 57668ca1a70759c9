/**
 * `npm run bench -- failures [--repeats 5] [--json]`
 *
 * How long a user waits for a clear error when a store is wrong or gone, measured side by side
 * with the same call succeeding (the tests check which error comes and that nothing is
 * retried that should not be; the waiting is measured here, never in a test):
 *   s3 list ok          a healthy S3-compatible server (the test server, on loopback)
 *   s3 wrong secret     EMB_REMOTE_AUTH: not retried, so about one round trip
 *   s3 down             EMB_REMOTE_UNREACHABLE after the store's default retries
 *   registry down       EMB_REGISTRY_UNREACHABLE for an image pull from a closed port
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError, type ErrorCode } from '../src/errors.js';
import { ImageStore } from '../src/image/store.js';
import { S3SnapshotStore } from '../src/snapshot/s3-store.js';
import { freePort } from '../test/helpers/registry.js';
import { startS3Server } from '../test/helpers/s3-server.js';
import { fmt, median, optionValue, printTable } from './table.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Milliseconds until `fn` settles; it must fail with `code` (or succeed, when `code` is undefined). */
async function timeTo(fn: () => Promise<unknown>, code?: ErrorCode): Promise<number> {
  const t0 = performance.now();
  try {
    await fn();
    if (code) throw new Error(`expected ${code}, but the call succeeded`);
  } catch (err) {
    if (!code || !isEmbersError(err, code)) throw err;
  }
  return performance.now() - t0;
}

export async function benchFailures(args: string[]): Promise<Record<string, unknown>> {
  const repeats = Math.round(optionValue(args, 'repeats', 5));
  const base = await mkdtemp(join(tmpdir(), 'embers-bench-failures-'));
  const s3 = await startS3Server();
  const stores: S3SnapshotStore[] = [];
  const store = (o: Parameters<typeof s3.storeOptions>[0] = {}) => {
    const s = new S3SnapshotStore(s3.storeOptions(o));
    stores.push(s);
    return s;
  };
  try {
    const ok = store();
    const wrong = store({
      credentials: { accessKeyId: s3.credentials.accessKeyId, secretAccessKey: 'not-the-secret' },
    });
    const closedPort = await freePort();
    const images = new ImageStore(join(base, 'images'), join(base, 'tmp'));
    const cases: [string, () => Promise<unknown>, ErrorCode | undefined][] = [
      ['s3 list ok', () => ok.list(), undefined],
      ['s3 wrong secret', () => wrong.list(), 'EMB_REMOTE_AUTH'],
      ['registry down', () => images.ensure(`127.0.0.1:${closedPort}/acme/fn:v1`), 'EMB_REGISTRY_UNREACHABLE'],
    ];
    const ms: Record<string, number[]> = {};
    for (let r = 0; r < repeats; r++)
      for (const [name, fn, code] of cases) (ms[name] ??= []).push(await timeTo(fn, code));
    await s3.stop();
    const down = store();
    ms['s3 down'] = [];
    for (let r = 0; r < repeats; r++) ms['s3 down'].push(await timeTo(() => down.list(), 'EMB_REMOTE_UNREACHABLE'));

    const okMs = median(ms['s3 list ok']);
    const rows = Object.entries(ms).map(([name, xs]) => [name, median(xs), Math.max(...xs), median(xs) / okMs]);
    process.stdout.write(`time to a clear error, median of ${repeats} (ms; × = vs a successful S3 list)\n`);
    printTable(['case', 'p50 ms', 'max ms', '×'], rows as (string | number)[][]);
    process.stdout.write(
      `s3 wrong secret answers ${fmt(median(ms['s3 wrong secret']) / okMs)}× a successful list: no retries\n`,
    );
    return {
      repeats,
      medianMs: Object.fromEntries(Object.entries(ms).map(([k, xs]) => [k, Math.round(median(xs) * 10) / 10])),
    };
  } finally {
    for (const s of stores) s.close();
    await s3.dispose();
    await rm(base, { recursive: true, force: true });
  }
}

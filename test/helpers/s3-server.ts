/**
 * Starts the test S3 server (s3rver behind the wrapper in s3-server-process.ts) as a separate
 * process on loopback, in a fresh temp dir, with its bucket created, so that tests can kill it
 * mid-transfer and start it again on the same port with the same data.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { S3StoreOptions } from '../../src/snapshot/s3-store.js';

export interface S3TestServer {
  /** `http://127.0.0.1:<port>` */
  readonly endpoint: string;
  readonly port: number;
  /** Where the server keeps buckets and objects (s3rver's file layout). */
  readonly dir: string;
  readonly bucket: string;
  readonly region: string;
  /** The one key pair the server accepts (SigV4 signatures are verified). */
  readonly credentials: { accessKeyId: string; secretAccessKey: string };
  /** The file in which the server keeps the object `key` (exists once the object is complete). */
  objectPath(key: string): string;
  /** Options for an S3SnapshotStore on this server; `overrides` replace single fields. */
  storeOptions(overrides?: Partial<S3StoreOptions>): S3StoreOptions;
  /** The EMBERS_S3_* variables that point a node (CLI or daemon) at this server, under `prefix`. */
  env(prefix?: string): Record<string, string>;
  /** The requests refused for their credentials so far, oldest first. */
  refusals(): Promise<{ method: string; url: string; code: string }[]>;
  /** True while the server process runs. */
  readonly running: boolean;
  /** Stops the server process (SIGTERM) and waits for it to exit; data is kept for `restart`. */
  stop(): Promise<void>;
  /** Kills the server process (SIGKILL): a crash mid-request. Data is kept for `restart`. */
  kill(): Promise<void>;
  /** Starts the server again, on the same port, with the same data (stops it first if it runs). */
  restart(): Promise<void>;
  /** Kills the server and removes its temp dir. */
  dispose(): Promise<void>;
}

export interface S3TestServerOptions {
  /** @default 'embers' */
  bucket?: string;
  /** @default 'embers-test-key' */
  accessKeyId?: string;
  /** @default 'embers-test-secret' */
  secretAccessKey?: string;
}

const SCRIPT = fileURLToPath(new URL('./s3-server-process.js', import.meta.url));

export async function startS3Server(opts: S3TestServerOptions = {}): Promise<S3TestServer> {
  const root = await mkdtemp(join(tmpdir(), 'embers-s3-'));
  const dir = join(root, 'data');
  const refusalLog = join(root, 'refusals.jsonl');
  const bucket = opts.bucket ?? 'embers';
  const region = 'us-east-1';
  const credentials = {
    accessKeyId: opts.accessKeyId ?? 'embers-test-key',
    secretAccessKey: opts.secretAccessKey ?? 'embers-test-secret',
  };
  let port = 0;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const launch = async () => {
    const c = spawn(
      process.execPath,
      [
        SCRIPT,
        '--dir',
        dir,
        '--port',
        String(port),
        '--bucket',
        bucket,
        '--region',
        region,
        '--access-key-id',
        credentials.accessKeyId,
        '--secret-access-key',
        credentials.secretAccessKey,
        '--refusal-log',
        refusalLog,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    child = c;
    exited = new Promise((resolve) => c.once('exit', () => resolve()));
    void exited.then(() => {
      if (child === c) child = undefined;
    });
    let stderr = '';
    c.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
    const ready = await new Promise<{ port: number }>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`the test S3 server did not start in 20 s: ${stderr}`)), 20_000);
      c.stdout!.on('data', (b: Buffer) => {
        out += b.toString();
        const nl = out.indexOf('\n');
        if (nl >= 0) {
          clearTimeout(timer);
          try {
            resolve(JSON.parse(out.slice(0, nl)) as { port: number });
          } catch (err) {
            reject(err as Error);
          }
        }
      });
      c.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the test S3 server exited while starting (${code ?? signal}): ${stderr}`));
      });
    });
    port = ready.port;
  };

  const halt = async (signal: NodeJS.Signals) => {
    const c = child;
    if (!c) return;
    c.kill(signal);
    await exited;
  };

  await launch();
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    port,
    dir,
    bucket,
    region,
    credentials,
    objectPath: (key) => {
      const parts = key.split('/');
      return join(dir, bucket, ...parts.slice(0, -1), `${parts.at(-1)}._S3rver_object`);
    },
    env: (prefix = 'snapshots') => ({
      EMBERS_S3_ENDPOINT: endpoint,
      EMBERS_S3_BUCKET: bucket,
      EMBERS_S3_REGION: region,
      EMBERS_S3_PREFIX: prefix,
      EMBERS_S3_ACCESS_KEY_ID: credentials.accessKeyId,
      EMBERS_S3_SECRET_ACCESS_KEY: credentials.secretAccessKey,
    }),
    storeOptions: (overrides = {}) => ({
      endpoint,
      region,
      bucket,
      prefix: 'snapshots',
      credentials,
      forcePathStyle: true,
      ...overrides,
    }),
    refusals: async () =>
      (await readFile(refusalLog, 'utf8').catch(() => ''))
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { method: string; url: string; code: string }),
    get running() {
      return child !== undefined;
    },
    stop: () => halt('SIGTERM'),
    kill: () => halt('SIGKILL'),
    restart: async () => {
      await halt('SIGTERM');
      await launch();
    },
    dispose: async () => {
      await halt('SIGKILL');
      await rm(root, { recursive: true, force: true });
    },
  };
}

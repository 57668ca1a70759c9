/**
 * A REAL OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on loopback, on
 * a free port, with a temp storage dir and a generated config. Optional auth:
 *   htpasswd:  the registry's own basic auth (bcrypt hashes from bcryptjs).
 *   tokenAuth: the registry's `auth: token` mode; the token service is a small server in this
 *              process on loopback that checks basic credentials and issues ES256 JWTs signed
 *              with a throwaway key whose self-signed cert (openssl) is the registry's
 *              rootcertbundle. This is the flow of Docker Hub and GHCR: 401 + Bearer challenge,
 *              GET realm?service&scope with basic credentials, retry with the Bearer token.
 * Images are pushed with skopeo from OCI layouts (`pushLayout`), or with raw distribution-API
 * requests when a test needs exact bytes skopeo would not write (`pushRaw`).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';

export interface StartRegistryOptions {
  /** Basic auth with the registry's htpasswd file. */
  htpasswd?: boolean;
  /** Bearer token auth (auth: token) with a token service served by this process. */
  tokenAuth?: boolean;
  /** Users for either auth mode. @default { embers: 'embers-test-password' } */
  users?: Record<string, string>;
}

export interface TokenRequest {
  url: string;
  /** The basic-auth user name sent, if any. */
  user?: string;
  granted: boolean;
}

export interface TestRegistry {
  /** 127.0.0.1:<port> */
  host: string;
  /** The registry's storage root (docker/registry/v2/…), for tests that corrupt blobs. */
  storageDir: string;
  /** The users (name → password) when auth is on. */
  users: Record<string, string>;
  /** Requests the token service received (tokenAuth). */
  tokenRequests: TokenRequest[];
  /** The data file of a blob in the registry's storage. */
  blobDataPath(digest: string): string;
  /** `skopeo copy oci:<layout>:<tag> docker://<host>/<dest>` (`all` copies every platform of an index). */
  pushLayout(layout: string, tag: string, dest: string, opts?: { all?: boolean }): Promise<void>;
  /** Uploads blobs and a manifest with the distribution API (no auth): exact bytes, any media type. */
  pushRaw(
    repository: string,
    reference: string,
    manifest: { mediaType: string; bytes: Buffer },
    blobs: Buffer[],
  ): Promise<void>;
  stop(): Promise<void>;
}

export const DEFAULT_USERS = { embers: 'embers-test-password' };

/** Why the registry tests and bench cannot run here, or false when they can (node:test's `skip` takes either). */
export function registrySkipReason(): string | false {
  const present = ['docker-registry', 'skopeo', 'openssl'].every(
    (p) => spawnSync('sh', ['-c', `command -v ${p}`]).status === 0,
  );
  return present ? false : 'needs docker-registry, skopeo and openssl (scripts/setup.sh)';
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

interface TokenServer {
  realm: string;
  server: Server;
}

async function startTokenServer(
  key: KeyObject,
  cert: X509Certificate,
  users: Record<string, string>,
  log: TokenRequest[],
): Promise<TokenServer> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://token');
    const auth = req.headers.authorization;
    let user: string | undefined;
    let ok = false;
    if (auth?.startsWith('Basic ')) {
      const plain = Buffer.from(auth.slice(6), 'base64').toString('utf8');
      const colon = plain.indexOf(':');
      user = plain.slice(0, colon);
      ok = colon > 0 && users[user] === plain.slice(colon + 1);
    }
    log.push({ url: req.url ?? '', ...(user !== undefined ? { user } : {}), granted: ok });
    if (!ok) {
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Basic realm="embers-test-token"' });
      res.end(JSON.stringify({ details: 'invalid credentials' }));
      return;
    }
    const access = url.searchParams.getAll('scope').map((s) => {
      const [type, name, actions] = s.split(':');
      return { type, name, actions: (actions ?? '').split(',').filter(Boolean) };
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [cert.raw.toString('base64')] };
    const claims = {
      iss: 'embers-test-issuer',
      sub: user,
      aud: url.searchParams.get('service'),
      exp: now + 300,
      nbf: now - 30,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const token = `${input}.${b64url(sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }))}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { realm: `http://127.0.0.1:${(server.address() as { port: number }).port}/token`, server };
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function ping(host: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = request(
      { host: '127.0.0.1', port: Number(host.split(':')[1]), path: '/v2/', method: 'GET', timeout: 1000 },
      (res) => {
        res.resume();
        resolve(res.statusCode);
      },
    );
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('close', (code) => resolve({ code: code ?? 128, out }));
    child.on('error', (e) => resolve({ code: 127, out: e.message }));
  });
}

function httpCall(
  method: string,
  url: string,
  body?: Buffer,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: IncomingMessage['headers']; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method, headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) } },
      (res) => {
        let text = '';
        res.on('data', (b: Buffer) => (text += b.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Starts a registry (see the file comment). Stop it with `stop()`. */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'embers-registry-'));
  const storageDir = join(dir, 'storage');
  await mkdir(storageDir);
  const users = opts.users ?? DEFAULT_USERS;
  const tokenRequests: TokenRequest[] = [];
  let tokenServer: TokenServer | undefined;
  let auth = '';
  if (opts.htpasswd) {
    const lines = Object.entries(users).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`);
    await writeFile(join(dir, 'htpasswd'), `${lines.join('\n')}\n`);
    auth = `auth:\n  htpasswd:\n    realm: embers-test\n    path: ${join(dir, 'htpasswd')}\n`;
  } else if (opts.tokenAuth) {
    const keyPath = join(dir, 'token.key');
    const certPath = join(dir, 'token.crt');
    const r = await run('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '2',
      '-subj',
      '/CN=embers-test-token',
    ]);
    if (r.code !== 0) throw new Error(`openssl failed: ${r.out}`);
    const key = createPrivateKey(await readFile(keyPath));
    const cert = new X509Certificate(await readFile(certPath));
    tokenServer = await startTokenServer(key, cert, users, tokenRequests);
    auth = `auth:\n  token:\n    realm: ${tokenServer.realm}\n    service: embers-test-registry\n    issuer: embers-test-issuer\n    rootcertbundle: ${certPath}\n`;
  }

  let child: ChildProcess | undefined;
  let host = '';
  for (let tries = 0; tries < 5 && !child; tries++) {
    const port = await freePort();
    host = `127.0.0.1:${port}`;
    const config = `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${storageDir}\n  delete:\n    enabled: true\nhttp:\n  addr: ${host}\n  secret: embers-test-secret\n${auth}`;
    await writeFile(join(dir, 'config.yml'), config);
    const proc = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
    const deadline = Date.now() + 15_000;
    let up = false;
    while (Date.now() < deadline && proc.exitCode === null) {
      const status = await ping(host);
      if (status === 200 || status === 401) {
        up = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (up) child = proc;
    else {
      proc.kill('SIGKILL');
      await waitExit(proc, 5000);
      if (tries === 4) throw new Error(`docker-registry did not start: ${stderr}`);
    }
  }

  const creds = Object.entries(users)[0]!;
  const authArgs = opts.htpasswd || opts.tokenAuth ? ['--dest-creds', `${creds[0]}:${creds[1]}`] : [];

  return {
    host,
    storageDir,
    users: opts.htpasswd || opts.tokenAuth ? users : {},
    tokenRequests,
    blobDataPath(digest: string): string {
      const hex = digest.replace(/^sha256:/, '');
      return join(storageDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    },
    async pushLayout(layout: string, tag: string, dest: string, o: { all?: boolean } = {}): Promise<void> {
      const args = [
        '--insecure-policy',
        'copy',
        '--quiet',
        '--preserve-digests',
        '--dest-tls-verify=false',
        ...authArgs,
        ...(o.all ? ['--all'] : []),
        `oci:${layout}:${tag}`,
        `docker://${host}/${dest}`,
      ];
      const r = await run('skopeo', args);
      if (r.code !== 0) throw new Error(`skopeo ${args.join(' ')} failed: ${r.out}`);
    },
    async pushRaw(
      repository: string,
      reference: string,
      manifest: { mediaType: string; bytes: Buffer },
      blobs: Buffer[],
    ): Promise<void> {
      for (const blob of blobs) {
        const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
        const start = await httpCall('POST', `http://${host}/v2/${repository}/blobs/uploads/`);
        if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status} ${start.body}`);
        const location = new URL(String(start.headers.location), `http://${host}`);
        location.searchParams.set('digest', digest);
        const put = await httpCall('PUT', location.href, blob, { 'content-type': 'application/octet-stream' });
        if (put.status !== 201) throw new Error(`blob upload: HTTP ${put.status} ${put.body}`);
      }
      const put = await httpCall('PUT', `http://${host}/v2/${repository}/manifests/${reference}`, manifest.bytes, {
        'content-type': manifest.mediaType,
      });
      if (put.status !== 201) throw new Error(`manifest upload: HTTP ${put.status} ${put.body}`);
    },
    async stop(): Promise<void> {
      if (child) {
        child.kill('SIGTERM');
        if (!(await waitExit(child, 5000))) {
          child.kill('SIGKILL');
          await waitExit(child, 5000);
        }
      }
      if (tokenServer) await new Promise<void>((resolve) => tokenServer!.server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * An S3-compatible server for tests: s3rver (a file-backed S3 emulator from npm) behind a thin
 * wrapper that fills the gaps of s3rver 3.7.1 that matter to embers:
 *
 * - SigV4 is not verified by s3rver (it checks only that the access key id is known, and then
 *   accepts any signature; unsigned requests are served too). The wrapper verifies every
 *   request's AWS4-HMAC-SHA256 Authorization header against the one key pair it was given,
 *   signing the request again with @smithy/signature-v4 (the AWS SDK's signer):
 *   unknown key → 403 InvalidAccessKeyId, bad signature → 403 SignatureDoesNotMatch, no
 *   Authorization → 403 AccessDenied. Presigned URLs are refused.
 * - ListParts (GET <key>?uploadId=) and AbortMultipartUpload (DELETE <key>?uploadId=) answer
 *   405 MethodNotAllowed in s3rver; the wrapper implements both over s3rver's own upload
 *   directory (`<dir>/<bucket>/._S3rver_uploads/<uploadId>/<partNumber>` + `.md5`). A part
 *   is listed only once s3rver has written its `.md5` (i.e. received it whole), with its size
 *   on disk, as S3 does.
 *
 * Everything else goes to s3rver unchanged. Run as a process (tests kill it mid-transfer):
 *   node s3-server-process.js --dir D --port P --bucket B --access-key-id K --secret-access-key S
 * It prints one JSON line `{"port":N}` once it listens, and exits when its stdin closes (its
 * parent is gone) or on SIGTERM.
 */
import { createHash, createHmac, timingSafeEqual, type Hash, type Hmac } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { readFile, readdir, rm, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SignatureV4 } from '@smithy/signature-v4';

interface S3rverApp {
  configureBuckets(): Promise<unknown>;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}

const require = createRequire(import.meta.url);
const S3rver = require('s3rver') as new (opts: Record<string, unknown>) => S3rverApp;

export interface S3TestServerArgs {
  dir: string;
  port: number;
  bucket: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Where every request refused for its credentials is appended, one JSON line each
   * (`{method, url, code}`), before the 403 goes out. */
  refusalLog?: string;
}

export async function runS3TestServer(args: S3TestServerArgs): Promise<{ port: number; close(): Promise<void> }> {
  const app = new S3rver({
    directory: args.dir,
    silent: true,
    configureBuckets: [{ name: args.bucket }],
    resetOnClose: false,
  });
  await app.configureBuckets();
  const s3rver = app.callback();
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) s3Error(res, 500, 'InternalError', err instanceof Error ? err.message : String(err));
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const auth = await verifySigV4(req, args);
    if (auth) {
      if (args.refusalLog)
        appendFileSync(args.refusalLog, `${JSON.stringify({ method: req.method, url: req.url, code: auth.code })}\n`);
      return s3Error(res, auth.status, auth.code, auth.message);
    }
    delete req.headers.authorization; // verified here; s3rver would only look the key id up
    const url = new URL(req.url ?? '/', 'http://s3');
    const uploadId = url.searchParams.get('uploadId');
    const [, bucket, ...keyParts] = url.pathname.split('/');
    const key = keyParts.map(decodeURIComponent).join('/');
    if (uploadId !== null && key && (req.method === 'GET' || req.method === 'DELETE')) {
      const uploadDir = join(
        args.dir,
        bucket ?? '',
        '._S3rver_uploads',
        /^[0-9a-f]+$/.test(uploadId) ? uploadId : 'invalid',
      );
      const storedKey = await readFile(join(uploadDir, 'key'), 'utf8').catch(() => undefined);
      if (storedKey !== key) return s3Error(res, 404, 'NoSuchUpload', 'The specified upload does not exist.');
      if (req.method === 'DELETE') {
        await rm(uploadDir, { recursive: true, force: true });
        res.writeHead(204).end();
        return;
      }
      return listParts(res, uploadDir, bucket, key, uploadId, url.searchParams);
    }
    s3rver(req, res);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(args.port, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function listParts(
  res: ServerResponse,
  uploadDir: string,
  bucket: string,
  key: string,
  uploadId: string,
  q: URLSearchParams,
): Promise<void> {
  const marker = Number(q.get('part-number-marker') ?? 0);
  const maxParts = Math.min(Number(q.get('max-parts') ?? 1000), 1000);
  const names = await readdir(uploadDir);
  const parts: { n: number; size: number; etag: string; mtime: Date }[] = [];
  for (const name of names) {
    if (!/^\d+$/.test(name) || !names.includes(`${name}.md5`)) continue;
    const n = Number(name);
    if (n <= marker) continue;
    const [st, md5] = await Promise.all([
      stat(join(uploadDir, name)),
      readFile(join(uploadDir, `${name}.md5`), 'utf8'),
    ]);
    parts.push({ n, size: st.size, etag: md5.trim(), mtime: st.mtime });
  }
  parts.sort((a, b) => a.n - b.n);
  const page = parts.slice(0, maxParts);
  const truncated = parts.length > page.length;
  const xml = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
    `<Bucket>${esc(bucket)}</Bucket><Key>${esc(key)}</Key><UploadId>${esc(uploadId)}</UploadId>`,
    `<PartNumberMarker>${marker}</PartNumberMarker><NextPartNumberMarker>${page.at(-1)?.n ?? marker}</NextPartNumberMarker>`,
    `<MaxParts>${maxParts}</MaxParts><IsTruncated>${truncated}</IsTruncated><StorageClass>STANDARD</StorageClass>`,
    ...page.map(
      (p) =>
        `<Part><PartNumber>${p.n}</PartNumber><LastModified>${p.mtime.toISOString()}</LastModified><ETag>"${p.etag}"</ETag><Size>${p.size}</Size></Part>`,
    ),
    '</ListPartsResult>',
  ].join('');
  res.writeHead(200, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(xml) });
  res.end(xml);
}

/** sha256 and HMAC-sha256 (with a secret) for the signer, from node:crypto (the SDK's Checksum shape). */
class NodeSha256 {
  private readonly hash: Hash | Hmac;
  constructor(secret?: SourceData) {
    this.hash = secret === undefined ? createHash('sha256') : createHmac('sha256', bytesOf(secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytesOf(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.hash.digest());
  }
}

type SourceData = string | ArrayBuffer | ArrayBufferView;

function bytesOf(data: SourceData): string | Uint8Array {
  if (typeof data === 'string') return data;
  return ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array(data);
}

/**
 * Checks an AWS4-HMAC-SHA256 Authorization header: @smithy/signature-v4 (the AWS SDK's own signer)
 * signs the request as received (its method, raw path, query, the headers the client signed,
 * its x-amz-date and payload hash) with the key pair this server holds, and the signatures must
 * match. Returns the S3 error to answer, or undefined.
 */
export async function verifySigV4(
  req: IncomingMessage,
  creds: { accessKeyId: string; secretAccessKey: string },
): Promise<{ status: number; code: string; message: string } | undefined> {
  const auth = req.headers.authorization;
  if (!auth) return { status: 403, code: 'AccessDenied', message: 'Anonymous requests are not allowed.' };
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/,]+)\/(\d{8})\/([^/,]+)\/([^/,]+)\/aws4_request,\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/.exec(
      auth,
    );
  if (!m)
    return {
      status: 400,
      code: 'AuthorizationHeaderMalformed',
      message: 'The authorization header is malformed (only AWS4-HMAC-SHA256 is accepted).',
    };
  const [, keyId, , region, service, signedHeaders, signature] = m;
  if (keyId !== creds.accessKeyId)
    return {
      status: 403,
      code: 'InvalidAccessKeyId',
      message: 'The AWS Access Key Id you provided does not exist in our records.',
    };
  const mismatch = {
    status: 403,
    code: 'SignatureDoesNotMatch',
    message:
      'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
  };
  const amzDate = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(String(req.headers['x-amz-date'] ?? ''));
  if (!amzDate) return mismatch;
  const [, y, mo, d, h, mi, sec] = amzDate.map(Number);
  const signingDate = new Date(Date.UTC(y, mo - 1, d, h, mi, sec));

  const rawUrl = req.url ?? '/';
  const q = rawUrl.indexOf('?');
  const query: Record<string, string | string[]> = {};
  for (const p of (q < 0 ? '' : rawUrl.slice(q + 1)).split('&').filter(Boolean)) {
    const i = p.indexOf('=');
    const k = decodeURIComponent(i < 0 ? p : p.slice(0, i));
    const v = decodeURIComponent(i < 0 ? '' : p.slice(i + 1));
    const had = query[k];
    query[k] = had === undefined ? v : [...(Array.isArray(had) ? had : [had]), v];
  }
  // Exactly the headers the client signed, plus its payload hash (UNSIGNED-PAYLOAD when it sent none), which is signed only if listed.
  const signed = new Set(signedHeaders.split(';'));
  const headers: Record<string, string> = {};
  for (const name of signed) headers[name] = String(req.headers[name] ?? '');
  headers['x-amz-content-sha256'] = String(req.headers['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD');
  const signer = new SignatureV4({
    credentials: creds,
    region,
    service,
    sha256: NodeSha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
  const expected = await signer.sign(
    {
      method: req.method ?? 'GET',
      protocol: 'http:',
      hostname: String(req.headers.host ?? ''),
      path: q < 0 ? rawUrl : rawUrl.slice(0, q),
      query,
      headers,
    },
    {
      signingDate,
      signableHeaders: signed,
      unsignableHeaders: signed.has('x-amz-content-sha256') ? undefined : new Set(['x-amz-content-sha256']),
    },
  );
  const expectedAuth = String(expected.headers.authorization ?? '');
  const given = Buffer.from(`SignedHeaders=${signedHeaders}, Signature=${signature}`);
  const wanted = Buffer.from(expectedAuth.slice(expectedAuth.indexOf('SignedHeaders=')));
  return given.length === wanted.length && timingSafeEqual(given, wanted) ? undefined : mismatch;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function s3Error(res: ServerResponse, status: number, code: string, message: string): void {
  const xml = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${esc(message)}</Message></Error>`;
  res.writeHead(status, {
    'Content-Type': 'application/xml',
    'Content-Length': Buffer.byteLength(xml),
    'x-amz-error-code': code,
  });
  res.end(xml);
}

function parseArgs(argv: string[]): S3TestServerArgs {
  const get = (name: string, fallback?: string) => {
    const i = argv.indexOf(`--${name}`);
    const v = i >= 0 ? argv[i + 1] : fallback;
    if (v === undefined) throw new Error(`s3-server-process: --${name} is required`);
    return v;
  };
  return {
    dir: get('dir'),
    port: Number(get('port', '0')),
    bucket: get('bucket', 'embers'),
    region: get('region', 'us-east-1'),
    accessKeyId: get('access-key-id'),
    secretAccessKey: get('secret-access-key'),
    refusalLog: get('refusal-log', ''),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const server = await runS3TestServer(parseArgs(process.argv.slice(2)));
  process.stdout.write(`${JSON.stringify({ port: server.port })}\n`);
  const quit = () => void server.close().finally(() => process.exit(0));
  process.on('SIGTERM', quit);
  process.stdin.on('end', quit);
  process.stdin.resume();
}

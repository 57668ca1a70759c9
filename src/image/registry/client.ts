/**
 * A client of one registry's OCI distribution API (`/v2/`): manifests by tag or digest with
 * their digest checked, small blobs read whole and verified, and blob responses (with a Range)
 * for the downloader. Handles the auth dance (bearer token or basic), redirects (blob storage
 * on another host gets no Authorization header) and plain HTTP for insecure registries.
 * No retries here: callers wrap whole operations in `retry()`.
 */
import { EmbersError } from '../../errors.js';
import { sha256 } from '../../util/fs.js';
import { INDEX_TYPES, MANIFEST_TYPES, MAX_JSON_BYTES, MEDIA, type Descriptor } from '../manifest.js';
import { basicHeader, parseChallenges, type Challenge, type Credentials, type TokenCache } from './auth.js';
import { drain, errorBody, readBody, send, statusError, type RegistryResponse } from './http.js';
import { isInsecure, type CompiledRegistryOptions } from './options.js';
import { registryEndpoint } from './reference.js';

/** What a manifest GET asks for: every manifest and index type embers reads. */
export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ');

export interface FetchedManifest {
  /** sha256 of the bytes, as `sha256:<hex>` (checked against the digest asked for). */
  digest: string;
  mediaType: string;
  bytes: Buffer;
}

export interface BlobResponse {
  res: RegistryResponse;
  /** 200 (the whole blob) or 206 (from `start`). */
  status: 200 | 206;
  /** First byte offset of the body within the blob. */
  start: number;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;

export class RegistryClient {
  /** The host[:port] requests go to. */
  readonly endpoint: string;
  readonly baseUrl: string;
  /** Set once the registry asked for basic auth: later requests send it up front. */
  private basic = false;
  /** The last bearer challenge, so later requests can send a cached token up front. */
  private bearer: Challenge | undefined;

  constructor(
    /** Registry as named in references (`docker.io`, `localhost:5000`). */
    readonly registry: string,
    private readonly opts: CompiledRegistryOptions,
    private readonly credentials: Credentials | undefined,
    private readonly tokens: TokenCache,
  ) {
    this.endpoint = registryEndpoint(registry);
    const scheme = isInsecure(this.endpoint, opts.insecureRegistries) ? 'http' : 'https';
    this.baseUrl = `${scheme}://${this.endpoint}`;
  }

  private get what(): string {
    return `registry ${this.registry}`;
  }

  private authHeader(scope: string): string | undefined {
    if (this.bearer) {
      const token = this.tokens.get(
        this.bearer.params.realm ?? '',
        this.bearer.params.service ?? '',
        scope,
        this.credentials,
      );
      if (token) return `Bearer ${token}`;
    }
    if (this.basic && this.credentials) return basicHeader(this.credentials);
    return undefined;
  }

  /** Sends a request, following redirects; Authorization only goes to the registry's own origin. */
  private async follow(url: URL, method: 'GET' | 'HEAD', headers: Record<string, string>): Promise<RegistryResponse> {
    let current = url;
    for (let hop = 0; ; hop++) {
      const sameOrigin = current.origin === url.origin;
      const h = { ...headers };
      if (!sameOrigin) delete h.authorization;
      const res = await send(current, {
        method,
        headers: h,
        timeoutMs: this.opts.timeoutMs,
        signal: this.opts.signal,
        what: this.what,
      });
      const status = res.statusCode ?? 0;
      if (!REDIRECTS.has(status)) return res;
      await drain(res);
      const location = res.headers.location;
      if (!location || hop >= MAX_REDIRECTS) {
        throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
          problem: 'redirect',
          server: this.what,
          url: url.href,
          status,
          ...(location ? { location } : {}),
        });
      }
      const next = new URL(location, current);
      if (
        next.protocol === 'http:' &&
        current.protocol === 'https:' &&
        !isInsecure(next.host, this.opts.insecureRegistries)
      ) {
        throw EmbersError.of('EMB_REGISTRY_TLS', {
          problem: 'redirect-to-http',
          server: this.what,
          url: url.href,
          location: next.href,
        });
      }
      current = next;
    }
  }

  /**
   * GET/HEAD `path` of `repository` with auth: on a 401 it answers the challenge (a bearer
   * token from the realm, or basic credentials) and tries again; a second 401, or a 403, is
   * EMB_REGISTRY_AUTH. Any other status is returned to the caller.
   */
  async request(
    repository: string,
    method: 'GET' | 'HEAD',
    path: string,
    headers: Record<string, string> = {},
  ): Promise<RegistryResponse> {
    const url = new URL(`${this.baseUrl}/v2/${path}`);
    const scope = `repository:${repository}:pull`;
    let answered: 'bearer' | 'basic' | undefined;
    for (;;) {
      const h: Record<string, string> = { 'user-agent': this.opts.userAgent, ...headers };
      const auth = this.authHeader(scope);
      if (auth) h.authorization = auth;
      const res = await this.follow(url, method, h);
      const status = res.statusCode ?? 0;
      if (status !== 401 && status !== 403) return res;
      const challenges = parseChallenges(res.headers['www-authenticate']);
      const refused = method === 'GET' ? await errorBody(res, url, this.what) : (await drain(res), {});
      const bearer = challenges.find((c) => c.scheme === 'bearer');
      const basic = challenges.find((c) => c.scheme === 'basic');
      const details = {
        server: this.what,
        registry: this.registry,
        repository,
        url: url.href,
        status,
        username: this.credentials?.username,
        ...(refused.code ? { registryCode: refused.code } : {}),
        ...(refused.message ? { registryMessage: refused.message } : {}),
      };
      if (status === 403 || answered !== undefined) {
        if (answered === 'bearer' && this.bearer)
          this.tokens.forget(this.bearer.params.realm ?? '', this.bearer.params.service ?? '', scope, this.credentials);
        throw EmbersError.of('EMB_REGISTRY_AUTH', {
          ...details,
          problem: 'refused',
          ...(answered === 'bearer' ? { bearer: true } : {}),
        });
      }
      if (bearer) {
        this.bearer = bearer;
        await this.tokens.fetch(bearer, scope, this.credentials, {
          registry: this.registry,
          insecure: this.opts.insecureRegistries,
          timeoutMs: this.opts.timeoutMs,
          userAgent: this.opts.userAgent,
          signal: this.opts.signal,
        });
        answered = 'bearer';
        continue;
      }
      if (basic) {
        if (!this.credentials) {
          throw EmbersError.of('EMB_REGISTRY_AUTH', {
            ...details,
            problem: 'no-credentials',
            realm: basic.params.realm ?? '',
          });
        }
        if (this.basic) throw EmbersError.of('EMB_REGISTRY_AUTH', { ...details, problem: 'credentials-refused' });
        this.basic = true;
        answered = 'basic';
        continue;
      }
      const challenge = res.headers['www-authenticate'];
      throw EmbersError.of('EMB_REGISTRY_AUTH', {
        ...details,
        problem: 'no-challenge',
        ...(challenge !== undefined ? { challenge: String(challenge) } : {}),
      });
    }
  }

  /** GETs a manifest or index by tag or digest; verifies the bytes against the digest. */
  async getManifest(repository: string, reference: string): Promise<FetchedManifest> {
    const path = `${repository}/manifests/${reference}`;
    const url = new URL(`${this.baseUrl}/v2/${path}`);
    const res = await this.request(repository, 'GET', path, { accept: MANIFEST_ACCEPT });
    const status = res.statusCode ?? 0;
    if (status === 404) {
      const err = await errorBody(res, url, this.what);
      const tags = err.code === 'NAME_UNKNOWN' ? undefined : await this.tags(repository);
      const missing =
        err.code === 'NAME_UNKNOWN' || tags === null
          ? 'repository'
          : reference.startsWith('sha256:')
            ? 'manifest'
            : 'tag';
      throw EmbersError.of(
        'EMB_IMAGE_NOT_FOUND',
        {
          problem: 'not-on-registry',
          missing,
          registry: this.registry,
          repository,
          reference,
          status,
          ...(err.code ? { registryCode: err.code } : {}),
          ...(missing === 'tag' && tags?.length ? { tags } : {}),
        },
        {
          hint: `check the repository and the ${reference.startsWith('sha256:') ? 'digest' : 'tag'} on ${this.registry}`,
        },
      );
    }
    if (status !== 200)
      throw statusError(status, url, this.what, await errorBody(res, url, this.what), {
        registry: this.registry,
        repository,
      });
    const bytes = await readBody(res, url, this.what, MAX_JSON_BYTES);
    const digest = `sha256:${sha256(bytes)}`;
    const expected = reference.startsWith('sha256:') ? reference : undefined;
    const header = res.headers['docker-content-digest'];
    const claimed = typeof header === 'string' && header.startsWith('sha256:') ? header : undefined;
    if ((expected && digest !== expected) || (!expected && claimed && digest !== claimed)) {
      throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'manifest-digest',
        registry: this.registry,
        repository,
        reference,
        digest: expected ?? claimed,
        actual: digest,
      });
    }
    const contentType = String(res.headers['content-type'] ?? '')
      .split(';')[0]!
      .trim();
    let mediaType = contentType;
    if (!INDEX_TYPES.has(mediaType) && !MANIFEST_TYPES.has(mediaType)) {
      try {
        const mt = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType;
        mediaType = typeof mt === 'string' ? mt : contentType;
      } catch {
        /* manifest.ts reports invalid JSON with the right code */
      }
    }
    return { digest, mediaType, bytes };
  }

  /**
   * The tags of a repository (GET /v2/<repo>/tags/list, first page), null when the registry
   * says the repository does not exist, undefined when it cannot tell. Used to explain a 404.
   */
  async tags(repository: string): Promise<string[] | null | undefined> {
    const path = `${repository}/tags/list`;
    const url = new URL(`${this.baseUrl}/v2/${path}`);
    try {
      const res = await this.request(repository, 'GET', path);
      if (res.statusCode === 404)
        return (await errorBody(res, url, this.what)).code === 'NAME_UNKNOWN' ? null : undefined;
      if (res.statusCode !== 200) {
        await drain(res);
        return undefined;
      }
      const doc = JSON.parse((await readBody(res, url, this.what, 1 << 20)).toString('utf8')) as { tags?: unknown };
      return Array.isArray(doc.tags) ? doc.tags.filter((t): t is string => typeof t === 'string') : [];
    } catch {
      return undefined;
    }
  }

  private blobNotFound(repository: string, digest: string, status: number, registryCode?: string): EmbersError {
    return EmbersError.of(
      'EMB_IMAGE_BLOB_MISSING',
      {
        source: 'registry',
        registry: this.registry,
        repository,
        digest,
        status,
        ...(registryCode ? { registryCode } : {}),
      },
      {
        hint: 'the image on the registry is incomplete: push it again',
      },
    );
  }

  /** GETs a small blob (a config) whole and checks it against its descriptor. */
  async getBlobBytes(repository: string, desc: Descriptor, what: string): Promise<Buffer> {
    if (desc.size > MAX_JSON_BYTES)
      throw EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
        problem: 'too-large',
        subject: `${what} ${desc.digest}`,
        size: desc.size,
        digest: desc.digest,
      });
    const path = `${repository}/blobs/${desc.digest}`;
    const url = new URL(`${this.baseUrl}/v2/${path}`);
    const res = await this.request(repository, 'GET', path);
    const status = res.statusCode ?? 0;
    if (status === 404)
      throw this.blobNotFound(repository, desc.digest, status, (await errorBody(res, url, this.what)).code);
    if (status !== 200)
      throw statusError(status, url, this.what, await errorBody(res, url, this.what), {
        registry: this.registry,
        repository,
        digest: desc.digest,
      });
    const bytes = await readBody(res, url, this.what, MAX_JSON_BYTES);
    const actual = `sha256:${sha256(bytes)}`;
    if (actual !== desc.digest || bytes.length !== desc.size) {
      throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'descriptor',
        blob: `${what} ${desc.digest}`,
        from: `${this.registry}/${repository}`,
        registry: this.registry,
        repository,
        digest: desc.digest,
        actual,
        size: bytes.length,
        expectedSize: desc.size,
      });
    }
    return bytes;
  }

  /** GETs a blob from byte `offset` on (a Range request when offset > 0). */
  async getBlob(repository: string, digest: string, offset: number): Promise<BlobResponse> {
    const path = `${repository}/blobs/${digest}`;
    const url = new URL(`${this.baseUrl}/v2/${path}`);
    const res = await this.request(repository, 'GET', path, offset > 0 ? { range: `bytes=${offset}-` } : {});
    const status = res.statusCode ?? 0;
    if (status === 200) return { res, status, start: 0 };
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
      if (!m) {
        await drain(res);
        throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
          problem: 'content-range',
          server: this.what,
          url: url.href,
          digest,
          contentRange: res.headers['content-range'],
        });
      }
      return { res, status, start: Number(m[1]) };
    }
    const err = await errorBody(res, url, this.what);
    if (status === 404) throw this.blobNotFound(repository, digest, status, err.code);
    if (status === 416) {
      throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', {
        problem: 'shorter-than-downloaded',
        from: `${this.registry}/${repository}`,
        registry: this.registry,
        repository,
        digest,
        offset,
        status,
      });
    }
    throw statusError(status, url, this.what, err, { registry: this.registry, repository, digest });
  }
}

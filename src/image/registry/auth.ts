/**
 * Registry authentication: credentials from a docker-style auth file, `WWW-Authenticate`
 * challenges, and bearer tokens as Docker Hub, GHCR and `registry` (auth: token) issue them:
 * a 401 names a realm, a service and a scope; the token comes from
 * GET <realm>?service=…&scope=… (with basic credentials when there are any) and is cached
 * until it expires.
 *
 * The credentials file is docker's `config.json` format (podman/skopeo `auth.json` too):
 *   { "auths": { "ghcr.io": { "auth": "<base64 user:password>" },
 *                "localhost:5000": { "username": "u", "password": "p" } } }
 * Keys may carry a scheme and path (`https://index.docker.io/v1/` means docker.io).
 * Credential helpers (`credsStore`, `credHelpers`) and identity tokens are not read.
 */
import { readFile } from 'node:fs/promises';
import { EmbersError } from '../../errors.js';
import { errorBody, readBody, send } from './http.js';
import { isInsecure } from './options.js';
import { canonicalRegistry } from './reference.js';

export interface Credentials {
  username: string;
  password: string;
}

export interface Challenge {
  /** Lowercase: 'bearer', 'basic', … */
  scheme: string;
  params: Record<string, string>;
}

/** The registry name an auth-file key stands for (`https://index.docker.io/v1/` → docker.io). */
export function normalizeAuthKey(key: string): string {
  let k = key
    .trim()
    .toLowerCase()
    .replace(/^[a-z]+:\/\//, '');
  const slash = k.indexOf('/');
  if (slash !== -1) k = k.slice(0, slash);
  return canonicalRegistry(k);
}

/** Reads the `auths` of a docker-style credentials file; a missing file gives none. */
export async function loadAuthFile(path: string): Promise<Map<string, Credentials>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw EmbersError.of(
      'EMB_CONFIG_INVALID',
      {
        option: 'the registry credentials file',
        value: path,
        problem: 'cannot be read',
        reason: (err as Error).message,
      },
      { cause: err },
    );
  }
  const bad = (why: string) =>
    EmbersError.of(
      'EMB_CONFIG_INVALID',
      { option: 'the registry credentials file', value: path, problem: 'is not valid', reason: why },
      { hint: 'write it in docker config.json format: {"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}' },
    );
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad((err as Error).message);
  }
  const out = new Map<string, Credentials>();
  if (typeof doc !== 'object' || doc === null) throw bad('not a JSON object');
  const auths = (doc as { auths?: unknown }).auths;
  if (auths === undefined) return out;
  if (typeof auths !== 'object' || auths === null) throw bad('"auths" is not an object');
  for (const [key, entry] of Object.entries(auths as Record<string, unknown>)) {
    if (typeof entry !== 'object' || entry === null) throw bad(`auths[${JSON.stringify(key)}] is not an object`);
    const e = entry as { auth?: unknown; username?: unknown; password?: unknown };
    let creds: Credentials | undefined;
    if (typeof e.auth === 'string' && e.auth !== '') {
      const plain = Buffer.from(e.auth, 'base64').toString('utf8');
      const colon = plain.indexOf(':');
      if (colon <= 0) throw bad(`auths[${JSON.stringify(key)}].auth is not base64 of user:password`);
      creds = { username: plain.slice(0, colon), password: plain.slice(colon + 1) };
    } else if (typeof e.username === 'string' && typeof e.password === 'string') {
      creds = { username: e.username, password: e.password };
    }
    if (creds) out.set(normalizeAuthKey(key), creds);
  }
  return out;
}

export function basicHeader(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
}

/** Parses a WWW-Authenticate header (one or more challenges: `Bearer realm="…",service="…"`). */
export function parseChallenges(header: string | undefined): Challenge[] {
  const out: Challenge[] = [];
  if (!header) return out;
  let i = 0;
  const n = header.length;
  const skipWs = () => {
    while (i < n && /[\s,]/.test(header[i]!)) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skipWs();
    const start = i;
    const word = token();
    if (word === '') {
      i++;
      continue;
    }
    let j = i;
    while (j < n && header[j] === ' ') j++;
    if (header[j] === '=' && current) {
      // a parameter of the current challenge
      i = j + 1;
      while (i < n && header[i] === ' ') i++;
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++;
      } else {
        const vs = i;
        while (i < n && header[i] !== ',') i++;
        value = header.slice(vs, i).trim();
      }
      current.params[word.toLowerCase()] = value;
    } else {
      if (i === start) i++;
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

/** Bearer tokens by realm, service, scope and user; shared by the clients of one ImageStore. */
export class TokenCache {
  private readonly tokens = new Map<string, CachedToken>();

  private key(realm: string, service: string, scope: string, creds: Credentials | undefined): string {
    return `${realm}\n${service}\n${scope}\n${creds?.username ?? ''}`;
  }

  get(realm: string, service: string, scope: string, creds: Credentials | undefined): string | undefined {
    const hit = this.tokens.get(this.key(realm, service, scope, creds));
    return hit && hit.expiresAt > Date.now() ? hit.token : undefined;
  }

  forget(realm: string, service: string, scope: string, creds: Credentials | undefined): void {
    this.tokens.delete(this.key(realm, service, scope, creds));
  }

  /**
   * Gets a token from the realm of a Bearer challenge for `scope` (e.g.
   * `repository:acme/fn:pull`), sending basic credentials when there are some.
   */
  async fetch(
    challenge: Challenge,
    scope: string,
    creds: Credentials | undefined,
    ctx: { registry: string; insecure: readonly string[]; timeoutMs: number; userAgent: string; signal?: AbortSignal },
  ): Promise<string> {
    const realm = challenge.params.realm;
    const service = challenge.params.service ?? '';
    if (!realm)
      throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'no-realm', registry: ctx.registry, challenge });
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'invalid-realm', registry: ctx.registry, realm });
    }
    if (url.protocol === 'http:' && !isInsecure(url.host, ctx.insecure)) {
      throw EmbersError.of('EMB_REGISTRY_TLS', { problem: 'plain-http-realm', registry: ctx.registry, realm });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', { problem: 'realm-scheme', registry: ctx.registry, realm });
    if (service) url.searchParams.set('service', service);
    const scopes = new Set([scope, ...(challenge.params.scope ? challenge.params.scope.split(' ') : [])]);
    for (const s of scopes) url.searchParams.append('scope', s);
    if (creds) url.searchParams.set('account', creds.username);
    const what = `the token service of ${ctx.registry}`;
    const headers: Record<string, string> = { 'user-agent': ctx.userAgent, accept: 'application/json' };
    if (creds) headers.authorization = basicHeader(creds);
    const res = await send(url, { method: 'GET', headers, timeoutMs: ctx.timeoutMs, signal: ctx.signal, what });
    const status = res.statusCode ?? 0;
    if (status === 401 || status === 403) {
      const err = await errorBody(res, url, what);
      throw EmbersError.of('EMB_REGISTRY_AUTH', {
        problem: 'token',
        server: what,
        url: `${url.origin}${url.pathname}`,
        registry: ctx.registry,
        realm,
        scope,
        status,
        username: creds?.username,
        ...(err.message ? { registryMessage: err.message } : {}),
      });
    }
    if (status !== 200) {
      const err = await errorBody(res, url, what);
      const details = {
        server: what,
        registry: ctx.registry,
        realm,
        status,
        ...(err.message ? { registryMessage: err.message } : {}),
      };
      throw status >= 500 || status === 429
        ? EmbersError.of('EMB_REGISTRY_UNAVAILABLE', details)
        : EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', details);
    }
    const body = await readBody(res, url, what, 1 << 20);
    let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      doc = JSON.parse(body.toString('utf8')) as typeof doc;
    } catch {
      throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
        problem: 'not-json',
        server: what,
        registry: ctx.registry,
        realm,
      });
    }
    const token =
      typeof doc.token === 'string' && doc.token
        ? doc.token
        : typeof doc.access_token === 'string'
          ? doc.access_token
          : '';
    if (!token)
      throw EmbersError.of('EMB_REGISTRY_REQUEST_FAILED', {
        problem: 'no-token',
        server: what,
        registry: ctx.registry,
        realm,
      });
    const lifetime = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : 60;
    this.tokens.set(this.key(realm, service, scope, creds), {
      token,
      expiresAt: Date.now() + Math.max(1, lifetime - 10) * 1000,
    });
    return token;
  }
}

/**
 * Pulls snapshots from a peer node (its `peer-server`), through the shared downloader: the same
 * ranges, resume, verification and atomic publish as a pull from S3.
 */
import { EmbersError } from '../errors.js';
import { parseRetryAfter, retry, retryPolicy, type RetryOptions, type RetryPolicy } from '../util/retry.js';
import { isHttpUrl } from '../util/url.js';
import {
  MANIFEST_NAME,
  parseManifest,
  requireSnapshotId,
  type SnapshotFile,
  type SnapshotManifest,
} from './manifest.js';
import { WORKING_SET_MANIFEST_PATH, SnapshotRemote, type WorkingSetSource } from './working-set-transfer.js';
import { PEER_API_PATH, PEER_SHA256_HEADER, type PeerSnapshotList } from './peer-server.js';
import { errnoCode } from '../util/errno.js';
import { emptyBody, isTransientTransferError } from './transfer.js';

export interface PeerClientOptions {
  /** The peer's base URL, e.g. `http://10.0.0.2:7070`. */
  url: string;
  /** The token the peer was started with. */
  token: string;
  /** Retry policy for `list` and `has` (a pull takes its own, in TransferOptions).
   * @default { attempts: 5, baseDelayMs: 200, maxDelayMs: 5000 } */
  retry?: RetryOptions;
  /** How long a request may wait for the answer, or for the next bytes of its body, before it
   * counts as stalled (EMB_REMOTE_UNREACHABLE, retried like a broken connection), in ms.
   * @default 60000 */
  stallTimeoutMs?: number;
}

export class PeerClient extends SnapshotRemote {
  /** The peer's base URL, without a trailing slash. */
  readonly url: string;
  private readonly token: string;
  private readonly retry: RetryPolicy;
  private readonly stallTimeoutMs: number;
  readonly source: WorkingSetSource;

  constructor(opts: PeerClientOptions) {
    super();
    if (!isHttpUrl(opts.url)) {
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'peer URL',
        value: opts.url,
        problem: 'is not an http(s) URL',
      });
    }
    this.url = opts.url.replace(/\/+$/, '');
    this.token = opts.token;
    this.retry = retryPolicy(opts.retry);
    this.stallTimeoutMs = opts.stallTimeoutMs ?? 60_000;
    if (!(this.stallTimeoutMs > 0)) {
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'stallTimeoutMs',
        value: opts.stallTimeoutMs,
        expected: '> 0 ms',
      });
    }
    this.source = {
      location: `peer ${this.url}`,
      readManifest: (id, signal) => this.readManifest(id, signal),
      readRange: (id, file, start, end, signal) => this.readRange(id, file, start, end, signal),
      readWorkingSetManifest: (id, signal) => this.readWorkingSetManifest(id, signal),
    };
  }

  /** The snapshots the peer holds. */
  async list(): Promise<PeerSnapshotList['snapshots']> {
    return retry(
      async () => {
        const res = await this.request(PEER_API_PATH, 'GET', {}, undefined);
        if (res.status !== 200) throw await this.unexpected(res, 'list snapshots');
        try {
          return ((await res.json()) as PeerSnapshotList).snapshots;
        } catch (err) {
          throw this.broken('the snapshot list', err);
        }
      },
      isTransientTransferError,
      this.retry,
    );
  }

  /** True when the peer holds snapshot `id`. */
  async has(id: string): Promise<boolean> {
    requireSnapshotId(id);
    return retry(
      async () => {
        const res = await this.request(`${PEER_API_PATH}/${id}/${MANIFEST_NAME}`, 'HEAD', {}, undefined);
        if (res.status === 200) return true;
        if (res.status === 404) return false;
        throw await this.unexpected(res, `HEAD ${id}/${MANIFEST_NAME}`);
      },
      isTransientTransferError,
      this.retry,
    );
  }

  /** The manifest of snapshot `id` at the peer, parsed and checked (to find a snapshot by what it runs without fetching it). */
  async manifest(id: string): Promise<SnapshotManifest> {
    return parseManifest(await this.readManifest(id, undefined), `peer ${this.url}: ${id}/${MANIFEST_NAME}`);
  }

  private async readWorkingSetManifest(id: string, signal: AbortSignal | undefined): Promise<string | undefined> {
    requireSnapshotId(id);
    const res = await this.request(`${PEER_API_PATH}/${id}/${WORKING_SET_MANIFEST_PATH}`, 'GET', {}, signal);
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (res.status !== 200) throw await this.unexpected(res, `GET ${id}/${WORKING_SET_MANIFEST_PATH}`);
    try {
      return await res.text();
    } catch (err) {
      throw this.broken(`${id}/${WORKING_SET_MANIFEST_PATH}`, err);
    }
  }

  private async readManifest(id: string, signal: AbortSignal | undefined): Promise<string> {
    requireSnapshotId(id);
    const res = await this.request(`${PEER_API_PATH}/${id}/${MANIFEST_NAME}`, 'GET', {}, signal);
    if (res.status === 404) {
      await res.body?.cancel();
      throw EmbersError.of('EMB_REMOTE_NOT_FOUND', { id, endpoint: this.url });
    }
    if (res.status !== 200) throw await this.unexpected(res, `GET ${id}/${MANIFEST_NAME}`);
    try {
      return await res.text();
    } catch (err) {
      throw this.broken(`${id}/${MANIFEST_NAME}`, err);
    }
  }

  private async readRange(
    id: string,
    f: SnapshotFile,
    start: number,
    end: number,
    signal: AbortSignal | undefined,
  ): Promise<AsyncIterable<Uint8Array>> {
    const path = `${PEER_API_PATH}/${id}/${f.name}`;
    const mismatch = (found: {
      problem: 'remote-missing' | 'remote-size' | 'remote-short' | 'remote-digest';
      actualBytes?: number;
      actual?: string;
      serviceCode?: string;
    }) =>
      EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
        ...found,
        remote: 'peer',
        id,
        file: f.name,
        endpoint: this.url,
        sizeBytes: f.sizeBytes,
        expected: f.sha256,
      });
    const empty = start === end;
    const res = await this.request(
      path,
      empty ? 'HEAD' : 'GET',
      empty ? {} : { Range: `bytes=${start}-${end - 1}` },
      signal,
    );
    const fail = async (err: EmbersError): Promise<never> => {
      await res.body?.cancel().catch(() => {});
      throw err;
    };
    if (res.status === 404) return fail(mismatch({ problem: 'remote-missing', serviceCode: await errorCode(res) }));
    if (res.status === 416) return fail(mismatch({ problem: 'remote-short' }));
    const sha = res.headers.get(PEER_SHA256_HEADER);
    if (sha !== null && sha !== f.sha256) return fail(mismatch({ problem: 'remote-digest', actual: sha }));
    if (empty) {
      if (res.status !== 200) return fail(await this.unexpected(res, `HEAD ${path}`));
      const size = Number(res.headers.get('content-length'));
      if (size !== f.sizeBytes) return fail(mismatch({ problem: 'remote-size', actualBytes: size }));
      return emptyBody();
    }
    if (res.status !== 206) return fail(await this.unexpected(res, `GET ${path} bytes=${start}-${end - 1}`));
    const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get('content-range') ?? '');
    if (!cr)
      return fail(
        EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
          problem: 'no-content-range',
          remote: 'peer',
          endpoint: this.url,
          path,
        }),
      );
    if (Number(cr[3]) !== f.sizeBytes) return fail(mismatch({ problem: 'remote-size', actualBytes: Number(cr[3]) }));
    if (Number(cr[1]) !== start || Number(cr[2]) !== end - 1) {
      return fail(
        EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
          problem: 'wrong-range',
          remote: 'peer',
          endpoint: this.url,
          path,
          contentRange: `bytes ${cr[1]}-${cr[2]}`,
          start,
          end,
        }),
      );
    }
    if (!res.body) return fail(this.broken(path, undefined));
    return res.body as unknown as AsyncIterable<Uint8Array>;
  }

  /** One HTTP request; network failures become EMB_REMOTE_UNREACHABLE, 401 EMB_PEER_AUTH, 5xx/429 EMB_REMOTE_UNAVAILABLE. */
  private async request(
    path: string,
    method: 'GET' | 'HEAD',
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
  ): Promise<Response> {
    // a stalled peer (no answer, or no more bytes of the body, for stallTimeoutMs) is a broken connection
    const ac = new AbortController();
    const onAbort = () => ac.abort(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const disarm = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        ac.abort(
          EmbersError.of('EMB_REMOTE_UNREACHABLE', {
            problem: 'stalled',
            remote: 'peer',
            request: `${method} ${path}`,
            endpoint: this.url,
            path,
            stallTimeoutMs: this.stallTimeoutMs,
          }),
        );
      }, this.stallTimeoutMs);
      timer.unref();
    };
    arm();
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, {
        method,
        headers: { ...headers, Authorization: `Bearer ${this.token}` },
        signal: ac.signal,
      });
      if (res.body) {
        const body = res.body.pipeThrough(
          new TransformStream<Uint8Array, Uint8Array>({
            transform(chunk, controller) {
              arm();
              controller.enqueue(chunk);
            },
            flush: disarm,
          }),
        );
        res = new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
      } else disarm();
    } catch (err) {
      disarm();
      if (signal?.aborted) throw signal.reason;
      if (ac.signal.aborted && ac.signal.reason instanceof EmbersError) throw ac.signal.reason;
      const code = errnoCode(err);
      throw EmbersError.of(
        'EMB_REMOTE_UNREACHABLE',
        {
          problem: 'connect',
          remote: 'peer',
          endpoint: this.url,
          path,
          cause: code ?? null,
          reason: (err as Error).message,
        },
        { cause: err },
      );
    }
    if (res.status === 401) {
      await res.body?.cancel();
      throw EmbersError.of('EMB_PEER_AUTH', { endpoint: this.url, path, request: `${method} ${path}` });
    }
    if (res.status >= 500 || res.status === 429) {
      const code = await errorCode(res);
      const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'));
      throw EmbersError.of('EMB_REMOTE_UNAVAILABLE', {
        remote: 'peer',
        request: `${method} ${path}`,
        endpoint: this.url,
        path,
        status: res.status,
        serviceCode: code,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      });
    }
    return res;
  }

  private async unexpected(res: Response, what: string): Promise<EmbersError> {
    const code = await errorCode(res);
    return EmbersError.of('EMB_REMOTE_REQUEST_FAILED', {
      problem: 'refused',
      remote: 'peer',
      request: what,
      endpoint: this.url,
      status: res.status,
      serviceCode: code,
    });
  }

  private broken(what: string, cause: unknown): EmbersError {
    return EmbersError.of(
      'EMB_REMOTE_UNREACHABLE',
      { problem: 'broken', remote: 'peer', endpoint: this.url, reading: what },
      cause === undefined ? undefined : { cause },
    );
  }
}

/** The `code` of a peer's JSON error body, or the status text. */
async function errorCode(res: Response): Promise<string> {
  try {
    const body = (await res.json()) as { code?: unknown };
    return typeof body.code === 'string' ? body.code : res.statusText;
  } catch {
    return res.statusText;
  }
}

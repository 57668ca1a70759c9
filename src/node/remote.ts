import { EmbersError } from '../errors.js';
import type { LocalSnapshotStore } from '../snapshot/local-store.js';
import { PeerClient } from '../snapshot/peer-client.js';
import { S3SnapshotStore, type S3StoreOptions } from '../snapshot/s3-store.js';
import { s3Settings } from '../config.js';
import type { TransferOptions, TransferResult } from '../snapshot/transfer.js';
import type { WorkingSetSource } from '../snapshot/working-set-transfer.js';

/** vHive's snapshot modes: off, local only, or local plus a remote store. */
export type SnapshotMode = 'disabled' | 'local' | 'remote';

export interface RemoteOptions {
  /** @default 'local', or 'remote' when an S3 store is configured (EMBERS_S3_*) */
  snapshots?: SnapshotMode;
  /** Keep snapshots downloaded for a restore; off deletes them after use. @default true */
  cacheSnapshots?: boolean;
  /** The S3-compatible store. @default from EMBERS_S3_* (see config.ts: s3Settings) */
  s3?: S3StoreOptions;
}

/** Where a snapshot came from for a restore. */
export type SnapshotSource = { kind: 'local' } | { kind: 's3' } | { kind: 'peer'; url: string; token: string };

/**
 * The remote side of a node's snapshots: uploads after create in remote mode, downloads
 * before restore when a snapshot is not here, from S3 or straight from a peer node. Every
 * download is verified file by file and published atomically (see snapshot/transfer.ts).
 */
export class RemoteSnapshots {
  readonly mode: SnapshotMode;
  readonly cacheSnapshots: boolean;
  private readonly s3Options: S3StoreOptions | undefined;
  private s3Store: S3SnapshotStore | undefined;

  constructor(opts: RemoteOptions = {}) {
    this.s3Options = opts.s3 ?? s3Settings();
    this.mode = opts.snapshots ?? (this.s3Options ? 'remote' : 'local');
    this.cacheSnapshots = opts.cacheSnapshots ?? true;
    if (!['disabled', 'local', 'remote'].includes(this.mode)) {
      throw EmbersError.of('EMB_CONFIG_INVALID', {
        option: 'snapshots',
        value: this.mode,
        expected: 'disabled, local or remote',
      });
    }
    if (this.mode === 'remote' && !this.s3Options) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        { option: 'snapshots', value: 'remote', problem: 'needs an S3-compatible store' },
        {
          hint: 'set EMBERS_S3_ENDPOINT, EMBERS_S3_BUCKET, EMBERS_S3_ACCESS_KEY_ID and EMBERS_S3_SECRET_ACCESS_KEY (or pass --s3-endpoint/--s3-bucket)',
        },
      );
    }
  }

  requireEnabled(): void {
    if (this.mode === 'disabled') {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        { option: 'snapshots', problem: 'are disabled on this node (--snapshots disabled)' },
        { hint: 'run with --snapshots local or remote' },
      );
    }
  }

  /** The S3 store (remote mode, or any mode with a store configured for push/pull by hand). */
  s3(): S3SnapshotStore {
    if (!this.s3Options) {
      throw EmbersError.of(
        'EMB_CONFIG_INVALID',
        { option: 'EMBERS_S3_BUCKET', problem: 'is not set: no S3-compatible store is configured' },
        {
          hint: 'set EMBERS_S3_ENDPOINT, EMBERS_S3_BUCKET and the EMBERS_S3_ACCESS_KEY_ID/SECRET_ACCESS_KEY pair',
        },
      );
    }
    this.s3Store ??= new S3SnapshotStore(this.s3Options);
    return this.s3Store;
  }

  async push(local: LocalSnapshotStore, id: string, opts?: TransferOptions): Promise<TransferResult> {
    return this.s3().push(local, id, opts);
  }

  /** Makes `id` present in the local store, fetching it from `source` if it is not. */
  async ensureLocal(
    local: LocalSnapshotStore,
    id: string,
    source: SnapshotSource,
    opts?: TransferOptions,
  ): Promise<{ fetched: TransferResult | undefined }> {
    if (await local.has(id)) return { fetched: undefined };
    if (source.kind === 'peer')
      return { fetched: await new PeerClient({ url: source.url, token: source.token }).pull(local, id, opts) };
    if (source.kind === 's3' || this.mode === 'remote') return { fetched: await this.s3().pull(local, id, opts) };
    return { fetched: undefined }; // local mode: the store answers "not found" itself
  }

  /**
   * Fetches the working set of local snapshot `id` from `source` (S3 or a peer) if the store has
   * none and the source has one: for a snapshot pulled before its working set was recorded.
   */
  async pullWorkingSet(
    local: LocalSnapshotStore,
    id: string,
    source: SnapshotSource,
    opts?: TransferOptions,
  ): Promise<{ bytes: number } | undefined> {
    if (source.kind === 'peer')
      return new PeerClient({ url: source.url, token: source.token }).pullWorkingSet(local, id, opts);
    if (source.kind === 's3' || this.mode === 'remote') return this.s3().pullWorkingSet(local, id, opts);
    return undefined;
  }

  /**
   * Where `source` reads a snapshot's bytes from (ranged reads), for a restore that starts before
   * the memory file has arrived; undefined for a local source in local mode.
   */
  rangeSource(source: SnapshotSource): WorkingSetSource | undefined {
    if (source.kind === 'peer') return new PeerClient({ url: source.url, token: source.token }).source;
    if (source.kind === 's3' || this.mode === 'remote') return this.s3().source;
    return undefined;
  }

  close(): void {
    this.s3Store?.close();
  }
}

/**
 * Finds a snapshot of a revision on other nodes: in the S3-compatible store and on peer nodes
 * (`embers serve --peer URL`, their peer endpoints). A snapshot belongs to a revision by its
 * snapshot key (functions.ts), computed from its manifest; manifests are immutable per id, so
 * each is read once. All places are searched at once, and one that fails or is unreachable is
 * logged and skipped: a lookup answers with what the others hold.
 *
 * The newest snapshot of the key wins; the places that hold it come in the order to try them:
 * peers first (straight from a node, no store in between), then the store. What an early start
 * needs (node/arriving-snapshot.ts) comes with it: whether its manifest gives the memory file's
 * chunk digests, and whether the first of those places has its working set.
 */
import { asEmbersError } from '../errors.js';
import { PeerClient } from '../snapshot/peer-client.js';
import { SNAPSHOT_FILES, fileEntry, type SnapshotManifest } from '../snapshot/manifest.js';
import { snapshotKey } from './functions.js';
import { functionOfSnapshot } from './function-spec.js';
import type { RemoteSnapshots, SnapshotSource } from './remote.js';

export interface Peer {
  url: string;
  token: string;
}

export interface FoundSnapshot {
  id: string;
  createdAt: string;
  /** Where it can be fetched from, in the order to try. */
  sources: SnapshotSource[];
  /** Its manifest gives the memory file's per-chunk sha256 (each chunk can be verified on its own). */
  memoryChunked: boolean;
  /** The first of `sources` has its working set (checked only for a snapshot with `memoryChunked`). */
  workingSet: boolean;
}

export interface SnapshotFinderOptions {
  remote: RemoteSnapshots;
  /** Search the S3-compatible store (the node is in remote mode). */
  useStore: boolean;
  peers: Peer[];
  log?: (level: 'warn', msg: string, fields: Record<string, unknown>) => void;
}

export class SnapshotFinder {
  private readonly remote: RemoteSnapshots;
  private readonly useStore: boolean;
  private readonly peers: { peer: Peer; client: PeerClient }[];
  private readonly log: NonNullable<SnapshotFinderOptions['log']>;
  /** The key of every manifest read so far (id → key), and whether it gives the memory file's chunk digests. */
  private readonly keys = new Map<string, Known>();

  constructor(opts: SnapshotFinderOptions) {
    this.remote = opts.remote;
    this.useStore = opts.useStore;
    // one attempt per lookup: a cold start waits for it; a peer that is down is skipped, not retried
    this.peers = opts.peers.map((peer) => ({ peer, client: new PeerClient({ ...peer, retry: { attempts: 1 } }) }));
    this.log = opts.log ?? (() => undefined);
  }

  /** True when there is anywhere to search. */
  get searches(): boolean {
    return this.useStore || this.peers.length > 0;
  }

  /** Records the key of a snapshot this node made (so a lookup need not read its manifest back). */
  note(m: SnapshotManifest, key: string): void {
    this.keys.set(m.id, { key, createdAt: m.createdAt, memoryChunked: memoryChunked(m) });
  }

  /** The newest snapshot of `key` that another place holds, or undefined. */
  async find(key: string): Promise<FoundSnapshot | undefined> {
    const places: {
      source: SnapshotSource;
      ids: () => Promise<string[]>;
      manifest: (id: string) => Promise<SnapshotManifest>;
      hasWorkingSet: (id: string) => Promise<boolean>;
    }[] = [
      ...this.peers.map(({ peer, client }) => ({
        source: { kind: 'peer' as const, url: peer.url, token: peer.token },
        ids: async () => (await client.list()).map((s) => s.id),
        manifest: (id: string) => client.manifest(id),
        hasWorkingSet: async (id: string) => (await client.source.readWorkingSetManifest(id, undefined)) !== undefined,
      })),
      ...(this.useStore
        ? [
            {
              source: { kind: 's3' as const },
              ids: () => this.remote.s3().list(),
              manifest: (id: string) => this.remote.s3().manifest(id),
              hasWorkingSet: async (id: string) =>
                (await this.remote.s3().source.readWorkingSetManifest(id, undefined)) !== undefined,
            },
          ]
        : []),
    ];
    const found = new Map<string, FoundSnapshot>();
    const searched = await Promise.allSettled(
      places.map(async (p) => ({ place: p, ids: await this.matching(key, p.ids, p.manifest) })),
    );
    searched.forEach((r, i) => {
      if (r.status === 'rejected') {
        const e = asEmbersError(r.reason);
        const where = places[i].source.kind === 'peer' ? `peer ${(places[i].source as Peer).url}` : 'the S3 store';
        this.log('warn', `snapshot search in ${where} failed: ${e.code} ${e.message}`, { code: e.code });
        return;
      }
      for (const { id, createdAt, memoryChunked } of r.value.ids) {
        const f = found.get(id) ?? { id, createdAt, sources: [], memoryChunked, workingSet: false };
        f.sources.push(r.value.place.source);
        found.set(id, f);
      }
    });
    let newest: FoundSnapshot | undefined;
    for (const f of found.values()) if (!newest || f.createdAt > newest.createdAt) newest = f;
    if (newest?.memoryChunked) {
      // an early start reads from the first place: its working set decides (unreadable: none, the whole file first)
      const first = places.find((p) => p.source === newest.sources[0])!;
      newest.workingSet = await first.hasWorkingSet(newest.id).catch(() => false);
    }
    return newest;
  }

  /** Ids of the snapshots of `key` in the S3 store (to remove them). */
  async idsInStore(key: string): Promise<string[]> {
    if (!this.useStore) return [];
    return (
      await this.matching(
        key,
        () => this.remote.s3().list(),
        (id) => this.remote.s3().manifest(id),
      )
    ).map((x) => x.id);
  }

  /** The snapshots of `key` in one place, reading each manifest not seen before once. */
  private async matching(
    key: string,
    ids: () => Promise<string[]>,
    manifest: (id: string) => Promise<SnapshotManifest>,
  ): Promise<({ id: string } & Known)[]> {
    const out: ({ id: string } & Known)[] = [];
    for (const id of await ids()) {
      let known = this.keys.get(id);
      if (!known) {
        const m = await manifest(id).catch(() => undefined); // unreadable: not a candidate (a restore would refuse it too)
        if (!m) continue;
        known = {
          key: snapshotKey(m.image.manifestDigest, functionOfSnapshot(m)),
          createdAt: m.createdAt,
          memoryChunked: memoryChunked(m),
        };
        this.keys.set(id, known);
      }
      if (known.key === key) out.push({ id, ...known });
    }
    return out;
  }
}

/** What the finder keeps of a manifest it read. */
interface Known {
  key: string;
  createdAt: string;
  memoryChunked: boolean;
}

/** Whether `m` gives its memory file's per-chunk sha256 (what an early start verifies each chunk against). */
export function memoryChunked(m: SnapshotManifest): boolean {
  const memory = fileEntry(m, SNAPSHOT_FILES.memory);
  return Boolean(memory?.chunkSha256?.length && memory.chunkSize);
}

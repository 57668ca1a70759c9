import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import {
  exists,
  fsyncPath,
  sha256,
  sha256File,
  sha256FileWithDataRanges,
  writeFileAtomic,
  writeJsonAtomic,
} from '../util/fs.js';
import { pidAlive } from '../util/pid.js';
import { lockHeld, lockOwner } from '../util/lock.js';
import {
  MANIFEST_FORMAT,
  MANIFEST_NAME,
  WORKING_SET_DIR,
  WORKING_SET_STAGING,
  isSnapshotId,
  parseManifest,
  requireSnapshotId,
  type SnapshotFile,
  type SnapshotManifest,
} from './manifest.js';
import { crashPoint } from '../util/crash-point.js';

const STAGING = '.staging-';
/** Files from this size whose data is at most this fraction of it get a data map in the manifest. */
const SPARSE_MIN_BYTES = 4 * 1024 * 1024;
const SPARSE_MAX_DATA_FRACTION = 0.75;
/** Interrupted push/pull state (see transfer.ts); dropped by reconcile after a week unused. */
const TRANSFERS = '.transfers';
const STALE_TRANSFER_MS = 7 * 24 * 3600_000;
const TRASH = '.trash-';
/** `<id>-<pid>-<random>`: a process (a restore) reads snapshot <id>; `remove` refuses meanwhile. */
const PINS = '.pins';

/** A file's identity: if any of these change, its digest must be checked again. */
interface FileStamp {
  dev: number;
  ino: number;
  size: number;
  mtimeNs: string;
  ctimeNs: string;
}

/**
 * The local snapshot store: one directory per snapshot under `dir`, published whole by an
 * atomic rename of a staging dir, never modified afterwards. Readers verify sizes and
 * sha256 digests against the manifest before anything is restored.
 */
export class LocalSnapshotStore {
  constructor(readonly dir: string) {}

  pathOf(id: string): string {
    requireSnapshotId(id);
    return join(this.dir, id);
  }

  /** A fresh staging dir on the store's filesystem, owned by this process until published or dropped. */
  async staging(): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const path = join(this.dir, `${STAGING}${process.pid}-${randomBytes(4).toString('hex')}`);
    await mkdir(path);
    return path;
  }

  /**
   * Hashes every file of `stagingDir`, writes the manifest, fsyncs, and renames the dir into
   * place as the snapshot. A crash before the rename leaves only a staging dir, which
   * `reconcile` removes; after it, a whole snapshot.
   */
  async publish(
    stagingDir: string,
    meta: Omit<SnapshotManifest, 'id' | 'files' | 'formatVersion'>,
    opts: {
      /** Per-chunk sha256 of some files (by name), computed by the caller (memory/chunks.ts): recorded as their chunkSha256/chunkSize. */
      chunks?: Record<string, { chunkSize: number; sha256: string[] }>;
    } = {},
  ): Promise<SnapshotManifest> {
    const files: SnapshotFile[] = [];
    for (const name of (await readdir(stagingDir)).sort()) {
      const path = join(stagingDir, name);
      const scan = await sha256FileWithDataRanges(path);
      await fsyncPath(path);
      const entry: SnapshotFile = { name, sizeBytes: scan.size, sha256: scan.sha256 };
      // a file that is mostly zeros (guest memory) records where its data is, so transfers skip the rest
      if (scan.size >= SPARSE_MIN_BYTES && scan.dataBytes <= scan.size * SPARSE_MAX_DATA_FRACTION)
        entry.dataRanges = scan.dataRanges;
      const chunks = opts.chunks?.[name];
      if (chunks) {
        if (chunks.sha256.length !== Math.ceil(scan.size / chunks.chunkSize)) {
          throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
            problem: 'chunks-cover',
            file: name,
            sizeBytes: scan.size,
            chunkSize: chunks.chunkSize,
            chunks: chunks.sha256.length,
          });
        }
        entry.chunkSha256 = chunks.sha256;
        entry.chunkSize = chunks.chunkSize;
      }
      files.push(entry);
    }
    const id = `snap-${sha256(JSON.stringify({ meta, files, nonce: randomBytes(8).toString('hex') })).slice(0, 24)}`;
    const manifest: SnapshotManifest = { formatVersion: MANIFEST_FORMAT, id, ...meta, files };
    await writeJsonAtomic(join(stagingDir, MANIFEST_NAME), manifest); // fsyncs stagingDir too
    await crashPoint('snapshot.publish.before-rename');
    await rename(stagingDir, join(this.dir, id));
    await fsyncPath(this.dir);
    return manifest;
  }

  /**
   * Publishes a snapshot fetched from another store, under the id its manifest gives.
   * `stagingDir` (from `staging()`) must hold exactly the files `manifest` lists, at their
   * sizes; their digests must already have been checked against the manifest (the transfer
   * code hashes every file before it gets here). Writes the manifest, fsyncs, and renames the
   * dir into place, as `publish` does: readers see the whole snapshot or nothing. If the
   * snapshot is already in the store (ids name immutable content), the staging dir is dropped
   * and the stored snapshot kept.
   */
  async publishFetched(stagingDir: string, manifest: SnapshotManifest): Promise<SnapshotManifest> {
    const text = `${JSON.stringify(manifest, null, 2)}\n`;
    const m = parseManifest(text, `${String(manifest.id)}/${MANIFEST_NAME} (fetched)`);
    const target = this.pathOf(m.id);
    const staged = (await readdir(stagingDir)).sort();
    const listed = m.files.map((f) => f.name).sort();
    if (staged.join('/') !== listed.join('/'))
      throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'staged-files', id: m.id, staged, listed });
    for (const f of m.files) {
      const path = join(stagingDir, f.name);
      const st = await stat(path);
      if (st.size !== f.sizeBytes) {
        throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
          problem: 'size',
          fetched: true,
          id: m.id,
          file: f.name,
          actualBytes: st.size,
          sizeBytes: f.sizeBytes,
        });
      }
      await fsyncPath(path);
    }
    await writeFileAtomic(join(stagingDir, MANIFEST_NAME), text); // fsyncs stagingDir too
    try {
      await rename(stagingDir, target);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await this.has(m.id))) {
        await rm(stagingDir, { recursive: true, force: true });
        return this.get(m.id);
      }
      throw err;
    }
    await fsyncPath(this.dir);
    return m;
  }

  async get(id: string): Promise<SnapshotManifest> {
    return (await this.getWithBytes(id)).manifest;
  }

  /** The manifest of snapshot `id`, checked as `get` does, with the bytes of its manifest.json as stored. */
  async getWithBytes(id: string): Promise<{ manifest: SnapshotManifest; bytes: Buffer }> {
    const dir = this.pathOf(id);
    const bytes = await readFile(join(dir, MANIFEST_NAME)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (bytes === undefined) {
      if (await exists(dir))
        throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'manifest-missing', id, file: MANIFEST_NAME });
      throw EmbersError.of('EMB_SNAPSHOT_NOT_FOUND', { id, store: this.dir });
    }
    const m = parseManifest(bytes.toString('utf8'), `${id}/${MANIFEST_NAME}`);
    if (m.id !== id)
      throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'manifest-of-another', id, manifestId: m.id });
    return { manifest: m, bytes };
  }

  async has(id: string): Promise<boolean> {
    return exists(join(this.pathOf(id), MANIFEST_NAME));
  }

  async list(): Promise<SnapshotManifest[]> {
    const out: SnapshotManifest[] = [];
    for (const name of (await readdir(this.dir).catch(() => [] as string[])).sort()) {
      if (!isSnapshotId(name)) continue;
      try {
        out.push(await this.get(name));
      } catch {
        /* a corrupt one shows up in `inspect`, not in the list */
      }
    }
    return out;
  }

  /**
   * Proves the bundle matches its manifest: no file missing, extra, truncated or altered.
   * Digests are computed in full unless `stamps` holds an identical stamp for the file
   * (same inode, size, mtime and ctime as when it was last hashed).
   */
  async verify(m: SnapshotManifest, stamps?: Record<string, FileStamp>): Promise<Record<string, FileStamp>> {
    const dir = this.pathOf(m.id);
    // the working set is a companion with a manifest of its own (snapshot/working-set-store.ts)
    const present = new Set(
      (await readdir(dir)).filter(
        (n) => n !== MANIFEST_NAME && n !== WORKING_SET_DIR && !n.startsWith(WORKING_SET_STAGING),
      ),
    );
    for (const name of present) {
      if (!m.files.some((f) => f.name === name)) {
        throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'unlisted-file', id: m.id, file: name });
      }
    }
    const out: Record<string, FileStamp> = {};
    await Promise.all(
      m.files.map(async (f) => {
        const path = join(dir, f.name);
        const st = await stat(path, { bigint: true }).catch(() => undefined);
        if (!st) throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'missing-file', id: m.id, file: f.name });
        if (Number(st.size) !== f.sizeBytes) {
          throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
            problem: 'size',
            id: m.id,
            file: f.name,
            actualBytes: Number(st.size),
            sizeBytes: f.sizeBytes,
          });
        }
        const stamp = stampFromStats(st);
        const known = stamps?.[f.name];
        if (!known || JSON.stringify(known) !== JSON.stringify(stamp)) {
          // a file with chunk digests (memory): each chunk is checked too, in the same read, since a
          // restore whose memory file is still arriving trusts them chunk by chunk
          const { sha256: digest, chunks } = await sha256FileAndChunks(path, f.chunkSha256 ? f.chunkSize : undefined);
          const bad = f.chunkSha256?.findIndex((d, i) => chunks[i] !== d) ?? -1;
          if (bad >= 0 || (f.chunkSha256 && chunks.length !== f.chunkSha256.length)) {
            const chunk = bad >= 0 ? bad : Math.min(chunks.length, f.chunkSha256!.length);
            const start = chunk * f.chunkSize!;
            throw EmbersError.of(
              'EMB_SNAPSHOT_CORRUPT',
              {
                problem: 'chunk-digest',
                id: m.id,
                file: f.name,
                chunk,
                start,
                end: Math.min(start + f.chunkSize!, f.sizeBytes),
                expected: f.chunkSha256![chunk],
                actual: chunks[chunk],
              },
              { hint: `remove it (\`embers snapshot rm ${m.id}\`) and pull or create it again` },
            );
          }
          if (digest !== f.sha256) {
            throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', {
              problem: 'digest',
              id: m.id,
              file: f.name,
              expected: f.sha256,
              actual: digest,
            });
          }
        }
        out[f.name] = stamp;
      }),
    );
    return out;
  }

  /**
   * Stamps of a snapshot's files as they are now, without hashing: for a snapshot whose
   * digests this process has just computed or checked (published or fetched here), so the
   * first restore need not hash them again.
   */
  async stampsOf(m: SnapshotManifest): Promise<Record<string, FileStamp>> {
    const out: Record<string, FileStamp> = {};
    for (const f of m.files) {
      const st = await stampFile(join(this.pathOf(m.id), f.name));
      if (st) out[f.name] = st;
    }
    return out;
  }

  /**
   * Marks snapshot `id` as read by this process (a restore: it verifies the files and its
   * clones load them) until the returned function is called; `remove` from another process
   * refuses meanwhile (EMB_SNAPSHOT_BUSY). A pin of a dead process counts for nothing.
   */
  async pin(id: string): Promise<() => Promise<void>> {
    requireSnapshotId(id);
    const dir = join(this.dir, PINS);
    await mkdir(dir, { recursive: true });
    const path = join(dir, `${id}-${process.pid}-${randomBytes(3).toString('hex')}`);
    await writeFile(path, `${process.pid}\n`);
    return () => rm(path, { force: true });
  }

  /** Pids of other live processes that pin snapshot `id`. */
  private async readers(id: string): Promise<number[]> {
    const out: number[] = [];
    for (const name of await readdir(join(this.dir, PINS)).catch(() => [] as string[])) {
      if (!name.startsWith(`${id}-`)) continue;
      const pid = Number(name.slice(id.length + 1).split('-')[0]);
      if (pid && pid !== process.pid && (await pidAlive(pid))) out.push(pid);
    }
    return out;
  }

  /** Removes a snapshot: renamed away first, so it disappears whole. Refused while another process restores it. */
  async remove(id: string): Promise<void> {
    const dir = this.pathOf(id);
    if (!(await exists(dir))) throw EmbersError.of('EMB_SNAPSHOT_NOT_FOUND', { id });
    const readers = await this.readers(id);
    if (readers.length) {
      throw EmbersError.of('EMB_SNAPSHOT_BUSY', { id, pids: readers });
    }
    const trash = join(this.dir, `${TRASH}${id}-${randomBytes(4).toString('hex')}`);
    await rename(dir, trash);
    await rm(trash, { recursive: true, force: true });
  }

  /** Drops staging dirs and pins of dead processes (working-set staging inside snapshots too), and half-removed snapshots. */
  async reconcile(): Promise<void> {
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (name.startsWith(TRASH)) await rm(join(this.dir, name), { recursive: true, force: true });
      if (isSnapshotId(name)) {
        for (const inner of await readdir(join(this.dir, name)).catch(() => [] as string[])) {
          if (!inner.startsWith(WORKING_SET_STAGING)) continue;
          const pid = Number(inner.slice(WORKING_SET_STAGING.length).split('-')[0]);
          if (!pid || !(await pidAlive(pid))) await rm(join(this.dir, name, inner), { recursive: true, force: true });
        }
      }
      if (name.startsWith(STAGING)) {
        const pid = Number(name.slice(STAGING.length).split('-')[0]);
        if (!pid || !(await pidAlive(pid))) await rm(join(this.dir, name), { recursive: true, force: true });
      }
    }
    for (const name of await readdir(join(this.dir, PINS)).catch(() => [] as string[])) {
      const pid = Number(/^snap-[0-9a-f]+-(\d+)-/.exec(name)?.[1]);
      if (!pid || !(await pidAlive(pid))) await rm(join(this.dir, PINS, name), { force: true });
    }
    // Interrupted transfers are kept so a retry resumes them, but not forever.
    const transfers = join(this.dir, TRANSFERS);
    for (const name of await readdir(transfers).catch(() => [] as string[])) {
      const path = join(transfers, name);
      if (name.endsWith('.lock')) {
        // a lock of a process that died (kill -9 mid-transfer): the next transfer would take it over anyway
        const pid = await lockOwner(path);
        if (pid !== undefined && !(await lockHeld(path))) await rm(path, { force: true });
        continue;
      }
      const st = await stat(path).catch(() => undefined);
      const owner = /^(?:pull|push)-(snap-[0-9a-f]+)/.exec(name); // the lock is per direction and snapshot
      const locked = owner !== null && (await lockHeld(join(transfers, `${owner[0]}.lock`)));
      if (!st || locked) continue;
      // a pull killed after it published: the snapshot is whole, its journal is of no more use
      const pulledWhole =
        owner !== null && name === owner[0] && name.startsWith('pull-') && (await this.has(owner[1]!));
      if (pulledWhole || Date.now() - st.mtimeMs > STALE_TRANSFER_MS) await rm(path, { recursive: true, force: true });
    }
  }
}

export type { FileStamp };

function stampFromStats(st: BigIntStats): FileStamp {
  return {
    dev: Number(st.dev),
    ino: Number(st.ino),
    size: Number(st.size),
    mtimeNs: String(st.mtimeNs),
    ctimeNs: String(st.ctimeNs),
  };
}

/** A file's identity (inode, size, times), or undefined if it does not exist. */
export async function stampFile(path: string): Promise<FileStamp | undefined> {
  const st = await stat(path, { bigint: true }).catch(() => undefined);
  return st ? stampFromStats(st) : undefined;
}

/** sha256 of the file at `path`, and with `chunkSize` the sha256 of each chunk of that size (the last one may be shorter), in one read. */
async function sha256FileAndChunks(path: string, chunkSize?: number): Promise<{ sha256: string; chunks: string[] }> {
  if (!chunkSize) return { sha256: await sha256File(path), chunks: [] };
  const fh = await open(path, 'r');
  try {
    const whole = createHash('sha256');
    const chunks: string[] = [];
    const buf = Buffer.allocUnsafe(Math.min(chunkSize, 1 << 20));
    let part = createHash('sha256');
    let filled = 0;
    for (let pos = 0; ; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, chunkSize - filled), pos);
      if (bytesRead === 0) break;
      const data = buf.subarray(0, bytesRead);
      whole.update(data);
      part.update(data);
      filled += bytesRead;
      pos += bytesRead;
      if (filled === chunkSize) {
        chunks.push(part.digest('hex'));
        part = createHash('sha256');
        filled = 0;
      }
    }
    if (filled > 0) chunks.push(part.digest('hex'));
    return { sha256: whole.digest('hex'), chunks };
  } finally {
    await fh.close();
  }
}

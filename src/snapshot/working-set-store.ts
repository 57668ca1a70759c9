/**
 * The working set (REAP) of a snapshot, stored as an immutable, digested companion of it:
 * `<snapshot dir>/workingset/` holds the working-set files (memory/working-set.ts reads their
 * contents) and a `manifest.json` of its own with each file's size and sha256 and the id of the
 * snapshot it belongs to. It is published after the snapshot, whole or not at all (a staging
 * dir renamed into place), never changed afterwards, verified before use like every snapshot
 * file, and removed with the snapshot (it lives inside its dir). The snapshot's own manifest
 * and files stay byte-identical: a snapshot without a working set restores exactly as before.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { fsyncPath, sha256File, writeFileAtomic } from '../util/fs.js';
import { stampFile, type FileStamp, type LocalSnapshotStore } from './local-store.js';
import {
  checkListedFile,
  MANIFEST_NAME,
  WORKING_SET_DIR,
  WORKING_SET_STAGING,
  isSnapshotId,
  type SnapshotFile,
} from './manifest.js';

export const WORKING_SET_MANIFEST_FORMAT = 1;

export interface WorkingSetManifest {
  formatVersion: number;
  /** The snapshot whose memory file the working set indexes. */
  snapshotId: string;
  recordedAt: string;
  /** How it was recorded, e.g. 'qemu-mincore' or 'uffd'. */
  recorder: string;
  /** The order of its ranges: the order the guest touched them, or file order (a recorder that cannot see the order). */
  order: 'first-touch' | 'file';
  pageSize: number;
  /** Pages in the working set. */
  pages: number;
  /** Every file of the working set but this manifest, with its size and digest. */
  files: SnapshotFile[];
}

/** The path of file `name` of the working set of a snapshot, relative to the snapshot (what remotes name it). */
export function workingSetPath(name: string): string {
  return `${WORKING_SET_DIR}/${name}`;
}

/** Parses and checks a working-set manifest; `snapshotId`, when given, must be the one it names. */
export function parseWorkingSetManifest(text: string, source: string, snapshotId?: string): WorkingSetManifest {
  const bad = (why: string) =>
    EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'manifest-invalid', source, reason: why });
  let m: WorkingSetManifest;
  try {
    m = JSON.parse(text) as WorkingSetManifest;
  } catch (err) {
    throw EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'manifest-json', source }, { cause: err });
  }
  if (typeof m !== 'object' || m === null) throw bad('not an object');
  if (m.formatVersion !== WORKING_SET_MANIFEST_FORMAT)
    throw bad(`format ${String(m.formatVersion)}; this embers reads format ${WORKING_SET_MANIFEST_FORMAT}`);
  if (typeof m.snapshotId !== 'string' || !isSnapshotId(m.snapshotId)) throw bad('snapshotId');
  if (snapshotId !== undefined && m.snapshotId !== snapshotId)
    throw bad(`it belongs to ${m.snapshotId}, not ${snapshotId}`);
  if (m.order !== 'first-touch' && m.order !== 'file') throw bad('order');
  if (typeof m.recorder !== 'string' || !Number.isInteger(m.pageSize) || !Number.isSafeInteger(m.pages) || m.pages < 0)
    throw bad('recorder, pageSize or pages');
  if (!Array.isArray(m.files) || m.files.length === 0) throw bad('files');
  for (const f of m.files) checkListedFile(f, bad);
  return m;
}

/** The working sets of the snapshots of one local store. */
export class WorkingSetStore {
  constructor(readonly store: LocalSnapshotStore) {}

  dirOf(id: string): string {
    return join(this.store.pathOf(id), WORKING_SET_DIR);
  }

  async has(id: string): Promise<boolean> {
    return (await this.getWithBytes(id)) !== undefined;
  }

  /** The working-set manifest of snapshot `id`, checked; undefined when it has none. */
  async get(id: string): Promise<WorkingSetManifest | undefined> {
    return (await this.getWithBytes(id))?.manifest;
  }

  async getWithBytes(id: string): Promise<{ manifest: WorkingSetManifest; bytes: Buffer } | undefined> {
    const path = join(this.dirOf(id), MANIFEST_NAME);
    const bytes = await readFile(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (bytes === undefined) return undefined;
    return {
      manifest: parseWorkingSetManifest(bytes.toString('utf8'), `${id}/${WORKING_SET_DIR}/${MANIFEST_NAME}`, id),
      bytes,
    };
  }

  /** A fresh staging dir inside the snapshot's dir (same filesystem), owned by this process until published or dropped. */
  async staging(id: string): Promise<string> {
    if (!(await this.store.has(id))) throw EmbersError.of('EMB_SNAPSHOT_NOT_FOUND', { id, store: this.store.dir });
    const path = join(this.store.pathOf(id), `${WORKING_SET_STAGING}${process.pid}-${randomBytes(4).toString('hex')}`);
    await mkdir(path);
    return path;
  }

  /**
   * Hashes the files of `stagingDir`, writes the working-set manifest, fsyncs and renames the
   * dir into place. A snapshot that already has a working set keeps it (working sets are
   * immutable): the staging dir is dropped and the stored one returned.
   */
  async publish(
    id: string,
    stagingDir: string,
    meta: Omit<WorkingSetManifest, 'formatVersion' | 'snapshotId' | 'files'>,
  ): Promise<WorkingSetManifest> {
    const files: SnapshotFile[] = [];
    for (const name of (await readdir(stagingDir)).sort()) {
      const path = join(stagingDir, name);
      await fsyncPath(path);
      files.push({ name, sizeBytes: (await stat(path)).size, sha256: await sha256File(path) });
    }
    const manifest: WorkingSetManifest = { formatVersion: WORKING_SET_MANIFEST_FORMAT, snapshotId: id, ...meta, files };
    return this.install(id, stagingDir, manifest);
  }

  /**
   * Publishes a working set fetched from a remote: `stagingDir` holds exactly the files
   * `manifest` lists, already proved against their digests by the caller.
   */
  async publishFetched(id: string, stagingDir: string, manifest: WorkingSetManifest): Promise<WorkingSetManifest> {
    const m = parseWorkingSetManifest(JSON.stringify(manifest), `${id}/${WORKING_SET_DIR} (fetched)`, id);
    const staged = (await readdir(stagingDir)).sort();
    const listed = m.files.map((f) => f.name).sort();
    if (staged.join('/') !== listed.join('/'))
      throw EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'staged-files', id, staged, listed });
    for (const f of m.files) await fsyncPath(join(stagingDir, f.name));
    return this.install(id, stagingDir, m);
  }

  private async install(id: string, stagingDir: string, manifest: WorkingSetManifest): Promise<WorkingSetManifest> {
    try {
      await writeFileAtomic(join(stagingDir, MANIFEST_NAME), `${JSON.stringify(manifest, null, 2)}\n`);
      try {
        await rename(stagingDir, this.dirOf(id));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const stored = (code === 'ENOTEMPTY' || code === 'EEXIST') && (await this.get(id));
        if (stored) {
          await rm(stagingDir, { recursive: true, force: true });
          return stored;
        }
        throw err;
      }
      await fsyncPath(this.store.pathOf(id));
      return manifest;
    } catch (err) {
      await rm(stagingDir, { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Proves the working set of `id` matches its manifest: every listed file present at its size
   * and digest, nothing else. Digests are computed unless `stamps` holds an identical stamp (as
   * LocalSnapshotStore.verify). Returns the manifest and the stamps now valid.
   */
  async verify(
    id: string,
    stamps?: Record<string, FileStamp>,
  ): Promise<{ manifest: WorkingSetManifest; stamps: Record<string, FileStamp> }> {
    const got = await this.getWithBytes(id);
    if (!got) throw EmbersError.of('EMB_WORKING_SET_INVALID', { problem: 'none', id });
    const m = got.manifest;
    const dir = this.dirOf(id);
    const corrupt = (
      problem: 'unlisted-file' | 'missing-file' | 'size' | 'digest',
      file: string,
      sizes?: { actualBytes: number; sizeBytes: number },
    ) =>
      EmbersError.of(
        'EMB_WORKING_SET_INVALID',
        { problem, id, file, ...sizes },
        {
          hint: `remove the snapshot's working set dir (${dir}) and record it again with \`embers snapshot record-ws ${id}\`; the snapshot restores without it`,
        },
      );
    for (const name of await readdir(dir)) {
      if (name !== MANIFEST_NAME && !m.files.some((f) => f.name === name)) throw corrupt('unlisted-file', name);
    }
    const out: Record<string, FileStamp> = {};
    for (const f of m.files) {
      const path = join(dir, f.name);
      const st = await stampFile(path);
      if (!st) throw corrupt('missing-file', f.name);
      if (st.size !== f.sizeBytes) throw corrupt('size', f.name, { actualBytes: st.size, sizeBytes: f.sizeBytes });
      if (!stamps?.[f.name] || JSON.stringify(stamps[f.name]) !== JSON.stringify(st)) {
        if ((await sha256File(path)) !== f.sha256) throw corrupt('digest', f.name);
      }
      out[f.name] = st;
    }
    return { manifest: m, stamps: out };
  }
}

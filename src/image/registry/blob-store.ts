/**
 * The content-addressed blob store of a node's image cache:
 *
 *   <root>/blobs/sha256/<hex>          complete, verified blobs (indexes, manifests, configs, layers)
 *   <root>/blobs/.partial/<hex>.part   a layer download in progress or interrupted (resumed by Range)
 *   <root>/blobs/.partial/<hex>.lock   the pid downloading it
 *   <root>/blobs/.partial/.<hex>.tmp-<pid>-<rand>  a small blob being written (writeFileAtomic)
 *
 * A blob appears under sha256/ only by a rename of a file whose bytes were hashed to its
 * name and fsynced: a crash never leaves a half-written blob visible. The layout is that of an
 * OCI image layout's blobs/, so resolve.ts reads the store as it reads a layout.
 */
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../../errors.js';
import { fsyncPath, regularFileSize, sha256, writeFileAtomic } from '../../util/fs.js';
import { pidAlive } from '../../util/pid.js';
import { lockHeld } from './lock.js';

const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;

export function digestHex(digest: string): string {
  const m = DIGEST_RE.exec(digest);
  if (!m) throw EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', { problem: 'not-sha256', digest });
  return m[1]!;
}

export class BlobStore {
  constructor(readonly root: string) {}

  get dir(): string {
    return join(this.root, 'blobs', 'sha256');
  }

  get partialDir(): string {
    return join(this.root, 'blobs', '.partial');
  }

  path(digest: string): string {
    return join(this.dir, digestHex(digest));
  }

  partPath(digest: string): string {
    return join(this.partialDir, `${digestHex(digest)}.part`);
  }

  lockPath(digest: string): string {
    return join(this.partialDir, `${digestHex(digest)}.lock`);
  }

  /** Size of a stored blob, or undefined. */
  async size(digest: string): Promise<number | undefined> {
    return regularFileSize(this.path(digest));
  }

  /** True when the blob is stored with the expected size. */
  async has(digest: string, size?: number): Promise<boolean> {
    const s = await this.size(digest);
    return s !== undefined && (size === undefined || s === size);
  }

  async ensureDirs(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(this.partialDir, { recursive: true });
  }

  /** Stores bytes already read whole (manifests, configs), after checking them against `digest`. */
  async putBytes(digest: string, bytes: Buffer): Promise<void> {
    const hex = digestHex(digest);
    if (sha256(bytes) !== hex) throw EmbersError.of('EMB_IMAGE_DIGEST_MISMATCH', { problem: 'refused-store', digest });
    if (await this.has(digest, bytes.length)) return;
    await this.ensureDirs();
    await writeFileAtomic(this.path(digest), bytes, { tmpDir: this.partialDir });
  }

  /** Publishes a verified `.part` file as the blob (the caller hashed it). */
  async commitPart(digest: string): Promise<void> {
    const part = this.partPath(digest);
    await fsyncPath(part);
    await rename(part, this.path(digest));
    await fsyncPath(this.dir);
  }

  /** Every stored blob, sorted by digest. */
  async list(): Promise<{ digest: string; size: number }[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: { digest: string; size: number }[] = [];
    for (const name of names.sort()) {
      if (!/^[0-9a-f]{64}$/.test(name)) continue;
      const s = await this.size(`sha256:${name}`);
      if (s !== undefined) out.push({ digest: `sha256:${name}`, size: s });
    }
    return out;
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  /**
   * Removes leftovers in .partial/: temp files and locks of dead processes, and, when
   * `parts` is true, interrupted downloads no live process holds (they would otherwise be
   * resumed by the next pull). Returns the bytes freed.
   */
  async cleanPartials(parts: boolean): Promise<number> {
    const names = await readdir(this.partialDir).catch(() => [] as string[]);
    let freed = 0;
    const drop = async (name: string) => {
      const path = join(this.partialDir, name);
      freed += (await stat(path).catch(() => undefined))?.size ?? 0;
      await rm(path, { force: true });
    };
    for (const name of names) {
      const tmp = /^\.[0-9a-f]{64}\.tmp-(\d+)-[0-9a-f]+$/.exec(name); // writeFileAtomic's temp files
      if (tmp) {
        const pid = Number(tmp[1]);
        if (pid !== process.pid && !(await pidAlive(pid))) await drop(name);
        continue;
      }
      const lock = /^([0-9a-f]{64})\.lock$/.exec(name);
      if (lock) {
        if (!(await lockHeld(join(this.partialDir, name)))) await drop(name);
        continue;
      }
      const part = /^([0-9a-f]{64})\.part$/.exec(name);
      if (part && parts && !(await lockHeld(join(this.partialDir, `${part[1]}.lock`)))) await drop(name);
    }
    return freed;
  }
}

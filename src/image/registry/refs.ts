/**
 * The refs file of a node's image cache, `<imagesDir>/refs.json`: which image references the
 * node has pulled or ensured, and the manifest each resolved to. It is what keeps blobs and
 * rootfs alive through `gc`. Written atomically under a pid lock (`refs.json.lock`), so the
 * daemon and `embers image` commands can update it at once.
 *
 *   { "version": 1, "images": { "localhost:5000/fn:1.2": { "manifestDigest": "sha256:…",
 *       "indexDigest": "sha256:…", "platform": "linux/amd64", "source": "registry",
 *       "updatedAt": "2026-01-01T00:00:00.000Z" } } }
 */
import { readFile } from 'node:fs/promises';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { EmbersError } from '../../errors.js';
import { writeJsonAtomic } from '../../util/fs.js';
import { acquireLock } from './lock.js';

export interface RefEntry {
  /** The image manifest (linux/amd64) the reference resolved to. */
  manifestDigest: string;
  /** The index (or manifest list) the reference named, when it named one. */
  indexDigest?: string;
  /** `linux/amd64` (with `/variant` when the image has one). */
  platform: string;
  /** 'registry' for pulled references, 'local' for OCI layouts and docker save archives. */
  source: 'registry' | 'local';
  /** When the entry last changed (ISO 8601). */
  updatedAt: string;
}

interface RefsFile {
  version: 1;
  images: Record<string, RefEntry>;
}

export const REFS_FILE = 'refs.json';

export class RefStore {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(readonly imagesDir: string) {}

  get path(): string {
    return join(this.imagesDir, REFS_FILE);
  }

  /** Every entry, by reference. */
  async all(): Promise<Record<string, RefEntry>> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw err;
    }
    let doc: RefsFile;
    try {
      doc = JSON.parse(text) as RefsFile;
    } catch (err) {
      throw EmbersError.of(
        'EMB_IMAGE_MANIFEST_INVALID',
        {
          problem: 'not-json',
          subject: `the image refs file ${this.path}`,
          reason: (err as Error).message,
          path: this.path,
        },
        { hint: 'move the file away; pulled images then need `embers image pull` again to be listed' },
      );
    }
    if (typeof doc !== 'object' || doc === null || typeof doc.images !== 'object' || doc.images === null) return {};
    const out: Record<string, RefEntry> = {};
    for (const [ref, e] of Object.entries(doc.images)) {
      if (e && typeof e.manifestDigest === 'string' && /^sha256:[0-9a-f]{64}$/.test(e.manifestDigest)) out[ref] = e;
    }
    return out;
  }

  async get(ref: string): Promise<RefEntry | undefined> {
    return (await this.all())[ref];
  }

  /**
   * Applies `change` to the entries under the lock and writes them back when they changed.
   * Returns what `change` returns.
   */
  async update<T>(change: (images: Record<string, RefEntry>) => T): Promise<T> {
    const run = async (): Promise<T> => {
      await mkdir(dirname(this.path), { recursive: true });
      const release = await acquireLock(`${this.path}.lock`, 'the image refs file', { waitMs: 60_000 });
      try {
        const images = await this.all();
        const before = JSON.stringify(images);
        const result = change(images);
        const sorted = Object.fromEntries(Object.entries(images).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
        if (JSON.stringify(sorted) !== before)
          await writeJsonAtomic(this.path, { version: 1, images: sorted } satisfies RefsFile);
        return result;
      } finally {
        await release();
      }
    };
    const next = this.chain.then(run, run);
    this.chain = next.catch(() => {});
    return next;
  }

  /** Sets an entry; `updatedAt` only moves when the digest, index or platform changes. */
  async set(ref: string, entry: Omit<RefEntry, 'updatedAt'>): Promise<void> {
    await this.update((images) => {
      const old = images[ref];
      if (
        old &&
        old.manifestDigest === entry.manifestDigest &&
        old.indexDigest === entry.indexDigest &&
        old.platform === entry.platform &&
        old.source === entry.source
      )
        return;
      images[ref] = {
        manifestDigest: entry.manifestDigest,
        ...(entry.indexDigest ? { indexDigest: entry.indexDigest } : {}),
        platform: entry.platform,
        source: entry.source,
        updatedAt: new Date().toISOString(),
      };
    });
  }
}

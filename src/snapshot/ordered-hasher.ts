/** Hashing a file that is written in ranges, in any order, while it is written. */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { EmbersError } from '../errors.js';
import type { SnapshotFile } from './manifest.js';
import { rangeOf } from './transfer.js';

const MiB = 1024 * 1024;

/**
 * The sha256 of a file written in ranges, in any order: each range is hashed (read back from
 * the file, so what is on disk is what gets proved) once every range before it is, so hashing
 * overlaps the downloads instead of following them. One hashing run per file at a time.
 */
export class OrderedHasher {
  private readonly hash = createHash('sha256');
  private next = 0;
  private readonly complete = new Set<number>();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: () => Promise<FileHandle>,
    private readonly f: SnapshotFile,
    private readonly partSize: number,
    private readonly ranges: number,
  ) {}

  /** Range `index` is written: hash it, and the ranges after it that wait, once its turn comes. */
  completed(index: number): void {
    this.complete.add(index);
    this.chain = this.chain.then(() => this.advance());
    this.chain.catch(() => {}); // reported by digest()
  }

  /** The digest of the whole file, once every range is written. */
  async digest(): Promise<string> {
    this.chain = this.chain.then(() => this.advance());
    await this.chain;
    if (this.next !== this.ranges)
      throw EmbersError.of('EMB_INTERNAL', {
        during: this.f.name,
        problem: `ranges ${this.next} to ${this.ranges - 1} were never hashed`,
        file: this.f.name,
      });
    return this.hash.digest('hex');
  }

  /** Resolves once no hashing runs (whatever its outcome). */
  settled(): Promise<void> {
    return this.chain.catch(() => {});
  }

  private async advance(): Promise<void> {
    if (!this.complete.has(this.next)) return;
    const fh = await this.file();
    const buf = Buffer.allocUnsafe(Math.min(this.partSize, MiB));
    while (this.complete.has(this.next)) {
      const [start, end] = rangeOf(this.f, this.next, this.partSize);
      for (let pos = start; pos < end; ) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
        if (bytesRead === 0)
          throw EmbersError.of('EMB_INTERNAL', {
            during: this.f.name,
            problem: `the partial file ends at ${pos}, before ${end}`,
            file: this.f.name,
          });
        this.hash.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
      this.complete.delete(this.next);
      this.next++;
    }
  }
}

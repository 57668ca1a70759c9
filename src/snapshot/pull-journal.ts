/** The journal of a resumable pull: which ranges of which files are on disk. */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeJsonAtomic } from '../util/fs.js';

interface PullJournalData {
  format: 1;
  /** sha256 of the manifest text the partial files belong to: another manifest starts afresh. */
  manifestSha256: string;
  partSizeBytes: number;
  /** Per file, the indexes of the ranges that are written and synced. */
  done: Record<string, number[]>;
}

/** The ranges of a pull that are on disk, saved after each range (atomically, after an fdatasync of the data). */
export class PullJournal {
  private saving: Promise<void> = Promise.resolve();
  private readonly done: Map<string, Set<number>>;

  private constructor(
    private readonly path: string,
    private readonly data: PullJournalData,
  ) {
    this.done = new Map(Object.entries(data.done).map(([name, list]) => [name, new Set(list)]));
  }

  static async open(workDir: string, manifestSha256: string, partSizeBytes: number): Promise<PullJournal> {
    const path = join(workDir, 'journal.json');
    const saved = await readFile(path, 'utf8')
      .then((text) => JSON.parse(text) as PullJournalData)
      .catch(() => undefined);
    if (
      saved &&
      saved.format === 1 &&
      saved.manifestSha256 === manifestSha256 &&
      Number.isSafeInteger(saved.partSizeBytes) &&
      saved.done
    ) {
      return new PullJournal(path, saved);
    }
    await rm(workDir, { recursive: true, force: true });
    await mkdir(workDir, { recursive: true });
    const journal = new PullJournal(path, { format: 1, manifestSha256, partSizeBytes, done: {} });
    await journal.save();
    return journal;
  }

  get partSizeBytes(): number {
    return this.data.partSizeBytes;
  }

  isDone(file: string, index: number): boolean {
    return this.done.get(file)?.has(index) ?? false;
  }

  async markDone(file: string, index: number): Promise<void> {
    let set = this.done.get(file);
    if (!set) this.done.set(file, (set = new Set()));
    set.add(index);
    await this.save();
  }

  async forget(file: string): Promise<void> {
    this.done.delete(file);
    await this.save();
  }

  /** Saves the current state; saves are serialised, each writes everything known so far. */
  private save(): Promise<void> {
    const run = () => {
      this.data.done = Object.fromEntries([...this.done].map(([name, set]) => [name, [...set].sort((a, b) => a - b)]));
      return writeJsonAtomic(this.path, this.data);
    };
    this.saving = this.saving.then(run, run);
    return this.saving;
  }
}

/** Progress of a snapshot transfer: bytes per file and over the whole snapshot. */
import { MANIFEST_NAME, type SnapshotManifest } from './manifest.js';

/** One progress report: bytes of one file and of the whole snapshot. */
export interface TransferProgress {
  /** `push` uploads from the local store; `pull` downloads into it. */
  direction: 'push' | 'pull';
  id: string;
  /** The file the bytes belong to; `manifest.json` is one too (moved last on a push, first on a pull). */
  file: string;
  fileBytesDone: number;
  fileBytesTotal: number;
  /** Over the whole snapshot, bytes in place from an earlier interrupted transfer included. */
  bytesDone: number;
  bytesTotal: number;
}

/** Reports progress per file and in total. */
export class ProgressTracker {
  private readonly perFile = new Map<string, number>();
  private done = 0;

  constructor(
    private readonly direction: TransferProgress['direction'],
    private readonly id: string,
    private readonly sizes: ReadonlyMap<string, number>,
    private readonly onProgress: (e: TransferProgress) => void,
  ) {}

  get bytesTotal(): number {
    let total = 0;
    for (const size of this.sizes.values()) total += size;
    return total;
  }

  get bytesDone(): number {
    return this.done;
  }

  /** Counts `bytes` of `file` as done (negative to take back the bytes of a failed attempt); reports when `report`. */
  add(file: string, bytes: number, report = true): void {
    this.perFile.set(file, (this.perFile.get(file) ?? 0) + bytes);
    this.done += bytes;
    if (report) {
      this.onProgress({
        direction: this.direction,
        id: this.id,
        file,
        fileBytesDone: this.perFile.get(file)!,
        fileBytesTotal: this.sizes.get(file) ?? 0,
        bytesDone: this.done,
        bytesTotal: this.bytesTotal,
      });
    }
  }
}

/** The sizes of a local snapshot's files and of its manifest (`manifestBytes` long), for progress and totals. */
export function snapshotSizes(m: SnapshotManifest, manifestBytes: number): Map<string, number> {
  return new Map<string, number>([
    ...m.files.map((f) => [f.name, f.sizeBytes] as const),
    [MANIFEST_NAME, manifestBytes],
  ]);
}

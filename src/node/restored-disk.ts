/**
 * The restored disks of a node's snapshots: rootfs + delta (or rsync batch), made once per
 * snapshot in <home>/restore/<id>/ and proven bit-identical to the disk at pause by its sha256
 * before any clone runs on it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { sha256File, writeJsonAtomic } from '../util/fs.js';
import { cloneDisk, type CloneMethod } from '../disk/clone.js';
import { applyDelta } from '../disk/delta.js';
import { applyRsyncBatch } from '../disk/rsync-diff.js';
import { pinImageReference } from '../image/index.js';
import type { ImageStore } from '../image/store.js';
import { stampFile, type FileStamp, type LocalSnapshotStore } from '../snapshot/local-store.js';
import { SNAPSHOT_FILES, type SnapshotManifest } from '../snapshot/manifest.js';
import { crashPoint } from '../util/crash-point.js';

/** A snapshot's disk, materialised and checked: rootfs + delta. */
export interface RestoredDisk {
  path: string;
  /** Its sha256 equals the disk's at pause. */
  verified: boolean;
  /** How it was made from the rootfs. */
  method: CloneMethod;
}

export interface RestoredDisksDeps {
  store: LocalSnapshotStore;
  /** Where restored disks are materialised (<home>/restore). */
  restoreDir: string;
  /** Scratch space (named with our pid). */
  tmpDir: string;
  images: ImageStore;
  onProgress?: (msg: string) => void;
}

export class RestoredDisks {
  constructor(private readonly deps: RestoredDisksDeps) {}

  /**
   * The restored disk of a snapshot, materialised once: rootfs + delta, proven bit-identical
   * to the disk at pause by its sha256. Cached in <home>/restore/<id>/ for later restores.
   */
  async get(
    m: SnapshotManifest,
    opts: { allowUnverifiedDisk?: boolean } = {},
    /** A snapshot still arriving (arriving-snapshot.ts): its files other than memory, verified by the download, are in this dir. */
    arriving?: { bundleDir: string },
  ): Promise<RestoredDisk> {
    const dir = join(this.deps.restoreDir, m.id);
    const disk = join(dir, 'disk.img');
    const stampsPath = join(dir, 'verified.json');
    const cached = JSON.parse(await readFile(stampsPath, 'utf8').catch(() => 'null')) as {
      snapshot: Record<string, FileStamp>;
      /** Absent until the disk is materialised (the stamps alone are written after a publish or fetch). */
      disk?: FileStamp;
      verified?: boolean;
      method?: CloneMethod;
    } | null;

    // the bundle itself: sizes always, digests unless unchanged since last verified
    const snapshotStamps = arriving ? {} : await this.deps.store.verify(m, cached?.snapshot);
    const diskStamp = await stampFile(disk);
    if (cached?.disk && diskStamp && JSON.stringify(diskStamp) === JSON.stringify(cached.disk)) {
      if (!cached.verified && !opts.allowUnverifiedDisk) throw this.unverified(m);
      return { path: disk, verified: cached.verified === true, method: cached.method ?? 'sparse-copy' };
    }

    // the rootfs is copied below: `image gc` waits until the restored disk is made
    const release = await this.deps.images.hold();
    try {
      return await this.materialise(
        m,
        dir,
        disk,
        stampsPath,
        snapshotStamps,
        opts,
        arriving?.bundleDir ?? this.deps.store.pathOf(m.id),
      );
    } finally {
      await release();
    }
  }

  private async materialise(
    m: SnapshotManifest,
    dir: string,
    disk: string,
    stampsPath: string,
    snapshotStamps: Record<string, FileStamp>,
    opts: { allowUnverifiedDisk?: boolean },
    snapDir: string,
  ): Promise<RestoredDisk> {
    // the image exactly as the snapshot saw it: a registry tag may have moved since
    const pinned = await pinImageReference(m.image.reference, m.image.manifestDigest);
    const image = await this.deps.images.ensure(pinned, { onProgress: this.deps.onProgress });
    if (image.manifestDigest !== m.image.manifestDigest) {
      throw EmbersError.of('EMB_SNAPSHOT_DISK_MISMATCH', {
        id: m.id,
        which: 'image manifest digest',
        reference: m.image.reference,
        expected: m.image.manifestDigest,
        actual: image.manifestDigest,
      });
    }
    if (image.rootfsSha256 !== m.image.rootfsSha256) {
      throw EmbersError.of('EMB_SNAPSHOT_DISK_MISMATCH', {
        id: m.id,
        which: 'rootfs sha256',
        manifestDigest: m.image.manifestDigest,
        expected: m.image.rootfsSha256,
        actual: image.rootfsSha256,
      });
    }

    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.disk-${process.pid}-${randomBytes(3).toString('hex')}.img`);
    try {
      // a reflink of the rootfs where possible, so clones keep sharing its unchanged blocks
      const method = await cloneDisk(image.rootfsPath, tmp);
      let verified: boolean;
      if (m.disk.diff === 'block') {
        await applyDelta(join(snapDir, SNAPSHOT_FILES.blockDelta), tmp);
      } else {
        await withRsyncWork(this.deps.tmpDir, (work) =>
          applyRsyncBatch(tmp, join(snapDir, SNAPSHOT_FILES.rsyncBatch), work),
        );
        await truncateTo(tmp, m.disk.sizeBytes);
      }
      const digest = await sha256File(tmp);
      verified = digest === m.disk.sha256AtPause;
      if (!verified && m.disk.diff === 'block') {
        throw EmbersError.of('EMB_SNAPSHOT_DISK_MISMATCH', {
          id: m.id,
          which: 'disk sha256',
          expected: m.disk.sha256AtPause,
          actual: digest,
        });
      }
      await crashPoint('snapshot.restore.disk.before-rename');
      await rename(tmp, disk);
      await writeJsonAtomic(stampsPath, { snapshot: snapshotStamps, disk: await stampFile(disk), verified, method });
      if (!verified && !opts.allowUnverifiedDisk) throw this.unverified(m);
      return { path: disk, verified, method };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  private unverified(m: SnapshotManifest): EmbersError {
    return EmbersError.of(
      'EMB_SNAPSHOT_DISK_MISMATCH',
      { id: m.id, which: 'disk sha256', diff: m.disk.diff },
      {
        hint: 'create the snapshot with --disk-diff block (the default); pass --allow-unverified-disk only to study the rsync method',
      },
    );
  }
}

/** Runs `fn` with a scratch dir for rsync under `tmpDir` (named with our pid, so reconcile can tell a dead run's), removed afterwards. */
export async function withRsyncWork<T>(tmpDir: string, fn: (work: string) => Promise<T>): Promise<T> {
  const work = join(tmpDir, `rsync-${process.pid}-${randomBytes(3).toString('hex')}`);
  try {
    return await fn(work);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function truncateTo(path: string, size: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

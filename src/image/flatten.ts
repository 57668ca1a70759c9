/**
 * Builds the deterministic ext4 rootfs from a staged tree: the same manifest digest gives the
 * same bytes (sha256) on every machine, whatever the extraction order, umask, clock, locale
 * or host file system.
 *
 * WHAT VARIES IN `mke2fs -d` OUTPUT, AND HOW IT IS PINNED. e2fsprogs 1.47.0 (Debian 12),
 * found by building the same tree twice and comparing sha256 and `cmp -l` offsets, then
 * reading misc/create_inode.c; held by test/unit/image-determinism.test.ts (which fails when
 * the inode normalisation below is switched off).
 *
 *  1. ctime LEAKS. create_inode.c set_inode_extra() copies st_atime, st_mtime AND st_ctime
 *     of every source file into its inode (seconds only; the *_extra nanosecond fields stay
 *     0). ctime cannot be set from user space: two stagings a second apart differed at the
 *     i_ctime offset (+0x0c) of every inode, and in its checksum (+0x7c, +0x82).
 *  2. atime LEAKS too: mke2fs lstat()s a file, then reads it; with relatime the read bumps
 *     an atime <= mtime, so a second build from the SAME staging dir differed at +0x08 of the
 *     inodes mke2fs had read the first time.
 *  3. crtime is NOT copied: ext2fs_write_new_inode() sets it to fs->now, which mke2fs takes
 *     from E2FSPROGS_FAKE_TIME (0 counts as unset), like every superblock time (s_mkfs_time,
 *     s_wtime, s_lastcheck) and the times of lost+found and the reserved inodes.
 *  4. The root directory's metadata is NOT copied from the source dir: mode 0755, owner from
 *     -E root_owner, times fs->now. (The image's "./" entry is applied by the patch below.)
 *  5. readdir order does NOT leak in 1.47.0: __populate_fs() walks each directory with
 *     scandir(..., alphasort) (the binary imports scandir64/alphasort64), so inode numbers
 *     and block allocation follow sorted names. Verified: the same tree created in forward
 *     order on ext4 (hash-ordered readdir, per-fs random hash seed) and in reverse order on
 *     tmpfs gives the same image once times are fixed; the determinism test repeats this with
 *     shuffled tar entries, three umasks and staging on /dev/shm vs /tmp. alphasort uses
 *     strcoll(), so mke2fs runs with LC_ALL=C. (Older e2fsprogs used readdir(): order leaked.)
 *  6. xattrs: mke2fs copies whatever llistxattr() returns, which can include host-added ones
 *     (default ACLs inherited from the staging dir's parent, SELinux labels). Their order does
 *     not matter (libext2fs sorts them: same attributes set in different orders on ext4 and
 *     tmpfs gave identical images). Images without xattrs are built with -E no_copy_xattrs;
 *     for images with xattrs, extract.ts checks the staged set equals the image's.
 *  7. `debugfs -w` (set_inode_field …) is NOT a usable fix: debugfs ignores
 *     E2FSPROGS_FAKE_TIME and, once it flushes the superblock (it did after a sif pass over
 *     900 inodes), writes s_wtime = time(NULL) and bumps s_kbytes_written. So ext4.ts patches
 *     the inode tables in place: atime = ctime = crtime = ROOTFS_EPOCH, nanosecond fields 0,
 *     root mode/owner/mtime from the image, inode crc32c recomputed (verified against the
 *     checksums mke2fs writes). The superblock, bitmaps and descriptors are not written.
 *     `e2fsck -fn` checks every result; the host kernel mounts it and writes to it cleanly.
 *  8. Everything else is pinned by arguments: -U (UUID, which also seeds metadata_csum) and
 *     -E hash_seed= derived from the manifest digest; explicit block size, inode size, inode
 *     count, features (src/image/mke2fs.conf via MKE2FS_CONFIG), journal size, label, reserved
 *     blocks, revision, errors behaviour, creator OS, root_owner, lazy_itable_init=0 and
 *     lazy_journal_init=0 (their default depends on the host kernel's
 *     /sys/fs/ext4/features/lazy_itable_init), nodiscard, and a size computed from the staged
 *     tree only. The environment is replaced, not inherited (a caller's E2FSPROGS_FAKE_TIME,
 *     MKE2FS_CONFIG, MKE2FS_DEVICE_SECTSIZE or locale cannot leak in: tested).
 *     assume_storage_prezeroed=1 on a fresh sparse file gives the SAME bytes as zeroing
 *     (verified: identical sha256) but leaves the file sparse (2.3 MB on disk for 320 MiB).
 *     libext2fs allocates inodes and blocks without randomness (unlike the kernel's Orlov).
 *     s_kbytes_written comes from mke2fs's own I/O counts: deterministic for the same tree.
 *  9. Remaining machine dependencies, by design: the e2fsprogs release (recorded as
 *     e2fsprogsVersion in image.json) and the build CPU's char signedness (mke2fs sets the
 *     signed/unsigned directory-hash flag from it: every embers node is x86_64).
 *
 * File mtimes are kept from the layers (part of the image, so deterministic; Python's .pyc
 * validation and make-like tools depend on them), clamped to [0, 2^31-1]; directories the
 * layers only imply get ROOTFS_EPOCH. All other times are ROOTFS_EPOCH.
 *
 * Measured here (2 cores): the busybox test function flattens in ~0.7 s (staging 0.1 s,
 * mke2fs 0.03 s, hashing the 320 MiB sparse file ~0.5 s); 20 000 small files + 64 MiB in
 * ~5.8 s (extraction 2.4 s, mke2fs 1.4 s, e2fsck 0.8 s, hash 1 s).
 */
import { createHash, randomBytes } from 'node:crypto';
import { access, open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EmbersError, isEmbersError } from '../errors.js';
import { requireTool, run } from '../util/exec.js';
import { normalizeInodes } from './ext4.js';
import type { StagedTree } from './extract.js';

/** Bump whenever the bytes of the rootfs for a given manifest change. */
export const FLATTENER_VERSION = 2;

/** The one timestamp of a rootfs (2000-01-01T00:00:00Z): atime, ctime, crtime, fs times. */
export const ROOTFS_EPOCH = 946_684_800;

export const ROOTFS_LABEL = 'embers-rootfs';
export const ROOTFS_BLOCK_SIZE = 4096;
/** Free space every rootfs gets on top of its content, for the function's own writes. */
export const ROOTFS_HEADROOM_BYTES = 256 * 1024 * 1024;
const JOURNAL_MIB = 16;
const INODE_SIZE = 256;

const SYSTEM_PATH = '/usr/local/sbin:/usr/sbin:/sbin:/usr/local/bin:/usr/bin:/bin';

/** Finds src/image/mke2fs.conf from this module (src/image when run by tsx, dist/src/image when compiled). */
export async function mke2fsConfigPath(): Promise<string> {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, 'mke2fs.conf'), join(here, '..', '..', '..', 'src', 'image', 'mke2fs.conf')];
  for (const c of candidates) {
    try {
      await access(c);
      return c;
    } catch {
      /* next */
    }
  }
  throw EmbersError.of('EMB_INTERNAL', {
    problem: 'src/image/mke2fs.conf is missing from the installation',
    candidates,
  });
}

function derivedUuid(kind: string, manifestDigest: string): string {
  const h = createHash('sha256').update(`embers-rootfs/${kind}/v${FLATTENER_VERSION}/${manifestDigest}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x40;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** The file-system UUID and directory hash seed of a manifest's rootfs. */
export function rootfsIds(manifestDigest: string): { uuid: string; hashSeed: string } {
  return { uuid: derivedUuid('uuid', manifestDigest), hashSeed: derivedUuid('hash-seed', manifestDigest) };
}

export interface Geometry {
  blocks: number;
  inodes: number;
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

/** File-system size and inode count, from the staged tree only. `attempt` grows them on retry. */
export function computeGeometry(tree: Pick<StagedTree, 'inodes' | 'blocks'>, attempt = 0): Geometry {
  const inodes = roundUp(tree.inodes + 64 + Math.max(8192, Math.ceil(tree.inodes / 2)), 1024) * 2 ** attempt;
  const content = tree.blocks * 2 ** attempt;
  const blocks =
    content +
    Math.ceil(content / 10) + // extent trees, directory growth, bitmaps
    Math.ceil((inodes * INODE_SIZE) / ROOTFS_BLOCK_SIZE) +
    (JOURNAL_MIB * 1024 * 1024) / ROOTFS_BLOCK_SIZE +
    4096 + // group descriptors, reserved GDT blocks, slack
    ROOTFS_HEADROOM_BYTES / ROOTFS_BLOCK_SIZE;
  return { blocks: roundUp(blocks, 8192), inodes };
}

let e2fsprogsVersionCache: Promise<string> | undefined;

/** "1.47.0", from `mke2fs -V`. */
export function e2fsprogsVersion(): Promise<string> {
  e2fsprogsVersionCache ??= (async () => {
    const mke2fs = await requireTool('mke2fs', 'e2fsprogs');
    const { stdout, stderr } = await run(mke2fs, ['-V']);
    const m = /mke2fs\s+(\S+)/.exec(`${stdout}\n${stderr}`);
    return m ? m[1]! : 'unknown';
  })();
  return e2fsprogsVersionCache;
}

export interface BuildRootfsOptions {
  stagingDir: string;
  /** The image file to create (must not exist). */
  outPath: string;
  manifestDigest: string;
  tree: StagedTree;
  onProgress?: (msg: string) => void;
}

export interface BuildRootfsResult {
  sizeBytes: number;
  e2fsprogsVersion: string;
  geometry: Geometry;
  inodesPatched: number;
}

function isOutOfSpace(err: unknown): boolean {
  if (!isEmbersError(err, 'EMB_HOST_COMMAND_FAILED')) return false;
  const text = `${err.message} ${String(err.details.stderr ?? '')}`;
  return /Could not allocate block|No space left|No free space|while allocating inode|Inode bitmap full|inode.*(exhausted|full)/i.test(
    text,
  );
}

/** mke2fs -d, then the inode-time normalisation, then e2fsck -fn. */
export async function buildRootfs(opts: BuildRootfsOptions): Promise<BuildRootfsResult> {
  const mke2fs = await requireTool('mke2fs', 'e2fsprogs');
  const e2fsck = await requireTool('e2fsck', 'e2fsprogs');
  const version = await e2fsprogsVersion();
  const conf = await mke2fsConfigPath();
  const { uuid, hashSeed } = rootfsIds(opts.manifestDigest);
  const env: NodeJS.ProcessEnv = {
    PATH: SYSTEM_PATH,
    LC_ALL: 'C',
    LANG: 'C',
    TZ: 'UTC',
    MKE2FS_CONFIG: conf,
    E2FSPROGS_FAKE_TIME: String(ROOTFS_EPOCH),
  };

  let geometry: Geometry | undefined;
  for (let attempt = 0; ; attempt++) {
    geometry = computeGeometry(opts.tree, attempt);
    await rm(opts.outPath, { force: true });
    const fh = await open(opts.outPath, 'wx', 0o644);
    try {
      await fh.truncate(geometry.blocks * ROOTFS_BLOCK_SIZE);
    } finally {
      await fh.close();
    }
    const extended = [
      `hash_seed=${hashSeed}`,
      'root_owner=0:0',
      'lazy_itable_init=0',
      'lazy_journal_init=0',
      'nodiscard',
      'assume_storage_prezeroed=1',
      ...(opts.tree.hasXattrs ? [] : ['no_copy_xattrs']),
    ].join(',');
    const args = [
      '-q',
      '-F',
      '-t',
      'ext4',
      '-T',
      'embers',
      '-b',
      String(ROOTFS_BLOCK_SIZE),
      '-I',
      String(INODE_SIZE),
      '-N',
      String(geometry.inodes),
      '-m',
      '0',
      '-r',
      '1',
      '-o',
      'Linux',
      '-e',
      'continue',
      '-L',
      ROOTFS_LABEL,
      '-U',
      uuid,
      '-J',
      `size=${JOURNAL_MIB}`,
      '-E',
      extended,
      '-d',
      opts.stagingDir,
      opts.outPath,
      String(geometry.blocks),
    ];
    opts.onProgress?.(`mke2fs: ${geometry.blocks} blocks of ${ROOTFS_BLOCK_SIZE} bytes, ${geometry.inodes} inodes`);
    try {
      await run(mke2fs, args, { env });
      break;
    } catch (err) {
      if (attempt < 3 && isOutOfSpace(err)) {
        opts.onProgress?.('mke2fs ran out of space; retrying with a larger file system');
        continue;
      }
      throw EmbersError.of(
        'EMB_IMAGE_FLATTEN_FAILED',
        {
          problem: 'mke2fs',
          reason: err instanceof Error ? err.message : String(err),
          args,
          ...(isEmbersError(err, 'EMB_HOST_COMMAND_FAILED') ? err.details : {}),
        },
        { cause: err },
      );
    }
  }

  opts.onProgress?.('normalising inode times');
  const { inodesPatched } = await normalizeInodes(opts.outPath, { epoch: ROOTFS_EPOCH, root: opts.tree.root });

  opts.onProgress?.('e2fsck -fn');
  try {
    await run(e2fsck, ['-f', '-n', opts.outPath], { env });
  } catch (err) {
    throw EmbersError.of(
      'EMB_IMAGE_FLATTEN_FAILED',
      { problem: 'e2fsck', ...(isEmbersError(err, 'EMB_HOST_COMMAND_FAILED') ? err.details : {}) },
      { cause: err },
    );
  }
  return { sizeBytes: geometry.blocks * ROOTFS_BLOCK_SIZE, e2fsprogsVersion: version, geometry, inodesPatched };
}

/** A random suffix for temp names (never part of any output bytes). */
export function randomSuffix(): string {
  return randomBytes(6).toString('hex');
}

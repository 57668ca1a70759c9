/**
 * The few ext4 on-disk structures the flattener edits after mke2fs: it rewrites the
 * timestamps of every in-use inode (and the root directory's owner and mode), then
 * recomputes each inode's metadata_csum checksum. Nothing else in the image is touched: no
 * superblock write, so no s_wtime / s_kbytes_written changes (which `debugfs -w` causes).
 * Layout reference: the kernel's Documentation/filesystems/ext4/ (superblock, group
 * descriptors, inode table).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { EmbersError } from '../errors.js';

// --- crc32c (Castagnoli), as ext4 uses it: the raw update, no final inversion ----------------
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** ext4's `ext4_chksum(crc, data)`: crc32c update without pre/post inversion. */
export function crc32cUpdate(crc: number, data: Uint8Array): number {
  let c = crc >>> 0;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

// --- superblock ------------------------------------------------------------------------------
const SB_OFFSET = 1024;
const EXT4_MAGIC = 0xef53;
const INCOMPAT_64BIT = 0x80;
const INCOMPAT_CSUM_SEED = 0x2000;
const RO_COMPAT_GDT_CSUM = 0x10;
const RO_COMPAT_METADATA_CSUM = 0x400;
const BG_INODE_UNINIT = 0x1;

export interface Ext4Superblock {
  firstDataBlock: number;
  blockSize: number;
  inodesPerGroup: number;
  firstIno: number;
  inodeSize: number;
  featureRoCompat: number;
  descSize: number;
  groupCount: number;
  metadataCsum: boolean;
  /** The seed ext4 derives inode checksums from (s_checksum_seed or crc32c of the UUID). */
  csumSeed: number;
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buf, 0, length, position);
  if (bytesRead !== length)
    throw EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', {
      problem: 'short-read',
      position,
      length,
      bytesRead,
    });
  return buf;
}

export async function readSuperblock(fh: FileHandle): Promise<Ext4Superblock> {
  const sb = await readAt(fh, SB_OFFSET, 1024);
  if (sb.readUInt16LE(0x38) !== EXT4_MAGIC) throw EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'not-ext4' });
  const featureIncompat = sb.readUInt32LE(0x60);
  const featureRoCompat = sb.readUInt32LE(0x64);
  const is64 = (featureIncompat & INCOMPAT_64BIT) !== 0;
  const blocksCount = sb.readUInt32LE(0x04) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  const firstDataBlock = sb.readUInt32LE(0x14);
  const blocksPerGroup = sb.readUInt32LE(0x20);
  const uuid = Buffer.from(sb.subarray(0x68, 0x78));
  const checksumSeed = sb.readUInt32LE(0x270);
  const metadataCsum = (featureRoCompat & RO_COMPAT_METADATA_CSUM) !== 0;
  return {
    firstDataBlock,
    blockSize: 1024 << sb.readUInt32LE(0x18),
    inodesPerGroup: sb.readUInt32LE(0x28),
    firstIno: sb.readUInt32LE(0x4c) >= 1 ? sb.readUInt32LE(0x54) : 11,
    inodeSize: sb.readUInt32LE(0x4c) >= 1 ? sb.readUInt16LE(0x58) : 128,
    featureRoCompat,
    descSize: is64 ? sb.readUInt16LE(0xfe) : 32,
    groupCount: Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup),
    metadataCsum,
    csumSeed: featureIncompat & INCOMPAT_CSUM_SEED ? checksumSeed : crc32cUpdate(0xffffffff, uuid),
  };
}

interface GroupDesc {
  inodeBitmap: number;
  inodeTable: number;
  flags: number;
  itableUnused: number;
}

async function readGroupDescs(fh: FileHandle, sb: Ext4Superblock): Promise<GroupDesc[]> {
  const gdtOffset = (sb.firstDataBlock + 1) * sb.blockSize;
  const raw = await readAt(fh, gdtOffset, sb.groupCount * sb.descSize);
  const out: GroupDesc[] = [];
  for (let g = 0; g < sb.groupCount; g++) {
    const d = raw.subarray(g * sb.descSize, (g + 1) * sb.descSize);
    const big = sb.descSize >= 64;
    out.push({
      inodeBitmap: d.readUInt32LE(0x04) + (big ? d.readUInt32LE(0x24) * 2 ** 32 : 0),
      inodeTable: d.readUInt32LE(0x08) + (big ? d.readUInt32LE(0x28) * 2 ** 32 : 0),
      flags: d.readUInt16LE(0x12),
      itableUnused: d.readUInt16LE(0x1c) + (big ? d.readUInt16LE(0x32) * 65536 : 0),
    });
  }
  return out;
}

// --- inodes ----------------------------------------------------------------------------------
const I_MODE = 0x00;
const I_UID = 0x02;
const I_ATIME = 0x08;
const I_CTIME = 0x0c;
const I_MTIME = 0x10;
const I_GID = 0x18;
const I_GENERATION = 0x64;
const I_UID_HIGH = 0x78;
const I_GID_HIGH = 0x7a;
const I_CHECKSUM_LO = 0x7c;
const I_EXTRA_ISIZE = 0x80;
const I_CHECKSUM_HI = 0x82;
const I_CTIME_EXTRA = 0x84;
const I_MTIME_EXTRA = 0x88;
const I_ATIME_EXTRA = 0x8c;
const I_CRTIME = 0x90;
const I_CRTIME_EXTRA = 0x94;
const GOOD_OLD_INODE_SIZE = 128;

/** Whether the large-inode field at `offset` (4 bytes) is inside i_extra_isize. */
function hasExtra(inode: Buffer, offset: number, size = 4): boolean {
  if (inode.length <= GOOD_OLD_INODE_SIZE) return false;
  return GOOD_OLD_INODE_SIZE + inode.readUInt16LE(I_EXTRA_ISIZE) >= offset + size;
}

/** The kernel's ext4_inode_csum(): crc32c over the inode with both checksum fields as zero. */
export function inodeChecksum(sb: Ext4Superblock, ino: number, inode: Buffer): number {
  const num = Buffer.alloc(8);
  num.writeUInt32LE(ino, 0);
  num.writeUInt32LE(inode.readUInt32LE(I_GENERATION), 4);
  let crc = crc32cUpdate(sb.csumSeed, num);
  const copy = Buffer.from(inode);
  copy.writeUInt16LE(0, I_CHECKSUM_LO);
  if (hasExtra(copy, I_CHECKSUM_HI, 2)) copy.writeUInt16LE(0, I_CHECKSUM_HI);
  crc = crc32cUpdate(crc, copy);
  return crc;
}

function setChecksum(sb: Ext4Superblock, ino: number, inode: Buffer): void {
  if (!sb.metadataCsum) return;
  const crc = inodeChecksum(sb, ino, inode);
  inode.writeUInt16LE(crc & 0xffff, I_CHECKSUM_LO);
  if (hasExtra(inode, I_CHECKSUM_HI, 2)) inode.writeUInt16LE(crc >>> 16, I_CHECKSUM_HI);
}

export interface RootMetadata {
  /** Permission bits (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
}

export interface NormalizeResult {
  inodesPatched: number;
}

/**
 * Rewrites every in-use inode of the image (the root, and inodes from s_first_ino on):
 * atime, ctime and crtime := epoch, all nanosecond fields := 0; mtime is kept (mke2fs copied
 * it from the staged file, which the flattener set from the layer). Optionally sets the root
 * directory's mode, owner and mtime. Recomputes inode checksums. Group descriptors,
 * bitmaps and the superblock are not written.
 */
export async function normalizeInodes(
  imagePath: string,
  opts: { epoch: number; root?: RootMetadata },
): Promise<NormalizeResult> {
  const fh = await open(imagePath, 'r+');
  try {
    const sb = await readSuperblock(fh);
    const hasGdtCsum = sb.metadataCsum || (sb.featureRoCompat & RO_COMPAT_GDT_CSUM) !== 0;
    const groups = await readGroupDescs(fh, sb);
    let patched = 0;
    for (let g = 0; g < groups.length; g++) {
      const gd = groups[g]!;
      if (hasGdtCsum && gd.flags & BG_INODE_UNINIT) continue;
      const used = hasGdtCsum ? sb.inodesPerGroup - gd.itableUnused : sb.inodesPerGroup;
      if (used <= 0) continue;
      const bitmap = await readAt(fh, gd.inodeBitmap * sb.blockSize, Math.ceil(sb.inodesPerGroup / 8));
      const tablePos = gd.inodeTable * sb.blockSize;
      const table = await readAt(fh, tablePos, used * sb.inodeSize);
      let dirty = false;
      for (let i = 0; i < used; i++) {
        if (!(bitmap[i >> 3]! & (1 << (i & 7)))) continue;
        const ino = g * sb.inodesPerGroup + i + 1;
        if (ino !== 2 && ino < sb.firstIno) continue;
        const inode = table.subarray(i * sb.inodeSize, (i + 1) * sb.inodeSize);
        if (inode.readUInt16LE(I_MODE) === 0) continue;
        inode.writeUInt32LE(opts.epoch >>> 0, I_ATIME);
        inode.writeUInt32LE(opts.epoch >>> 0, I_CTIME);
        if (ino === 2 && opts.root) {
          const r = opts.root;
          inode.writeUInt16LE((inode.readUInt16LE(I_MODE) & 0o170000) | (r.mode & 0o7777), I_MODE);
          inode.writeUInt16LE(r.uid & 0xffff, I_UID);
          inode.writeUInt16LE(Math.floor(r.uid / 65536) & 0xffff, I_UID_HIGH);
          inode.writeUInt16LE(r.gid & 0xffff, I_GID);
          inode.writeUInt16LE(Math.floor(r.gid / 65536) & 0xffff, I_GID_HIGH);
          inode.writeUInt32LE(r.mtime >>> 0, I_MTIME);
        }
        if (hasExtra(inode, I_CTIME_EXTRA)) inode.writeUInt32LE(0, I_CTIME_EXTRA);
        if (hasExtra(inode, I_MTIME_EXTRA)) inode.writeUInt32LE(0, I_MTIME_EXTRA);
        if (hasExtra(inode, I_ATIME_EXTRA)) inode.writeUInt32LE(0, I_ATIME_EXTRA);
        if (hasExtra(inode, I_CRTIME)) inode.writeUInt32LE(opts.epoch >>> 0, I_CRTIME);
        if (hasExtra(inode, I_CRTIME_EXTRA)) inode.writeUInt32LE(0, I_CRTIME_EXTRA);
        setChecksum(sb, ino, inode);
        dirty = true;
        patched++;
      }
      if (dirty) {
        const { bytesWritten } = await fh.write(table, 0, table.length, tablePos);
        if (bytesWritten !== table.length)
          throw EmbersError.of('EMB_IMAGE_FLATTEN_FAILED', { problem: 'short-write', imagePath });
      }
    }
    await fh.sync();
    return { inodesPatched: patched };
  } finally {
    await fh.close();
  }
}

/**
 * A writer (and a reader, for tests and checks) of the "newc" cpio format the Linux kernel
 * unpacks as an initramfs (`070701` magic, ASCII-hex header fields, no checksum).
 *
 * Layout of one entry: a 110-byte header, the NUL-terminated name, zero padding so that the
 * data starts on a 4-byte boundary, the data, zero padding to the next 4-byte boundary.
 * An archive ends with the entry named `TRAILER!!!`. The kernel also accepts several
 * archives one after another (each with its trailer), compressed or not: that is how an
 * instance's run configuration is appended to the shared base initramfs.
 */
import { EmbersError } from '../errors.js';

const MAGIC = '070701';
const HEADER_LEN = 110;
const TRAILER = 'TRAILER!!!';

/* st_mode file-type bits */
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

interface EntryCommon {
  /** Path inside the archive, without a leading slash ("bin/busybox"); a leading "/" or "./" is stripped. */
  name: string;
  /** Permission bits (and suid/sgid/sticky); the type bits come from `type`. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; default 0, so archives are reproducible. */
  mtime?: number;
}

export type CpioEntry =
  | (EntryCommon & { type: 'file'; data: Buffer | string })
  | (EntryCommon & { type: 'dir' })
  | (EntryCommon & { type: 'symlink'; target: string })
  | (EntryCommon & { type: 'chardev' | 'blockdev'; major: number; minor: number });

/** The inode fields a newc header carries for every entry, as written and as parsed. */
interface CpioInodeFields {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  mtime: number;
  rdevMajor: number;
  rdevMinor: number;
}

export interface CpioParsedEntry extends CpioInodeFields {
  name: string;
  devMajor: number;
  devMinor: number;
  data: Buffer;
  /** Byte offset of the entry's header in the parsed buffer. */
  offset: number;
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function hex8(value: number, field: string, name: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw EmbersError.of('EMB_INTERNAL', {
      during: 'cpio',
      problem: `${field} of "${name}" does not fit in 32 bits: ${value}`,
      name,
      field,
      value,
    });
  }
  return value.toString(16).toUpperCase().padStart(8, '0');
}

function normaliseName(name: string): string {
  let n = name;
  while (n.startsWith('./')) n = n.slice(2);
  n = n.replace(/^\/+/, '');
  if (n === '' || n.includes('\0') || n.split('/').some((part) => part === '..')) {
    throw EmbersError.of('EMB_INTERNAL', {
      during: 'cpio',
      problem: `invalid entry name ${JSON.stringify(name)}`,
      name,
    });
  }
  return n;
}

function header(fields: CpioInodeFields & { filesize: number; namesize: number; name: string }): string {
  const n = fields.name;
  return (
    MAGIC +
    hex8(fields.ino, 'ino', n) +
    hex8(fields.mode, 'mode', n) +
    hex8(fields.uid, 'uid', n) +
    hex8(fields.gid, 'gid', n) +
    hex8(fields.nlink, 'nlink', n) +
    hex8(fields.mtime, 'mtime', n) +
    hex8(fields.filesize, 'filesize', n) +
    hex8(0, 'devmajor', n) +
    hex8(0, 'devminor', n) +
    hex8(fields.rdevMajor, 'rdevmajor', n) +
    hex8(fields.rdevMinor, 'rdevminor', n) +
    hex8(fields.namesize, 'namesize', n) +
    hex8(0, 'check', n)
  );
}

/**
 * Serialises `entries` as one newc archive, trailer included. Parent directories are not
 * added implicitly: list them before their children (the kernel does not create them).
 */
export function writeCpio(entries: readonly CpioEntry[], opts: { firstIno?: number } = {}): Buffer {
  const chunks: Buffer[] = [];
  let offset = 0;
  let ino = opts.firstIno ?? 1;
  const push = (b: Buffer): void => {
    chunks.push(b);
    offset += b.length;
  };
  const pushPad = (): void => {
    const p = pad4(offset);
    if (p) push(Buffer.alloc(p));
  };
  const emit = (
    name: string,
    mode: number,
    uid: number,
    gid: number,
    nlink: number,
    mtime: number,
    data: Buffer,
    rdevMajor: number,
    rdevMinor: number,
    entryIno: number,
  ): void => {
    const nameBytes = Buffer.from(`${name}\0`, 'utf8');
    push(
      Buffer.from(
        header({
          ino: entryIno,
          mode,
          uid,
          gid,
          nlink,
          mtime,
          filesize: data.length,
          rdevMajor,
          rdevMinor,
          namesize: nameBytes.length,
          name,
        }),
        'ascii',
      ),
    );
    push(nameBytes);
    pushPad();
    if (data.length) {
      push(data);
      pushPad();
    }
  };
  const seen = new Set<string>();
  for (const e of entries) {
    const name = normaliseName(e.name);
    if (seen.has(name))
      throw EmbersError.of('EMB_INTERNAL', { during: 'cpio', problem: `duplicate entry "${name}"`, name });
    seen.add(name);
    const perm =
      (e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : e.type === 'file' ? 0o644 : 0o600)) &
      0o7777;
    const uid = e.uid ?? 0;
    const gid = e.gid ?? 0;
    const mtime = e.mtime ?? 0;
    switch (e.type) {
      case 'file': {
        const data = typeof e.data === 'string' ? Buffer.from(e.data, 'utf8') : e.data;
        emit(name, S_IFREG | perm, uid, gid, 1, mtime, data, 0, 0, ino++);
        break;
      }
      case 'dir':
        emit(name, S_IFDIR | perm, uid, gid, 2, mtime, Buffer.alloc(0), 0, 0, ino++);
        break;
      case 'symlink':
        if (!e.target)
          throw EmbersError.of('EMB_INTERNAL', {
            during: 'cpio',
            problem: `symlink "${name}" has an empty target`,
            name,
          });
        emit(name, S_IFLNK | perm, uid, gid, 1, mtime, Buffer.from(e.target, 'utf8'), 0, 0, ino++);
        break;
      case 'chardev':
      case 'blockdev':
        emit(
          name,
          (e.type === 'chardev' ? S_IFCHR : S_IFBLK) | perm,
          uid,
          gid,
          1,
          mtime,
          Buffer.alloc(0),
          e.major,
          e.minor,
          ino++,
        );
        break;
    }
  }
  emit(TRAILER, 0, 0, 0, 1, 0, Buffer.alloc(0), 0, 0, 0);
  // cpio(1) pads archives to 512 bytes; the kernel does not need it, so the archive stays minimal.
  return Buffer.concat(chunks, offset);
}

/**
 * Parses newc archives (several concatenated uncompressed archives are read in turn; zero
 * padding between them is skipped). Throws on a malformed header. Used by tests and to check
 * what we build.
 */
export function parseCpio(buf: Buffer): CpioParsedEntry[] {
  const out: CpioParsedEntry[] = [];
  let pos = 0;
  const field = (at: number, i: number): number => {
    const text = buf.toString('ascii', at + 6 + i * 8, at + 6 + (i + 1) * 8);
    if (!/^[0-9A-Fa-f]{8}$/.test(text))
      throw EmbersError.of('EMB_INTERNAL', { during: 'cpio', problem: `bad header field at offset ${at}`, offset: at });
    return parseInt(text, 16);
  };
  while (pos < buf.length) {
    if (buf[pos] === 0) {
      // padding between archives
      pos++;
      continue;
    }
    if (pos % 4 !== 0)
      throw EmbersError.of('EMB_INTERNAL', {
        during: 'cpio',
        problem: `header at unaligned offset ${pos}`,
        offset: pos,
      });
    if (pos + HEADER_LEN > buf.length)
      throw EmbersError.of('EMB_INTERNAL', {
        during: 'cpio',
        problem: `truncated header at offset ${pos}`,
        offset: pos,
      });
    const magic = buf.toString('ascii', pos, pos + 6);
    if (magic !== MAGIC)
      throw EmbersError.of('EMB_INTERNAL', {
        during: 'cpio',
        problem: `bad magic ${JSON.stringify(magic)} at offset ${pos}`,
        offset: pos,
      });
    const ino = field(pos, 0);
    const mode = field(pos, 1);
    const uid = field(pos, 2);
    const gid = field(pos, 3);
    const nlink = field(pos, 4);
    const mtime = field(pos, 5);
    const filesize = field(pos, 6);
    const devMajor = field(pos, 7);
    const devMinor = field(pos, 8);
    const rdevMajor = field(pos, 9);
    const rdevMinor = field(pos, 10);
    const namesize = field(pos, 11);
    const nameStart = pos + HEADER_LEN;
    if (namesize < 1 || nameStart + namesize > buf.length || buf[nameStart + namesize - 1] !== 0) {
      throw EmbersError.of('EMB_INTERNAL', { during: 'cpio', problem: `bad name at offset ${pos}`, offset: pos });
    }
    const name = buf.toString('utf8', nameStart, nameStart + namesize - 1);
    let dataStart = nameStart + namesize;
    dataStart += pad4(dataStart);
    if (dataStart + filesize > buf.length)
      throw EmbersError.of('EMB_INTERNAL', { during: 'cpio', problem: `truncated data of "${name}"`, name });
    const data = buf.subarray(dataStart, dataStart + filesize);
    const entryOffset = pos;
    pos = dataStart + filesize;
    pos += pad4(pos);
    if (name === TRAILER) continue;
    out.push({
      name,
      ino,
      mode,
      uid,
      gid,
      nlink,
      mtime,
      devMajor,
      devMinor,
      rdevMajor,
      rdevMinor,
      data,
      offset: entryOffset,
    });
  }
  return out;
}

/** True if the archive (uncompressed) ends with a trailer entry. */
export function hasTrailer(buf: Buffer): boolean {
  const tail = buf.subarray(Math.max(0, buf.length - 256)).toString('latin1');
  return tail.includes(`${TRAILER}\0`);
}

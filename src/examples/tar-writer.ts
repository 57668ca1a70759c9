/**
 * A small deterministic tar writer (ustar, PAX or GNU long names, PAX xattrs and large ids):
 * builds the layers of the example function's image (test-function.ts) and the tests'
 * fixtures. embers itself only reads tar (image/tar.ts).
 */
import type { TarEntryType } from '../image/tar.js';

const BLOCK = 512;

export interface TarWriteEntry {
  path: string;
  type: TarEntryType;
  /** Default: 0o644 for files, 0o755 for directories, 0o777 for symlinks. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** Default 0. */
  mtime?: number;
  content?: Buffer | string;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  uname?: string;
  gname?: string;
  xattrs?: Record<string, Buffer | string>;
}

export interface TarWriteOptions {
  /** How names longer than ustar allows are written. Default 'pax'. */
  longNames?: 'pax' | 'gnu';
  /** Number of zero blocks at the end (default 2). */
  endBlocks?: number;
}

const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

function writeString(buf: Buffer, offset: number, len: number, value: Buffer): void {
  value.copy(buf, offset, 0, Math.min(len, value.length));
}

function fitsOctal(n: number, len: number): boolean {
  return n >= 0 && n < 8 ** (len - 1);
}

function writeOctal(buf: Buffer, offset: number, len: number, n: number): void {
  if (fitsOctal(n, len)) {
    buf.write(`${n.toString(8).padStart(len - 1, '0')}\0`, offset, len, 'latin1');
    return;
  }
  // base-256
  buf[offset] = 0x80;
  let v = n;
  for (let i = offset + len - 1; i > offset; i--) {
    buf[i] = v % 256;
    v = Math.floor(v / 256);
  }
}

function headerBlock(fields: {
  name: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: Buffer;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
}): Buffer {
  const b = Buffer.alloc(BLOCK);
  writeString(b, 0, 100, fields.name);
  writeOctal(b, 100, 8, fields.mode);
  writeOctal(b, 108, 8, fields.uid);
  writeOctal(b, 116, 8, fields.gid);
  writeOctal(b, 124, 12, fields.size);
  writeOctal(b, 136, 12, fields.mtime);
  b.write(fields.typeflag, 156, 1, 'latin1');
  writeString(b, 157, 100, fields.linkname);
  b.write('ustar\0', 257, 6, 'latin1');
  b.write('00', 263, 2, 'latin1');
  writeString(b, 265, 32, Buffer.from(fields.uname));
  writeString(b, 297, 32, Buffer.from(fields.gname));
  writeOctal(b, 329, 8, fields.devmajor);
  writeOctal(b, 337, 8, fields.devminor);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return b;
}

const GNU_LONG_NAME = Buffer.from('././@LongLink');

/** A metadata entry (GNU long name or link, PAX extended header): a root-owned header and its data. */
function metaEntry(name: Buffer, mode: number, mtime: number, typeflag: string, data: Buffer): Buffer[] {
  const header = headerBlock({
    name,
    mode,
    uid: 0,
    gid: 0,
    size: data.length,
    mtime,
    typeflag,
    linkname: Buffer.alloc(0),
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
  });
  return [header, ...padTo512(data)];
}

function padTo512(data: Buffer): Buffer[] {
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return pad ? [data, Buffer.alloc(pad)] : [data];
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

/** Serialises entries into a tar archive (deterministic for the same input). */
export function writeTar(entries: readonly TarWriteEntry[], opts: TarWriteOptions = {}): Buffer {
  const longNames = opts.longNames ?? 'pax';
  const out: Buffer[] = [];
  for (const e of entries) {
    const content =
      e.type === 'file'
        ? typeof e.content === 'string'
          ? Buffer.from(e.content)
          : (e.content ?? Buffer.alloc(0))
        : Buffer.alloc(0);
    const defaultMode = e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644;
    const mode = e.mode ?? defaultMode;
    const uid = e.uid ?? 0;
    const gid = e.gid ?? 0;
    const mtime = e.mtime ?? 0;
    const name = Buffer.from(e.type === 'dir' && !e.path.endsWith('/') ? `${e.path}/` : e.path);
    const linkname = Buffer.from(e.linkname ?? '');

    const paxRecs: Buffer[] = [];
    const needLongName = name.length > 100;
    const needLongLink = linkname.length > 100;
    if (longNames === 'gnu') {
      // GNU long names: the name itself in an entry of its own before the header ('L', 'K')
      if (needLongName) out.push(...metaEntry(GNU_LONG_NAME, 0, 0, 'L', Buffer.concat([name, Buffer.alloc(1)])));
      if (needLongLink) out.push(...metaEntry(GNU_LONG_NAME, 0, 0, 'K', Buffer.concat([linkname, Buffer.alloc(1)])));
    } else {
      if (needLongName) paxRecs.push(paxRecord('path', name));
      if (needLongLink) paxRecs.push(paxRecord('linkpath', linkname));
    }
    if (!fitsOctal(uid, 8)) paxRecs.push(paxRecord('uid', Buffer.from(String(uid))));
    if (!fitsOctal(gid, 8)) paxRecs.push(paxRecord('gid', Buffer.from(String(gid))));
    for (const key of Object.keys(e.xattrs ?? {}).sort()) {
      const v = e.xattrs![key]!;
      paxRecs.push(paxRecord(`SCHILY.xattr.${key}`, typeof v === 'string' ? Buffer.from(v) : v));
    }
    if (paxRecs.length > 0) {
      const data = Buffer.concat(paxRecs);
      const paxName = Buffer.from(
        `PaxHeaders/${name.toString('utf8').replace(/\/$/, '').split('/').pop() ?? ''}`.slice(0, 100),
      );
      out.push(...metaEntry(paxName, 0o644, mtime, 'x', data));
    }
    out.push(
      headerBlock({
        name: needLongName ? name.subarray(0, 100) : name,
        mode,
        uid: fitsOctal(uid, 8) ? uid : 0,
        gid: fitsOctal(gid, 8) ? gid : 0,
        size: content.length,
        mtime,
        typeflag: TYPEFLAG[e.type],
        linkname: needLongLink ? linkname.subarray(0, 100) : linkname,
        uname: e.uname ?? '',
        gname: e.gname ?? '',
        devmajor: e.devmajor ?? 0,
        devminor: e.devminor ?? 0,
      }),
    );
    if (content.length > 0) out.push(...padTo512(content));
  }
  out.push(Buffer.alloc(BLOCK * (opts.endBlocks ?? 2)));
  return Buffer.concat(out);
}

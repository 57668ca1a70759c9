/**
 * A streaming tar reader and a small tar writer: ustar, GNU long names (`L`/`K`) and PAX
 * extended headers (`x`/`g`: path, linkpath, size, uid, gid, mtime, uname, gname,
 * `SCHILY.xattr.*`). Base-256 numeric fields are read. GNU sparse files and multi-volume
 * archives are refused (EMB_IMAGE_LAYER_UNSUPPORTED); malformed archives are
 * EMB_IMAGE_LAYER_INVALID. The reader never touches the filesystem.
 */
import { EmbersError } from '../errors.js';

export type TarEntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarHeader {
  /** The name exactly as recorded (after PAX / GNU long-name overrides), not normalised. */
  path: string;
  type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of content that follow (0 for everything but regular files). */
  size: number;
  /** Seconds since the epoch (fractions dropped). */
  mtime: number;
  /** Symlink target or hard-link target name. '' otherwise. */
  linkname: string;
  devmajor: number;
  devminor: number;
  uname: string;
  gname: string;
  /** Extended attributes from PAX `SCHILY.xattr.<name>` records. */
  xattrs: Map<string, Buffer>;
}

export interface TarEntry {
  header: TarHeader;
  /**
   * The entry's content. Consume it (or not) before asking for the next entry: the reader
   * skips whatever is left.
   */
  body: AsyncIterable<Buffer>;
}

const BLOCK = 512;

function invalid(message: string, details: Record<string, unknown> = {}): EmbersError {
  return new EmbersError('EMB_IMAGE_LAYER_INVALID', `invalid tar archive: ${message}`, details);
}

function unsupported(message: string, details: Record<string, unknown> = {}): EmbersError {
  return new EmbersError('EMB_IMAGE_LAYER_UNSUPPORTED', `unsupported tar archive: ${message}`, details);
}

/** Pulls exact byte counts out of an async stream of chunks. */
class ByteReader {
  private readonly it: AsyncIterator<Buffer | Uint8Array | string>;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  /** Bytes consumed so far (for error messages). */
  offset = 0;

  constructor(source: AsyncIterable<Buffer | Uint8Array | string>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.it.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    const value = next.value;
    const buf = Buffer.isBuffer(value) ? value : typeof value === 'string' ? Buffer.from(value) : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (buf.length > 0) {
      this.chunks.push(buf);
      this.buffered += buf.length;
    }
    return true;
  }

  private take(n: number): Buffer {
    // Caller guarantees buffered >= n.
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.chunks[0]!;
        const want = n - filled;
        if (c.length <= want) {
          c.copy(out, filled);
          filled += c.length;
          this.chunks.shift();
        } else {
          c.copy(out, filled, 0, want);
          this.chunks[0] = c.subarray(want);
          filled += want;
        }
      }
    }
    this.buffered -= n;
    this.offset += n;
    return out;
  }

  /** Exactly n bytes; undefined on a clean end of stream before the first byte. */
  async readExact(n: number): Promise<Buffer | undefined> {
    while (this.buffered < n) {
      if (!(await this.pull())) {
        if (this.buffered === 0) return undefined;
        throw invalid(`truncated archive (wanted ${n} bytes at offset ${this.offset}, got ${this.buffered})`, { offset: this.offset });
      }
    }
    return this.take(n);
  }

  /** Up to `max` bytes (at least 1), or undefined at the end of the stream. */
  async readSome(max: number): Promise<Buffer | undefined> {
    while (this.buffered === 0) {
      if (!(await this.pull())) return undefined;
    }
    return this.take(Math.min(max, this.chunks[0]!.length));
  }

  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      const got = await this.readSome(left);
      if (!got) throw invalid(`truncated archive (skipping ${n} bytes at offset ${this.offset})`, { offset: this.offset });
      left -= got.length;
    }
  }

  /** Stops the source early (closes files, kills decompressors) when reading is abandoned. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.it.return?.();
  }

  /** Reads and discards the rest of the stream. */
  async drain(): Promise<void> {
    this.chunks = [];
    this.buffered = 0;
    while (await this.pull()) {
      this.offset += this.buffered;
      this.chunks = [];
      this.buffered = 0;
    }
  }
}

function cString(buf: Buffer, start: number, len: number): Buffer {
  const field = buf.subarray(start, start + len);
  const nul = field.indexOf(0);
  return nul === -1 ? field : field.subarray(0, nul);
}

function decodeName(raw: Buffer, what: string): string {
  const text = raw.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(raw)) {
    throw unsupported(`${what} is not valid UTF-8: ${JSON.stringify(raw.toString('latin1'))}`);
  }
  return text;
}

/** Reads a numeric header field: octal text, or GNU base-256 when the top bit is set. */
function parseNumber(buf: Buffer, start: number, len: number, field: string): number {
  const f = buf.subarray(start, start + len);
  if (f[0]! & 0x80) {
    if (f[0] === 0xff) throw unsupported(`negative base-256 value in ${field}`);
    let n = f[0]! & 0x7f;
    for (let i = 1; i < f.length; i++) {
      n = n * 256 + f[i]!;
      if (n > Number.MAX_SAFE_INTEGER) throw unsupported(`${field} too large`);
    }
    return n;
  }
  const text = f.toString('latin1').replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw invalid(`bad octal number ${JSON.stringify(text)} in ${field}`);
  const n = parseInt(text, 8);
  if (n > Number.MAX_SAFE_INTEGER) throw unsupported(`${field} too large`);
  return n;
}

function checksumOk(block: Buffer): boolean {
  const stored = parseNumber(block, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return stored === unsigned || stored === signed;
}

function isZeroBlock(block: Buffer): boolean {
  for (let i = 0; i < block.length; i++) if (block[i] !== 0) return false;
  return true;
}

interface PaxRecords {
  [key: string]: Buffer;
}

function parsePax(data: Buffer): PaxRecords {
  const out: PaxRecords = {};
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers pad with NULs
    const space = data.indexOf(0x20, pos);
    if (space === -1) throw invalid('bad PAX record (no length)');
    const lenText = data.subarray(pos, space).toString('latin1');
    if (!/^\d+$/.test(lenText)) throw invalid(`bad PAX record length ${JSON.stringify(lenText)}`);
    const len = parseInt(lenText, 10);
    const end = pos + len;
    if (len <= 0 || end > data.length || data[end - 1] !== 0x0a) throw invalid('bad PAX record (length out of range)');
    const record = data.subarray(space + 1, end - 1);
    const eq = record.indexOf(0x3d);
    if (eq === -1) throw invalid('bad PAX record (no "=")');
    const key = record.subarray(0, eq).toString('utf8');
    out[key] = Buffer.from(record.subarray(eq + 1));
    pos = end;
  }
  return out;
}

function paxNumber(value: Buffer, key: string, allowFraction = false): number {
  const text = value.toString('latin1');
  const re = allowFraction ? /^-?\d+(\.\d*)?$/ : /^\d+$/;
  if (!re.test(text)) throw invalid(`bad PAX ${key} ${JSON.stringify(text)}`);
  const n = Math.floor(Number(text));
  if (!Number.isSafeInteger(n)) throw unsupported(`PAX ${key} out of range`);
  return n;
}

function applyPax(target: Partial<Record<string, unknown>> & { xattrs?: Map<string, Buffer> }, records: PaxRecords): void {
  for (const [key, value] of Object.entries(records)) {
    switch (key) {
      case 'path':
        target.path = decodeName(value, 'PAX path');
        break;
      case 'linkpath':
        target.linkname = decodeName(value, 'PAX linkpath');
        break;
      case 'size':
        target.size = paxNumber(value, key);
        break;
      case 'uid':
        target.uid = paxNumber(value, key);
        break;
      case 'gid':
        target.gid = paxNumber(value, key);
        break;
      case 'mtime':
        target.mtime = paxNumber(value, key, true);
        break;
      case 'uname':
        target.uname = value.toString('utf8');
        break;
      case 'gname':
        target.gname = value.toString('utf8');
        break;
      default:
        if (key.startsWith('SCHILY.xattr.')) {
          if (!target.xattrs) target.xattrs = new Map();
          target.xattrs.set(key.slice('SCHILY.xattr.'.length), value);
        } else if (key.startsWith('GNU.sparse.')) {
          throw unsupported('GNU sparse files (PAX GNU.sparse.*)');
        }
      // atime, ctime, comment, charset, LIBARCHIVE.*: ignored
    }
  }
}

/**
 * Reads a tar archive from a stream of chunks, yielding one entry per file-system object.
 * Stops at the end-of-archive marker (two zero blocks, or one, or a clean end of stream) and
 * then drains the rest of the stream, so a hash computed over the stream covers all of it.
 */
export async function* readTar(source: AsyncIterable<Buffer | Uint8Array | string>): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(source);
  try {
    yield* readEntries(reader);
    await reader.drain();
  } finally {
    await reader.close();
  }
}

async function* readEntries(reader: ByteReader): AsyncGenerator<TarEntry> {
  let global: PaxRecords = {};
  let pax: PaxRecords | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;

  for (;;) {
    const block = await reader.readExact(BLOCK);
    if (!block) break;
    if (isZeroBlock(block)) break; // end of archive (the second zero block is optional in practice)
    const headerOffset = reader.offset - BLOCK;
    if (!checksumOk(block)) throw invalid(`header checksum mismatch at offset ${headerOffset}`, { offset: headerOffset });

    const typeflag = String.fromCharCode(block[156]!);
    const size = parseNumber(block, 124, 12, 'size');
    const padded = Math.ceil(size / BLOCK) * BLOCK;

    const readData = async (): Promise<Buffer> => {
      if (size > 16 * 1024 * 1024) throw unsupported(`metadata entry of ${size} bytes`);
      const data = (await reader.readExact(padded)) ?? Buffer.alloc(0);
      if (data.length < padded) throw invalid('truncated metadata entry');
      return data.subarray(0, size);
    };

    if (typeflag === 'x') {
      pax = { ...(pax ?? {}), ...parsePax(await readData()) };
      continue;
    }
    if (typeflag === 'g') {
      global = { ...global, ...parsePax(await readData()) };
      continue;
    }
    if (typeflag === 'L') {
      longName = decodeName(cString(await readData(), 0, size), 'GNU long name');
      continue;
    }
    if (typeflag === 'K') {
      longLink = decodeName(cString(await readData(), 0, size), 'GNU long link name');
      continue;
    }

    const magic = block.subarray(257, 263).toString('latin1');
    const isUstar = magic === 'ustar\0';
    let name = decodeName(cString(block, 0, 100), 'name');
    if (isUstar) {
      const prefix = decodeName(cString(block, 345, 155), 'name prefix');
      if (prefix) name = `${prefix}/${name}`;
    }
    let type: TarEntryType;
    switch (typeflag) {
      case '0':
      case '\0':
      case '7':
        type = typeflag === '\0' && name.endsWith('/') ? 'dir' : 'file';
        break;
      case '1':
        type = 'hardlink';
        break;
      case '2':
        type = 'symlink';
        break;
      case '3':
        type = 'char';
        break;
      case '4':
        type = 'block';
        break;
      case '5':
        type = 'dir';
        break;
      case '6':
        type = 'fifo';
        break;
      case 'S':
        throw unsupported('GNU sparse files');
      case 'M':
        throw unsupported('multi-volume archives');
      case 'V':
      case 'N':
        await reader.skip(padded);
        pax = undefined;
        longName = undefined;
        longLink = undefined;
        continue;
      default:
        throw unsupported(`entry type ${JSON.stringify(typeflag)} (${name})`);
    }

    const fields: Partial<Record<string, unknown>> & { xattrs?: Map<string, Buffer> } = {
      path: name,
      linkname: decodeName(cString(block, 157, 100), 'link name'),
      size,
      uid: parseNumber(block, 108, 8, 'uid'),
      gid: parseNumber(block, 116, 8, 'gid'),
      mtime: parseNumber(block, 136, 12, 'mtime'),
      uname: cString(block, 265, 32).toString('utf8'),
      gname: cString(block, 297, 32).toString('utf8'),
    };
    if (longName !== undefined) fields.path = longName;
    if (longLink !== undefined) fields.linkname = longLink;
    applyPax(fields, global);
    if (pax) applyPax(fields, pax);
    pax = undefined;
    longName = undefined;
    longLink = undefined;

    const header: TarHeader = {
      path: fields.path as string,
      type,
      mode: parseNumber(block, 100, 8, 'mode') & 0o7777,
      uid: fields.uid as number,
      gid: fields.gid as number,
      size: type === 'file' ? (fields.size as number) : 0,
      mtime: fields.mtime as number,
      linkname: fields.linkname as string,
      devmajor: type === 'char' || type === 'block' ? parseNumber(block, 329, 8, 'devmajor') : 0,
      devminor: type === 'char' || type === 'block' ? parseNumber(block, 337, 8, 'devminor') : 0,
      uname: fields.uname as string,
      gname: fields.gname as string,
      xattrs: fields.xattrs ?? new Map(),
    };
    if (header.path === '') throw invalid(`entry with an empty name at offset ${headerOffset}`);

    // Header-only types carry no data even if their size field says otherwise (as Go's archive/tar).
    const dataSize = type === 'file' ? header.size : 0;
    const dataPadded = Math.ceil(dataSize / BLOCK) * BLOCK;
    let left = dataSize;
    const body: AsyncIterable<Buffer> = {
      async *[Symbol.asyncIterator]() {
        while (left > 0) {
          const chunk = await reader.readSome(left);
          if (!chunk) throw invalid(`truncated content of ${header.path}`);
          left -= chunk.length;
          yield chunk;
        }
      },
    };
    yield { header, body };
    if (left > 0) await reader.skip(left);
    const pad = dataPadded - dataSize;
    if (pad > 0) await reader.skip(pad);
  }
}

// ---------------------------------------------------------------------------------------
// Writer (used by fixtures, tests, and to synthesise archives): deterministic output.

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

const TYPEFLAG: Record<TarEntryType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

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
    const content = e.type === 'file' ? (typeof e.content === 'string' ? Buffer.from(e.content) : (e.content ?? Buffer.alloc(0))) : Buffer.alloc(0);
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
      const paxName = Buffer.from(`PaxHeaders/${name.toString('utf8').replace(/\/$/, '').split('/').pop() ?? ''}`.slice(0, 100));
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

/**
 * The one tar reader of embers: image layers, and the member index of `docker save` archives
 * (sources/archive.ts, through each entry's content offset). ustar, GNU long names (`L`/`K`)
 * and PAX extended headers (`x`/`g`: path, linkpath, size, uid, gid, mtime, uname, gname,
 * `SCHILY.xattr.*`). Base-256 numeric fields are read. GNU sparse files and multi-volume
 * archives are refused (EMB_IMAGE_LAYER_UNSUPPORTED); malformed archives are
 * EMB_IMAGE_LAYER_INVALID. The reader never touches the filesystem.
 *
 * Why not tar-stream (3.x): it decodes PAX values as UTF-8 text, so a binary xattr such as a
 * `security.capability` with a byte >= 0x80 (cap_setuid, as on newuidmap) would be changed;
 * it merges global PAX headers only into entries that have a PAX header of their own and
 * leaves PAX uid/gid/mtime/uname/gname to the caller; it reads the size field of hard links
 * and symlinks as content; and content offsets (for the archive index) are not in its API.
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
  /** Byte offset of the content in the archive (where a random-access reader finds it). */
  offset: number;
}

const BLOCK = 512;

/** A malformed archive: `defect` says what is wrong ("truncated archive (…)"). */
function invalid(defect: string, details: { offset?: number } = {}): EmbersError {
  return EmbersError.of('EMB_IMAGE_LAYER_INVALID', { problem: 'tar', defect, ...details });
}

/** An archive using a feature the reader refuses: `defect` names it ("GNU sparse files"). */
function unsupported(defect: string): EmbersError {
  return EmbersError.of('EMB_IMAGE_LAYER_UNSUPPORTED', { problem: 'tar', defect });
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
    const buf = Buffer.isBuffer(value)
      ? value
      : typeof value === 'string'
        ? Buffer.from(value)
        : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
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
        throw invalid(`truncated archive (wanted ${n} bytes at offset ${this.offset}, got ${this.buffered})`, {
          offset: this.offset,
        });
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
      if (!got)
        throw invalid(`truncated archive (skipping ${n} bytes at offset ${this.offset})`, { offset: this.offset });
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

function applyPax(
  target: Partial<Record<string, unknown>> & { xattrs?: Map<string, Buffer> },
  records: PaxRecords,
): void {
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
    if (!checksumOk(block))
      throw invalid(`header checksum mismatch at offset ${headerOffset}`, { offset: headerOffset });

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
    yield { header, body, offset: reader.offset };
    if (left > 0) await reader.skip(left);
    const pad = dataPadded - dataSize;
    if (pad > 0) await reader.skip(pad);
  }
}

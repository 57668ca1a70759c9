/**
 * A `docker save` archive (an uncompressed tar) read in place: its members are byte ranges of
 * the archive, found once by reading it through the tar reader (tar.ts), then read with
 * positioned reads. Symlinks and hard links between members are followed (Docker >= 25 links
 * the legacy layer.tar names to the OCI blobs).
 */
import { createReadStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { EmbersError, isEmbersError } from '../../errors.js';
import { readTar } from '../tar.js';
import type { ByteSource } from './byte-source.js';

interface TarMember {
  offset: number;
  size: number;
  type: 'file' | 'symlink' | 'hardlink' | 'other';
  linkname: string;
}

/** A `docker save` archive read in place: members are byte ranges of the archive. */
export class ArchiveSource implements ByteSource {
  private constructor(
    readonly location: string,
    private readonly fh: FileHandle,
    private readonly members: Map<string, TarMember>,
  ) {}

  static async open(path: string): Promise<ArchiveSource> {
    const fh = await open(path, 'r');
    try {
      const members = await indexArchive(path);
      return new ArchiveSource(path, fh, members);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  private member(name: string, depth = 0): TarMember | undefined {
    const m = this.members.get(posix.normalize(name));
    if (m?.type === 'symlink' && depth < 8) {
      const target = m.linkname.startsWith('/') ? m.linkname.slice(1) : posix.join(posix.dirname(name), m.linkname);
      return this.member(target, depth + 1);
    }
    if (m?.type === 'hardlink' && depth < 8) return this.member(m.linkname.replace(/^\/+/, ''), depth + 1);
    return m?.type === 'file' ? m : undefined;
  }

  async size(name: string): Promise<number | undefined> {
    return this.member(name)?.size;
  }

  async read(name: string, maxBytes: number): Promise<Buffer> {
    const m = this.member(name);
    if (!m)
      throw EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
        source: 'archive',
        blob: name,
        name,
        location: this.location,
      });
    if (m.size > maxBytes)
      throw EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
        problem: 'too-large',
        subject: name,
        size: m.size,
        name,
        location: this.location,
      });
    const buf = Buffer.alloc(m.size);
    if (m.size > 0) await this.fh.read(buf, 0, m.size, m.offset);
    return buf;
  }

  stream(name: string): Readable {
    const m = this.member(name);
    if (!m)
      throw EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
        source: 'archive',
        blob: name,
        name,
        location: this.location,
      });
    if (m.size === 0) {
      const empty = new PassThrough();
      empty.end();
      return empty;
    }
    return createReadStream(this.location, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 });
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * The members of an archive by normalised name, with the byte range of their content. The
 * contents are skipped, not kept; an archive the tar reader refuses is not an image.
 */
async function indexArchive(path: string): Promise<Map<string, TarMember>> {
  const members = new Map<string, TarMember>();
  try {
    for await (const { header, offset } of readTar(createReadStream(path, { highWaterMark: 1 << 20 }))) {
      const name = posix.normalize(header.path.replace(/^\/+/, '')).replace(/\/$/, '');
      const type =
        header.type === 'file' || header.type === 'symlink' || header.type === 'hardlink' ? header.type : 'other';
      members.set(name, { offset, size: header.size, type, linkname: header.linkname });
    }
  } catch (err) {
    if (!isEmbersError(err)) throw err;
    throw EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'not-an-image', path, reason: err.message }, { cause: err });
  }
  return members;
}

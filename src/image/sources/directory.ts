/** An OCI image layout directory (or the pulled-blob store, laid out the same way) as a ByteSource. */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { EmbersError } from '../../errors.js';
import { regularFileSize } from '../../util/fs.js';
import type { ByteSource } from './byte-source.js';

export class DirSource implements ByteSource {
  constructor(readonly location: string) {}
  private path(name: string): string {
    return join(this.location, ...name.split('/'));
  }
  async size(name: string): Promise<number | undefined> {
    return regularFileSize(this.path(name));
  }
  async read(name: string, maxBytes: number): Promise<Buffer> {
    const size = await this.size(name);
    if (size === undefined)
      throw EmbersError.of('EMB_IMAGE_BLOB_MISSING', {
        source: 'layout',
        blob: name,
        name,
        location: this.location,
      });
    if (size > maxBytes)
      throw EmbersError.of('EMB_IMAGE_MANIFEST_INVALID', {
        problem: 'too-large',
        subject: name,
        size,
        name,
        location: this.location,
      });
    return readFile(this.path(name));
  }
  stream(name: string): Readable {
    return createReadStream(this.path(name), { highWaterMark: 1 << 20 });
  }
  async close(): Promise<void> {}
}

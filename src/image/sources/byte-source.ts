/** Where the bytes of a local image come from: a layout directory or a `docker save` archive. */
import type { Readable } from 'node:stream';

export interface ByteSource {
  /** Where the image is, for messages. */
  readonly location: string;
  /** Size of a named file, or undefined when absent. */
  size(name: string): Promise<number | undefined>;
  read(name: string, maxBytes: number): Promise<Buffer>;
  stream(name: string): Readable;
  close(): Promise<void>;
}

/** The name of a blob in an OCI layout (`blobs/sha256/<hex>`). */
export function blobName(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`;
}

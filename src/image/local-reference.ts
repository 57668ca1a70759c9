/**
 * Local image references: a path to an OCI layout directory or a `docker save` archive,
 * optionally followed by `:tag` or `@sha256:<hex>` (see resolve.ts).
 */
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { EmbersError } from '../errors.js';
import { DIGEST_RE } from './manifest.js';

export interface ParsedRef {
  path: string;
  isDir: boolean;
  tag?: string;
  digest?: string;
}

async function statKind(path: string): Promise<'dir' | 'file' | undefined> {
  try {
    const st = await stat(path);
    return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : undefined;
  } catch {
    return undefined;
  }
}

export async function parseReference(ref: string): Promise<ParsedRef> {
  if (ref.trim() === '') throw EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'empty-reference', ref });
  const whole = await statKind(resolve(ref));
  if (whole) return { path: resolve(ref), isDir: whole === 'dir' };
  const at = ref.lastIndexOf('@');
  if (at > 0) {
    const kind = await statKind(resolve(ref.slice(0, at)));
    const digest = ref.slice(at + 1);
    if (kind) {
      if (!DIGEST_RE.test(digest)) throw EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'bad-digest', ref });
      return { path: resolve(ref.slice(0, at)), isDir: kind === 'dir', digest };
    }
  }
  const colon = ref.lastIndexOf(':');
  if (colon > 0) {
    const kind = await statKind(resolve(ref.slice(0, colon)));
    if (kind) return { path: resolve(ref.slice(0, colon)), isDir: kind === 'dir', tag: ref.slice(colon + 1) };
  }
  throw EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'no-image', ref });
}

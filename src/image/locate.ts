/**
 * Tells local image references from registry ones, by their form:
 *   `oci:PATH[:TAG|@DIGEST]`, `docker-archive:PATH[:TAG]`  local, explicitly
 *   `docker://REF`                                          registry, explicitly
 *   a path that exists (whole, or before its last `:` or `@`), or that starts with
 *   `/`, `./`, `../` or `~/`                                local (see resolve.ts)
 *   anything else                                           a registry reference (reference.ts)
 */
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { exists } from '../util/fs.js';
import { parseImageReference, pinnedReference, type ImageReference } from './registry/reference.js';

export type ImageLocation = { kind: 'local'; path: string } | { kind: 'registry'; ref: ImageReference };

export async function locateImage(ref: string): Promise<ImageLocation> {
  if (ref.startsWith('oci:')) return { kind: 'local', path: ref.slice('oci:'.length) };
  if (ref.startsWith('docker-archive:')) return { kind: 'local', path: ref.slice('docker-archive:'.length) };
  if (ref.startsWith('docker://')) return { kind: 'registry', ref: parseImageReference(ref) };
  if (ref.startsWith('~/')) return { kind: 'local', path: join(homedir(), ref.slice(2)) };
  if (ref === '' || ref === '.' || ref === '..' || /^(\/|\.\.?\/)/.test(ref)) return { kind: 'local', path: ref };
  if (await exists(resolve(ref))) return { kind: 'local', path: ref };
  const at = ref.lastIndexOf('@');
  if (at > 0 && (await exists(resolve(ref.slice(0, at))))) return { kind: 'local', path: ref };
  const colon = ref.lastIndexOf(':');
  if (colon > 0 && (await exists(resolve(ref.slice(0, colon))))) return { kind: 'local', path: ref };
  return { kind: 'registry', ref: parseImageReference(ref) };
}

/**
 * The reference that names exactly the image a manifest digest identifies, for restoring a
 * snapshot on another node (a tag may have moved there): `registry/repository@<digest>` for
 * registry references; local references are returned as they are (the layout is local anyway).
 */
export async function pinImageReference(ref: string, manifestDigest: string): Promise<string> {
  const location = await locateImage(ref);
  return location.kind === 'registry' ? pinnedReference(location.ref, manifestDigest) : ref;
}

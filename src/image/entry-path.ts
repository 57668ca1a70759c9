/** Tar entry names as relative paths of the staged tree: normalised, and refused when they could escape it. */
import { EmbersError, type ErrorDetails } from '../errors.js';

export function unsafe(message: string, details: ErrorDetails<'EMB_IMAGE_LAYER_UNSAFE'>): EmbersError {
  return new EmbersError('EMB_IMAGE_LAYER_UNSAFE', message, details);
}

/**
 * Normalises a tar entry name to a relative path without `.` components ('' is the root).
 * Absolute names and any `..` component are refused.
 */
export function normalizeEntryPath(name: string, what = 'entry'): string {
  if (name.startsWith('/')) throw unsafe(`${what} has an absolute path: ${JSON.stringify(name)}`, { name });
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafe(`${what} path contains "..": ${JSON.stringify(name)}`, { name });
    parts.push(part);
  }
  return parts.join('/');
}

export function parentOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i === -1 ? '' : rel.slice(0, i);
}

export function baseOf(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}

/**
 * The flattened images on disk, one directory per manifest digest and flattener version:
 *   rootfs/<manifest hex>-v<FLATTENER_VERSION>/rootfs.ext4   the image (read-only for users)
 *   rootfs/<manifest hex>-v<FLATTENER_VERSION>/image.json    FlattenedImage fields
 *   rootfs/.partial-*  rootfs/.trash-*                       in-flight publish / removal
 * An entry is complete when its image.json is readable and its rootfs has the recorded size;
 * removal renames the entry aside first, so readers see a whole entry or none.
 */
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbersError } from '../errors.js';
import { FLATTENER_VERSION, randomSuffix } from './flatten.js';
import type { FlattenedImage, ImageConfig } from './types.js';

export const DIGEST_RE = /^sha256:([0-9a-f]{64})$/;
export const ENTRY_RE = /^([0-9a-f]{64})-v(\d+)$/;

/** What image.json holds. */
export interface ImageJson {
  reference: string;
  manifestDigest: string;
  rootfsSha256: string;
  sizeBytes: number;
  config: ImageConfig;
  flattenerVersion: number;
  e2fsprogsVersion?: string;
}

export class RootfsCache {
  constructor(readonly imagesDir: string) {}

  get dir(): string {
    return join(this.imagesDir, 'rootfs');
  }

  entryDir(hex: string, version = FLATTENER_VERSION): string {
    return join(this.dir, `${hex}-v${version}`);
  }

  toFlattened(json: ImageJson, dir: string): FlattenedImage {
    return {
      reference: json.reference,
      manifestDigest: json.manifestDigest,
      rootfsPath: join(dir, 'rootfs.ext4'),
      rootfsSha256: json.rootfsSha256,
      sizeBytes: json.sizeBytes,
      config: json.config,
      flattenerVersion: json.flattenerVersion,
      ...(json.e2fsprogsVersion ? { e2fsprogsVersion: json.e2fsprogsVersion } : {}),
    };
  }

  async readEntry(dir: string): Promise<FlattenedImage | undefined> {
    let json: ImageJson;
    try {
      json = JSON.parse(await readFile(join(dir, 'image.json'), 'utf8')) as ImageJson;
    } catch {
      return undefined;
    }
    if (
      typeof json.manifestDigest !== 'string' ||
      typeof json.rootfsSha256 !== 'string' ||
      typeof json.sizeBytes !== 'number'
    )
      return undefined;
    try {
      const st = await stat(join(dir, 'rootfs.ext4'));
      if (!st.isFile() || st.size !== json.sizeBytes) return undefined;
    } catch {
      return undefined;
    }
    return this.toFlattened(json, dir);
  }

  /** Every cached rootfs (of any flattener version), sorted by manifest digest. */
  async list(): Promise<FlattenedImage[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: FlattenedImage[] = [];
    for (const name of names.sort()) {
      if (!ENTRY_RE.test(name)) continue;
      const entry = await this.readEntry(join(this.dir, name));
      if (entry) out.push(entry);
    }
    return out;
  }

  /** The cached rootfs of a manifest for the current flattener version, if any. */
  async get(manifestDigest: string): Promise<FlattenedImage | undefined> {
    const m = DIGEST_RE.exec(manifestDigest);
    if (!m) return undefined;
    return this.readEntry(this.entryDir(m[1]!));
  }

  /** Removes every cached rootfs (all flattener versions) of a manifest. Idempotent. Returns the disk bytes freed. */
  async remove(
    manifestDigest: string,
    onlyVersion?: number,
  ): Promise<{ flattenerVersion: number; diskBytes: number }[]> {
    const m = DIGEST_RE.exec(manifestDigest);
    if (!m) throw EmbersError.of('EMB_IMAGE_NOT_FOUND', { problem: 'not-a-digest', manifestDigest });
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const removed: { flattenerVersion: number; diskBytes: number }[] = [];
    for (const name of names) {
      const e = ENTRY_RE.exec(name);
      if (!e || e[1] !== m[1] || (onlyVersion !== undefined && Number(e[2]) !== onlyVersion)) continue;
      const diskBytes = await diskUsage(join(this.dir, name));
      const trash = join(this.dir, `.trash-${name}-${randomSuffix()}`);
      try {
        await rename(join(this.dir, name), trash);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // removed by someone else meanwhile
        throw err;
      }
      await rm(trash, { recursive: true, force: true });
      removed.push({ flattenerVersion: Number(e[2]), diskBytes });
    }
    return removed;
  }
}

/** Disk blocks used by the files of a directory, in bytes (rootfs files are sparse). */
async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  try {
    for (const name of await readdir(dir)) {
      const st = await stat(join(dir, name)).catch(() => undefined);
      if (st?.isFile()) total += st.blocks * 512;
    }
  } catch {
    /* gone */
  }
  return total;
}

/** Helpers shared by the image-*.test.ts files: temp dirs and reading ext4 images with debugfs. */
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';

/** A fresh directory under `base`, removed when the test ends. */
export async function tempDir(t: TestContext, prefix: string, base = '/tmp'): Promise<string> {
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(join(base, `embers-${prefix}-`));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

function debugfs(image: string, request: string): Buffer {
  const r = spawnSync('debugfs', ['-R', request, image], { maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`debugfs -R '${request}' failed: ${r.stderr.toString()}`);
  return r.stdout;
}

export interface DirEntry {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  name: string;
  size: number;
}

/** `ls -p` of a directory in the image, without . and .. */
export function lsImage(image: string, path: string): DirEntry[] {
  const out: DirEntry[] = [];
  for (const line of debugfs(image, `ls -p "${path}"`).toString('utf8').split('\n')) {
    const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
    if (!m || m[5] === '.' || m[5] === '..') continue;
    out.push({
      ino: Number(m[1]),
      mode: parseInt(m[2]!, 8),
      uid: Number(m[3]),
      gid: Number(m[4]),
      name: m[5]!,
      size: Number(m[6] || 0),
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** What every flattened rootfs holds at / besides the image's own entries: the runtime mount points, lost+found. */
export const ROOTFS_SKELETON = ['dev', 'lost+found', 'proc', 'run', 'sys', 'tmp'];

/** The names namesIn lists at / of a rootfs whose image put `own` there: those and the skeleton, sorted. */
export function rootNames(...own: string[]): string[] {
  return [...new Set([...ROOTFS_SKELETON, ...own])].sort();
}

export function namesIn(image: string, path: string): string[] {
  return lsImage(image, path).map((e) => e.name);
}

export interface InodeStat {
  ino: number;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  atime: number;
  ctime: number;
  mtime: number;
  crtime: number;
  /** "Fast link dest" or device numbers, raw. */
  raw: string;
}

/** debugfs `stat` of a path (does not follow a final symlink). */
export function statImage(image: string, path: string): InodeStat {
  const text = debugfs(image, `stat "${path}"`).toString('utf8');
  const num = (re: RegExp): number => {
    const m = re.exec(text);
    if (!m) throw new Error(`debugfs stat ${path}: no match for ${re} in\n${text}`);
    return m[1]!.startsWith('0x') ? parseInt(m[1]!.slice(2), 16) : Number(m[1]);
  };
  return {
    ino: num(/Inode:\s+(\d+)/),
    type: /Type:\s+(\S+)/.exec(text)?.[1] ?? '',
    mode: parseInt(/Mode:\s+(\d+)/.exec(text)?.[1] ?? '0', 8),
    uid: num(/User:\s+(\d+)/),
    gid: num(/Group:\s+(\d+)/),
    size: num(/Size:\s+(\d+)/),
    links: num(/Links:\s+(\d+)/),
    ctime: num(/ctime:\s+(0x[0-9a-f]+)/),
    atime: num(/atime:\s+(0x[0-9a-f]+)/),
    mtime: num(/mtime:\s+(0x[0-9a-f]+)/),
    crtime: num(/crtime:\s+(0x[0-9a-f]+)/),
    raw: text,
  };
}

/** Content of a file in the image. */
export function catImage(image: string, path: string): Buffer {
  return debugfs(image, `cat "${path}"`);
}

/** Extended attributes of a path in the image, as `name -> value` text from `ea_list`. */
export function xattrsImage(image: string, path: string): string {
  return debugfs(image, `ea_list "${path}"`).toString('utf8');
}

/** Runs e2fsck -fn; returns its exit status. */
export function fsck(image: string): number {
  return spawnSync('e2fsck', ['-f', '-n', image]).status ?? 128;
}

/** Every path below dir (relative), for leftover checks. */
export async function listTree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(join(dir, rel));
    } catch {
      return;
    }
    for (const n of names.sort()) {
      const child = rel ? `${rel}/${n}` : n;
      out.push(child);
      await walk(child);
    }
  };
  await walk('');
  return out;
}

/**
 * The C tools in native/, built with gcc on first use into the cache, named after the digest
 * of their sources (scripts/setup.sh builds them the same way, so a set-up machine finds them
 * built): `<cacheDir>/native/<name>-<sha256(sources in order)[0:12]>`.
 */
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './exec.js';
import { exists, sha256 } from './fs.js';

export interface NativeTool {
  name: string;
  /** The .c file first, then the headers it includes (all of them make the digest; gcc gets the first). */
  sources: string[];
}

/** Where the tool built from its current sources lives. */
export async function nativeToolPath(cacheDir: string, tool: NativeTool): Promise<string> {
  const digest = sha256(Buffer.concat(await Promise.all(tool.sources.map((s) => readFile(s))))).slice(0, 12);
  return join(cacheDir, 'native', `${tool.name}-${digest}`);
}

/** The tool binary, built if these sources were not built yet (atomic: built aside, then renamed). */
export async function ensureNativeTool(cacheDir: string, tool: NativeTool): Promise<string> {
  const binary = await nativeToolPath(cacheDir, tool);
  if (await exists(binary)) return binary;
  await mkdir(join(cacheDir, 'native'), { recursive: true });
  const tmp = `${binary}.tmp-${process.pid}`;
  try {
    await run('gcc', ['-O2', '-Wall', '-Wextra', '-pthread', '-o', tmp, tool.sources[0]]);
    await rename(tmp, binary);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  return binary;
}

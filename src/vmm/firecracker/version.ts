/**
 * Firecracker versions: the binary's (`firecracker --version` → "Firecracker v1.16.1") and
 * its snapshot data format (`firecracker --snapshot-version` → "v8.0.0"), and the format
 * version a snapshot state file was written with.
 *
 * A state file starts with a header that Firecracker serialises with bincode 1 (fixed-width
 * little-endian integers): the u64 magic 0x0710_1984_8664_0000 (x86_64), then the format
 * version as a string (u64 length + UTF-8 "MAJOR.MINOR.PATCH"). Firecracker loads a snapshot
 * only if its major equals the binary's and its minor is not newer; `checkSnapshotFormat`
 * applies the same rule before any process is started, so a mismatch is a clear refusal
 * naming both versions instead of a failed (and fatal) load.
 */
import { open } from 'node:fs/promises';
import { EmbersError } from '../../errors.js';
import { run } from '../../util/exec.js';

/** The x86_64 magic of a Firecracker snapshot state file. */
export const SNAPSHOT_MAGIC_X86_64 = 0x0710_1984_8664_0000n;
const MAX_VERSION_LENGTH = 64;

export interface SemVer {
  major: number;
  minor: number;
  patch: number;
}

/** Parses "1.2.3", "v1.2.3" or "1.2.3-rc1" (anything after the patch number is ignored). */
export function parseSemVer(text: string): SemVer | undefined {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(text.trim());
  return m ? { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) } : undefined;
}

/** "Firecracker v1.16.1" → "1.16.1". */
export function parseBinaryVersion(stdout: string): string | undefined {
  return /Firecracker v?(\d+\.\d+\.\d+\S*)/.exec(stdout)?.[1];
}

/** "v8.0.0" → "8.0.0". */
export function parseSnapshotVersionOutput(stdout: string): string | undefined {
  return /\bv?(\d+\.\d+\.\d+\S*)/.exec(stdout.trim())?.[1];
}

export async function binaryVersion(binary: string): Promise<string> {
  const { stdout } = await run(binary, ['--version'], { timeoutMs: 10_000 });
  const v = parseBinaryVersion(stdout);
  if (!v)
    throw new EmbersError('EMB_VMM_NOT_FOUND', `${binary} --version printed "${stdout.trim()}", not "Firecracker vX.Y.Z": is it Firecracker?`, {
      binary,
      stdout,
    });
  return v;
}

export async function binarySnapshotVersion(binary: string): Promise<string> {
  const { stdout } = await run(binary, ['--snapshot-version'], { timeoutMs: 10_000 });
  const v = parseSnapshotVersionOutput(stdout);
  if (!v)
    throw new EmbersError('EMB_VMM_NOT_FOUND', `${binary} --snapshot-version printed "${stdout.trim()}", not a version: is it Firecracker ≥ 1.0?`, {
      binary,
      stdout,
    });
  return v;
}

/** The header bytes of a state file written with format `version` (what Firecracker writes first). */
export function encodeSnapshotHeader(version: string): Buffer {
  const text = Buffer.from(version, 'utf8');
  const head = Buffer.alloc(16);
  head.writeBigUInt64LE(SNAPSHOT_MAGIC_X86_64, 0);
  head.writeBigUInt64LE(BigInt(text.length), 8);
  return Buffer.concat([head, text]);
}

/** The data format version recorded in a snapshot state file's header. */
export async function readSnapshotFormatVersion(stateFile: string): Promise<string> {
  const fh = await open(stateFile, 'r').catch((err: NodeJS.ErrnoException) => {
    throw new EmbersError('EMB_SNAPSHOT_CORRUPT', `snapshot state file ${stateFile} cannot be opened: ${err.message}`, { stateFile }, { cause: err });
  });
  try {
    const buf = Buffer.alloc(16 + MAX_VERSION_LENGTH);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const bad = (why: string) => new EmbersError('EMB_SNAPSHOT_CORRUPT', `${stateFile} is not a Firecracker x86_64 snapshot state file: ${why}`, { stateFile });
    if (bytesRead < 16) throw bad(`only ${bytesRead} bytes`);
    const magic = buf.readBigUInt64LE(0);
    if (magic !== SNAPSHOT_MAGIC_X86_64) throw bad(`magic 0x${magic.toString(16)} (expected 0x${SNAPSHOT_MAGIC_X86_64.toString(16)})`);
    const len = Number(buf.readBigUInt64LE(8));
    if (len < 5 || len > MAX_VERSION_LENGTH || 16 + len > bytesRead) throw bad(`version string length ${len}`);
    const version = buf.subarray(16, 16 + len).toString('utf8');
    if (!parseSemVer(version)) throw bad(`version "${version}"`);
    return version;
  } finally {
    await fh.close();
  }
}

/**
 * Refuses a snapshot whose data format `snapshotVersion` this binary (format `binaryFormat`,
 * Firecracker `binaryVersion`) cannot load: a different major, or a newer minor. Throws
 * EMB_SNAPSHOT_VERSION_MISMATCH naming both.
 */
export function checkSnapshotFormat(
  snapshotVersion: string,
  binaryFormat: string,
  context: { binary?: string; binaryVersion?: string; source?: string } = {},
): void {
  const snap = parseSemVer(snapshotVersion);
  const bin = parseSemVer(binaryFormat);
  const details = { snapshotVersion, binarySnapshotVersion: binaryFormat, ...context };
  const by = `${context.binary ?? 'firecracker'}${context.binaryVersion ? ` v${context.binaryVersion}` : ''}`;
  const from = context.source ? ` (${context.source})` : '';
  if (!snap) throw new EmbersError('EMB_SNAPSHOT_CORRUPT', `snapshot format version "${snapshotVersion}"${from} is not MAJOR.MINOR.PATCH`, details);
  if (!bin) throw new EmbersError('EMB_VMM_NOT_FOUND', `${by} reports snapshot format "${binaryFormat}", not MAJOR.MINOR.PATCH`, details);
  if (snap.major !== bin.major) {
    throw new EmbersError(
      'EMB_SNAPSHOT_VERSION_MISMATCH',
      `snapshot format v${snapshotVersion}${from} has major version ${snap.major}, but ${by} loads snapshot format v${binaryFormat} (major ${bin.major}): refused before load`,
      details,
    );
  }
  if (snap.minor > bin.minor) {
    throw new EmbersError(
      'EMB_SNAPSHOT_VERSION_MISMATCH',
      `snapshot format v${snapshotVersion}${from} is newer than v${binaryFormat}, the newest ${by} loads: refused before load`,
      details,
    );
  }
}

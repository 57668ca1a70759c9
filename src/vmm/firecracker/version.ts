/**
 * Firecracker versions: the binary's (`firecracker --version` → "Firecracker v1.16.1") and
 * its snapshot data format (`firecracker --snapshot-version` → "v10.0.0"), and the format
 * version a snapshot state file was written with.
 *
 * The framing of a state file's header, as a real Firecracker v1.16.1 writes it (the first
 * 16 bytes of a real file: `00 | 00 00 64 86 84 19 10 07 | 06 | "10.0.0"`, kept in
 * test/fixtures/firecracker-v1.16.1-vmstate-head.bin):
 *
 *     offset 0      one byte (0x00 in every real file seen)
 *     offset 1      the magic, a u64 little-endian: 0x0710_1984_8664_0000 on x86_64
 *     offset 9      the length of the version string, one byte
 *     offset 10     the version string, UTF-8 "MAJOR.MINOR.PATCH"
 *
 * then the serialised VM state. Firecracker loads a snapshot only if its major equals the
 * binary's and its minor is not newer; `checkSnapshotFormat` applies the same rule before
 * any process is started, so a mismatch is a clear refusal naming both versions instead of
 * a failed (and fatal) load. This module only reads the header: nothing in embers writes
 * one (the stand-in VMM copies the framing of the real file above).
 */
import { open } from 'node:fs/promises';
import { EmbersError } from '../../errors.js';
import { run } from '../../util/exec.js';

/** The x86_64 magic of a Firecracker snapshot state file. */
export const SNAPSHOT_MAGIC_X86_64 = 0x0710_1984_8664_0000n;
const MAX_VERSION_LENGTH = 64;
/** Where the header's fields are (see the framing above). */
export const STATE_HEADER = { magicOffset: 1, lengthOffset: 9, versionOffset: 10 } as const;

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
  if (!v) throw EmbersError.of('EMB_VMM_NOT_FOUND', { problem: 'version-output', binary, option: '--version', stdout });
  return v;
}

export async function binarySnapshotVersion(binary: string): Promise<string> {
  const { stdout } = await run(binary, ['--snapshot-version'], { timeoutMs: 10_000 });
  const v = parseSnapshotVersionOutput(stdout);
  if (!v)
    throw EmbersError.of('EMB_VMM_NOT_FOUND', {
      problem: 'version-output',
      binary,
      option: '--snapshot-version',
      stdout,
    });
  return v;
}

/** The data format version recorded in a snapshot state file's header. */
export async function readSnapshotFormatVersion(stateFile: string): Promise<string> {
  const fh = await open(stateFile, 'r').catch((err: NodeJS.ErrnoException) => {
    throw EmbersError.of(
      'EMB_SNAPSHOT_CORRUPT',
      { problem: 'state-file-unreadable', stateFile, reason: err.message },
      { cause: err },
    );
  });
  try {
    const buf = Buffer.alloc(STATE_HEADER.versionOffset + MAX_VERSION_LENGTH);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return parseSnapshotHeader(buf.subarray(0, bytesRead), stateFile);
  } finally {
    await fh.close();
  }
}

/**
 * The format version in the first bytes of a state file (`head`, at least the header); throws
 * EMB_SNAPSHOT_CORRUPT naming what does not fit the framing.
 */
export function parseSnapshotHeader(head: Buffer, stateFile: string): string {
  const { versionOffset, magicOffset, lengthOffset } = STATE_HEADER;
  const bad = (why: string) =>
    EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'state-file', stateFile, reason: why });
  if (head.length < versionOffset) throw bad(`only ${head.length} bytes`);
  const magic = head.readBigUInt64LE(magicOffset);
  if (magic !== SNAPSHOT_MAGIC_X86_64) {
    throw bad(
      `magic 0x${magic.toString(16)} at byte ${magicOffset} (expected 0x${SNAPSHOT_MAGIC_X86_64.toString(16)})`,
    );
  }
  const len = head[lengthOffset];
  if (len < 5 || len > MAX_VERSION_LENGTH || versionOffset + len > head.length)
    throw bad(`version string length ${len}`);
  const version = head.subarray(versionOffset, versionOffset + len).toString('utf8');
  if (!parseSemVer(version)) throw bad(`version "${version}"`);
  return version;
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
  if (!snap) throw EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'format-version', ...details });
  if (!bin) throw EmbersError.of('EMB_VMM_NOT_FOUND', { problem: 'snapshot-format', ...details });
  if (snap.major !== bin.major || snap.minor > bin.minor)
    throw EmbersError.of('EMB_SNAPSHOT_VERSION_MISMATCH', details);
}

import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { EmbersError } from '../errors.js';

/**
 * Block deltas: the runs of a disk that differ from its base (the image rootfs), stored as
 * (offset, bytes). Applying a delta to the base gives a disk bit-identical to the one it was
 * captured from; `applyDelta` proves it by hashing the result.
 *
 * File format (little-endian):
 *   magic "EMBDELTA" (8) | version u32 | blockSize u32 | diskSize u64 | runCount u64
 *   runCount × ( offset u64 | length u64 | length bytes )
 *   sha256 of everything above (32)
 */
const MAGIC = Buffer.from('EMBDELTA');
const VERSION = 1;
const HEADER = 8 + 4 + 4 + 8 + 8;
const CHUNK = 1 << 20;

export interface DeltaRun {
  offset: number;
  length: number;
}

export interface DeltaStats {
  runs: number;
  changedBytes: number;
  fileBytes: number;
  diskSize: number;
}

/** Compares `disk` with `base` block by block and returns the runs that differ (or extend past the base). */
export async function diffByComparison(base: string, disk: string, blockSize = 4096): Promise<DeltaRun[]> {
  const runs: DeltaRun[] = [];
  const a = await open(base, 'r');
  const b = await open(disk, 'r');
  try {
    const baseSize = (await a.stat()).size;
    const diskSize = (await b.stat()).size;
    const bufA = Buffer.alloc(CHUNK);
    const bufB = Buffer.alloc(CHUNK);
    let current: DeltaRun | undefined;
    for (let pos = 0; pos < diskSize; pos += CHUNK) {
      const want = Math.min(CHUNK, diskSize - pos);
      const { bytesRead: nb } = await b.read(bufB, 0, want, pos);
      const { bytesRead: na } =
        pos < baseSize ? await a.read(bufA, 0, Math.min(want, baseSize - pos), pos) : { bytesRead: 0 };
      if (na < want) bufA.fill(0, na, want);
      if (nb < want) bufB.fill(0, nb, want);
      // fast path: whole chunk equal
      if (na === want && bufA.compare(bufB, 0, want, 0, want) === 0) {
        current = undefined;
        continue;
      }
      for (let off = 0; off < want; off += blockSize) {
        const end = Math.min(off + blockSize, want);
        // past the end of the base, the restored disk reads zeros: only non-zero blocks differ
        const differs = pos + off >= baseSize ? !isZero(bufB, off, end) : bufA.compare(bufB, off, end, off, end) !== 0;
        if (differs) {
          if (current && current.offset + current.length === pos + off) current.length += end - off;
          else {
            current = { offset: pos + off, length: end - off };
            runs.push(current);
          }
        } else current = undefined;
      }
    }
  } finally {
    await a.close();
    await b.close();
  }
  return runs;
}

function isZero(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] !== 0) return false;
  return true;
}

/** Writes the delta file for `runs` of `disk`. */
export async function writeDelta(disk: string, runs: DeltaRun[], out: string, blockSize = 4096): Promise<DeltaStats> {
  const src = await open(disk, 'r');
  const dst = await open(out, 'w');
  const hash = createHash('sha256');
  let written = 0;
  const put = async (buf: Buffer) => {
    hash.update(buf);
    await dst.write(buf, 0, buf.length, written);
    written += buf.length;
  };
  try {
    const diskSize = (await src.stat()).size;
    const header = Buffer.alloc(HEADER);
    MAGIC.copy(header, 0);
    header.writeUInt32LE(VERSION, 8);
    header.writeUInt32LE(blockSize, 12);
    header.writeBigUInt64LE(BigInt(diskSize), 16);
    header.writeBigUInt64LE(BigInt(runs.length), 24);
    await put(header);
    let changed = 0;
    const buf = Buffer.alloc(CHUNK);
    for (const r of runs) {
      const rh = Buffer.alloc(16);
      rh.writeBigUInt64LE(BigInt(r.offset), 0);
      rh.writeBigUInt64LE(BigInt(r.length), 8);
      await put(rh);
      for (let done = 0; done < r.length; ) {
        const n = Math.min(CHUNK, r.length - done);
        const { bytesRead } = await src.read(buf, 0, n, r.offset + done);
        if (bytesRead < n) buf.fill(0, bytesRead, n);
        await put(Buffer.from(buf.subarray(0, n)));
        done += n;
      }
      changed += r.length;
    }
    const digest = hash.digest();
    await dst.write(digest, 0, digest.length, written);
    written += digest.length;
    await dst.sync();
    return { runs: runs.length, changedBytes: changed, fileBytes: written, diskSize };
  } finally {
    await src.close();
    await dst.close();
  }
}

/**
 * Applies a delta file onto `target` (already a copy of the base): writes every run and sets
 * the disk size. The delta's own checksum is verified first: a truncated or corrupt delta
 * is refused before a byte of `target` changes.
 */
export async function applyDelta(deltaPath: string, target: string): Promise<DeltaStats> {
  const d = await open(deltaPath, 'r');
  try {
    const size = (await d.stat()).size;
    const corrupt = (why: string) =>
      EmbersError.of('EMB_SNAPSHOT_CORRUPT', { problem: 'delta', path: deltaPath, reason: why });
    if (size < HEADER + 32) throw corrupt('file too short');
    // verify the trailing checksum
    const hash = createHash('sha256');
    const buf = Buffer.alloc(CHUNK);
    for (let pos = 0; pos < size - 32; pos += CHUNK) {
      const n = Math.min(CHUNK, size - 32 - pos);
      await d.read(buf, 0, n, pos);
      hash.update(buf.subarray(0, n));
    }
    const trailer = Buffer.alloc(32);
    await d.read(trailer, 0, 32, size - 32);
    if (!hash.digest().equals(trailer)) throw corrupt('checksum mismatch (truncated or modified)');
    const header = Buffer.alloc(HEADER);
    await d.read(header, 0, HEADER, 0);
    if (!header.subarray(0, 8).equals(MAGIC)) throw corrupt('bad magic');
    if (header.readUInt32LE(8) !== VERSION) throw corrupt(`unknown version ${header.readUInt32LE(8)}`);
    const diskSize = Number(header.readBigUInt64LE(16));
    const runCount = Number(header.readBigUInt64LE(24));
    const t = await open(target, 'r+');
    let changed = 0;
    try {
      let pos = HEADER;
      const rh = Buffer.alloc(16);
      for (let i = 0; i < runCount; i++) {
        await d.read(rh, 0, 16, pos);
        pos += 16;
        const offset = Number(rh.readBigUInt64LE(0));
        const length = Number(rh.readBigUInt64LE(8));
        if (pos + length > size - 32 || offset + length > diskSize) throw corrupt(`run ${i} out of bounds`);
        for (let done = 0; done < length; ) {
          const n = Math.min(CHUNK, length - done);
          await d.read(buf, 0, n, pos + done);
          await t.write(buf, 0, n, offset + done);
          done += n;
        }
        pos += length;
        changed += length;
      }
      await t.truncate(diskSize);
      await t.sync();
    } finally {
      await t.close();
    }
    return { runs: runCount, changedBytes: changed, fileBytes: size, diskSize };
  } finally {
    await d.close();
  }
}

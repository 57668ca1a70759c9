/**
 * Layer decompression: the compression is sniffed from the first bytes (not trusted from the
 * media type), gzip through zlib, zstd through the zstd program. Corrupt streams are
 * EMB_IMAGE_LAYER_INVALID; a zstd layer without the zstd program EMB_IMAGE_LAYER_UNSUPPORTED.
 */
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { EmbersError } from '../errors.js';
import { which } from '../util/exec.js';
import type { ByteSource } from './sources/byte-source.js';

export type Compression = 'none' | 'gzip' | 'zstd';

async function sniff(source: ByteSource, name: string): Promise<Compression> {
  const s = source.stream(name);
  let head = Buffer.alloc(0);
  try {
    for await (const chunk of s) {
      head = Buffer.concat([head, chunk as Buffer]);
      if (head.length >= 4) break;
    }
  } finally {
    s.destroy();
  }
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  return 'none';
}

async function* gunzip(input: Readable, label: string): AsyncGenerator<Buffer> {
  const gz = createGunzip();
  const done = pipeline(input, gz).catch((err: unknown) => {
    gz.destroy(err as Error);
  });
  try {
    for await (const chunk of gz) yield chunk as Buffer;
  } catch (err) {
    throw EmbersError.of(
      'EMB_IMAGE_LAYER_INVALID',
      { problem: 'gzip', reason: err instanceof Error ? err.message : String(err), layer: label },
      { cause: err },
    );
  } finally {
    input.destroy();
    await done;
  }
}

async function* unzstd(input: Readable, label: string): AsyncGenerator<Buffer> {
  const zstd = await which('zstd');
  if (!zstd) {
    throw EmbersError.of(
      'EMB_IMAGE_LAYER_UNSUPPORTED',
      { problem: 'zstd-missing', layer: label },
      { hint: 'install the Debian package zstd' },
    );
  }
  const child = spawn(zstd, ['-d', '-c', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr: Buffer[] = [];
  child.stderr.on('data', (b: Buffer) => stderr.push(b));
  const exited = new Promise<number>((res) => child.on('close', (code) => res(code ?? 128)));
  const feeding = pipeline(input, child.stdin).catch(() => {
    /* reported through the exit code */
  });
  let finished = false;
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const code = await exited;
    await feeding;
    if (code !== 0) {
      throw EmbersError.of('EMB_IMAGE_LAYER_INVALID', {
        problem: 'zstd',
        reason: Buffer.concat(stderr).toString().trim(),
        layer: label,
        exit: code,
      });
    }
    finished = true;
  } finally {
    if (!finished) {
      input.destroy();
      child.kill('SIGKILL');
      await exited;
    }
  }
}

/** The uncompressed bytes of a named layer of a source, whatever its compression. */
export async function* decompressed(source: ByteSource, name: string, label: string): AsyncGenerator<Buffer> {
  const compression = await sniff(source, name);
  const input = source.stream(name);
  if (compression === 'gzip') yield* gunzip(input, label);
  else if (compression === 'zstd') yield* unzstd(input, label);
  else {
    try {
      for await (const c of input) yield c as Buffer;
    } finally {
      input.destroy();
    }
  }
}

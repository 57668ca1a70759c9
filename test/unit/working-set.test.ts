import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isEmbersError } from '../../src/errors.js';
import {
  encodeWorkingSetRanges,
  parseWorkingSetRanges,
  rangesFromPages,
  totalPages,
  writeWorkingSetPages,
  checkPagesSize,
  type WorkingSetRanges,
} from '../../src/memory/working-set.js';

const WS: WorkingSetRanges = {
  pageSize: 4096,
  ranges: [
    { firstPage: 10, pageCount: 3 },
    { firstPage: 2, pageCount: 1 },
    { firstPage: 0x1_0000_0001, pageCount: 2 }, // a page index above 2^32 must survive the u64
  ],
};

const invalid = (fn: () => unknown, why: RegExp) =>
  assert.throws(fn, (err: unknown) => {
    assert.ok(isEmbersError(err, 'EMB_WORKING_SET_INVALID'), String(err));
    assert.match(err.message, why);
    return true;
  });

test('working set ranges: the bytes are the WS-FORMAT layout, and parse back to the same ranges in the same order', () => {
  const buf = encodeWorkingSetRanges(WS);
  assert.equal(buf.length, 16 + 3 * 16);
  assert.equal(buf.subarray(0, 8).toString('latin1'), 'EMBWS1\0\0');
  assert.equal(buf.readUInt32LE(8), 4096);
  assert.equal(buf.readUInt32LE(12), 3);
  assert.equal(buf.readBigUInt64LE(16), 10n);
  assert.equal(buf.readUInt32LE(24), 3);
  assert.equal(buf.readUInt32LE(28), 0);
  assert.equal(buf.readBigUInt64LE(48), 0x1_0000_0001n);
  assert.deepEqual(parseWorkingSetRanges(buf, 'x'), WS);
  assert.equal(totalPages(WS), 6);
  assert.deepEqual(parseWorkingSetRanges(encodeWorkingSetRanges({ pageSize: 4096, ranges: [] }), 'empty').ranges, []);
});

test('working set ranges: bad magic, truncated, trailing bytes, wrong page size, empty or overlapping ranges are refused', () => {
  const good = encodeWorkingSetRanges(WS);
  const bad = Buffer.from(good);
  bad.write('EMBWS2', 0, 'latin1');
  invalid(() => parseWorkingSetRanges(bad, 'x'), /bad magic/);
  invalid(() => parseWorkingSetRanges(good.subarray(0, 10), 'x'), /truncated/);
  invalid(() => parseWorkingSetRanges(good.subarray(0, good.length - 1), 'x'), /truncated/);
  invalid(() => parseWorkingSetRanges(Buffer.concat([good, Buffer.alloc(16)]), 'x'), /trailing/);
  const page = Buffer.from(good);
  page.writeUInt32LE(65536, 8);
  invalid(() => parseWorkingSetRanges(page, 'x'), /page size 65536/);
  const empty = Buffer.from(good);
  empty.writeUInt32LE(0, 24);
  invalid(() => parseWorkingSetRanges(empty, 'x'), /no pages/);
  const reserved = Buffer.from(good);
  reserved.writeUInt32LE(1, 28);
  invalid(() => parseWorkingSetRanges(reserved, 'x'), /reserved/);
  const overlapping = {
    pageSize: 4096,
    ranges: [
      { firstPage: 10, pageCount: 3 },
      { firstPage: 5, pageCount: 1 },
      { firstPage: 4, pageCount: 7 },
    ],
  };
  invalid(() => encodeWorkingSetRanges(overlapping), /overlap/);
  // the same, written by hand past the encoder's check
  const raw = Buffer.from(
    encodeWorkingSetRanges({
      pageSize: 4096,
      ranges: [
        { firstPage: 10, pageCount: 3 },
        { firstPage: 20, pageCount: 1 },
      ],
    }),
  );
  raw.writeBigUInt64LE(12n, 32);
  invalid(() => parseWorkingSetRanges(raw, 'x'), /ranges 0 \(pages 10\+3\) and 1 \(pages 12\+1\) overlap/);
  invalid(() => parseWorkingSetRanges(good, 'x', { memoryBytes: 16 * 4096 }), /past the 65536-byte memory file/);
  const huge = Buffer.from(good);
  huge.writeUInt32LE(0xffffffff, 12);
  invalid(() => parseWorkingSetRanges(huge, 'x'), /more than/);
});

test('working set ranges from pages: coalesced only when touched consecutively, order kept, repeats dropped', () => {
  assert.deepEqual(rangesFromPages([5, 6, 7, 1, 2, 9, 8, 6, 10]).ranges, [
    { firstPage: 5, pageCount: 3 },
    { firstPage: 1, pageCount: 2 },
    { firstPage: 9, pageCount: 1 },
    { firstPage: 8, pageCount: 1 },
    { firstPage: 10, pageCount: 1 },
  ]);
});

test('working set pages: the bytes of each range in record order; size checked against the ranges', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'embers-ws-'));
  try {
    const memory = Buffer.alloc(16 * 4096);
    for (let p = 0; p < 16; p++) memory.fill(p + 1, p * 4096, (p + 1) * 4096);
    await writeFile(join(dir, 'memory.bin'), memory);
    const ws = {
      pageSize: 4096,
      ranges: [
        { firstPage: 9, pageCount: 2 },
        { firstPage: 1, pageCount: 1 },
      ],
    };
    const n = await writeWorkingSetPages(join(dir, 'memory.bin'), ws, join(dir, 'workingset.pages'));
    assert.equal(n, 3 * 4096);
    const pages = await readFile(join(dir, 'workingset.pages'));
    assert.deepEqual([pages[0], pages[4096], pages[8192]], [10, 11, 2]);
    checkPagesSize(ws, pages.length, 'x');
    invalid(() => checkPagesSize(ws, pages.length - 1, 'x'), /bytes of pages/);
    await assert.rejects(
      writeWorkingSetPages(
        join(dir, 'memory.bin'),
        { pageSize: 4096, ranges: [{ firstPage: 15, pageCount: 2 }] },
        join(dir, 'w2'),
      ),
      (err: unknown) => isEmbersError(err, 'EMB_WORKING_SET_INVALID'),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the recorded fixture (test function, 256 MiB guest) parses as a working set of that memory', async () => {
  const path = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'test-function-256m.workingset.ranges');
  const ws = parseWorkingSetRanges(await readFile(path), path, { memoryBytes: 256 * 1024 * 1024 });
  assert.equal(ws.ranges.length, 103);
  assert.equal(totalPages(ws), 4937);
});

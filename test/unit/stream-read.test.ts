import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { everyChunk } from '../../src/util/stream-read.js';

/** A stream that received `chunks`, then broke (destroyed with `err`) before anyone read it. */
function brokenAfter(chunks: string[], err: Error): Readable {
  const r = new Readable({ read() {} });
  r.on('error', () => {});
  for (const c of chunks) r.push(Buffer.from(c));
  r.destroy(err);
  return r;
}

test('everyChunk: the bytes that arrived before a break are yielded, then the error is thrown', async () => {
  const got: string[] = [];
  const reset = Object.assign(new Error('other side closed'), { code: 'UND_ERR_SOCKET' });
  await assert.rejects(
    (async () => {
      for await (const c of everyChunk(brokenAfter(['ab', 'cd'], reset))) got.push(c.toString());
    })(),
    (e: unknown) => e === reset,
  );
  assert.equal(got.join(''), 'abcd');
  // the stream's own iterator drops them: the reason everyChunk exists
  const own: string[] = [];
  await assert.rejects(async () => {
    for await (const c of brokenAfter(['ab', 'cd'], reset)) own.push(String(c));
  });
  assert.deepEqual(own, []);
});

test('everyChunk: a stream that ends yields everything and returns; one destroyed without an error throws', async () => {
  const r = new Readable({ read() {} });
  setTimeout(() => {
    r.push(Buffer.from('x'));
    setTimeout(() => {
      r.push(Buffer.from('yz'));
      r.push(null);
    }, 5);
  }, 5);
  const parts: string[] = [];
  for await (const c of everyChunk(r)) parts.push(c.toString());
  assert.equal(parts.join(''), 'xyz');

  const closed = new Readable({ read() {} });
  closed.push(Buffer.from('q'));
  closed.destroy();
  const seen: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const c of everyChunk(closed)) seen.push(c.toString());
    })(),
    (e: unknown) => (e as NodeJS.ErrnoException).code === 'ECONNRESET',
  );
  assert.deepEqual(seen, ['q']);
});

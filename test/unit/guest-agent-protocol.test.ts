import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isEmbersError } from '../../src/errors.js';
import {
  decodeExit,
  decodeFixupOk,
  encodeExec,
  encodeFixup,
  encodeFrame,
  exitCodeOf,
  FrameDecoder,
  MAX_FRAME,
  MSG,
} from '../../src/guest/agent-protocol.js';

test('agent frames: u32 LE length of type+payload, then the type byte, then the payload', () => {
  const f = encodeFrame(MSG.HELLO_OK, Buffer.from('embers-agent 1'));
  assert.equal(f.readUInt32LE(0), 15);
  assert.equal(f[4], 0x81);
  assert.equal(f.subarray(5).toString(), 'embers-agent 1');
  assert.deepEqual([...encodeFrame(MSG.HELLO)], [1, 0, 0, 0, 1]);
});

test('agent frames: the decoder reassembles frames split at every byte boundary and several in one chunk', () => {
  const stream = Buffer.concat([
    encodeFrame(MSG.STDOUT, Buffer.from('abc')),
    encodeFrame(MSG.STDERR, Buffer.from('')),
    encodeFrame(MSG.EXIT, Buffer.from([1, 3, 0, 0, 0])),
  ]);
  for (let cut = 0; cut <= stream.length; cut++) {
    const d = new FrameDecoder();
    const frames = [...d.push(stream.subarray(0, cut)), ...d.push(stream.subarray(cut))];
    assert.deepEqual(
      frames.map((f) => [f.type, f.payload.toString('hex')]),
      [
        [0x83, Buffer.from('abc').toString('hex')],
        [0x84, ''],
        [0x85, '0103000000'],
      ],
      `cut at ${cut}`,
    );
    assert.equal(d.pending, 0);
  }
  const d = new FrameDecoder();
  for (const byte of stream) d.push(Buffer.from([byte]));
  assert.equal(d.pending, 0);
});

test('agent frames: a length of 0 or above the maximum is refused (the channel is out of step)', () => {
  for (const len of [0, MAX_FRAME + 1, 0xffffffff]) {
    const head = Buffer.alloc(5);
    head.writeUInt32LE(len, 0);
    assert.throws(
      () => new FrameDecoder().push(head),
      (e: unknown) => isEmbersError(e, 'EMB_GUEST_AGENT_FAILED') && /out of step/.test(e.message),
    );
  }
  assert.throws(
    () => encodeFrame(MSG.STDOUT, Buffer.alloc(MAX_FRAME)),
    (e: unknown) => isEmbersError(e),
  );
});

test('FIXUP request: realtime ns, entropy length and bytes, hook timeout, hook path', () => {
  const f = encodeFixup({
    realtimeNs: 1_764_633_600_123_456_789n,
    entropy: Buffer.from([9, 8, 7]),
    hook: { path: '/hook', timeoutMs: 2500 },
  });
  const [frame] = new FrameDecoder().push(f);
  assert.equal(frame.type, MSG.FIXUP);
  const p = frame.payload;
  assert.equal(p.readBigUInt64LE(0), 1_764_633_600_123_456_789n);
  assert.equal(p.readUInt32LE(8), 3);
  assert.deepEqual([...p.subarray(12, 15)], [9, 8, 7]);
  assert.equal(p.readUInt32LE(15), 2500);
  assert.equal(p.subarray(19).toString(), '/hook');
  const none = new FrameDecoder().push(encodeFixup({ realtimeNs: 1n, entropy: Buffer.alloc(0) }))[0].payload;
  assert.equal(none.length, 16, 'no hook: zero timeout and an empty path');
});

test('FIXUP answer: clock step (signed), flags, hook state, code and output', () => {
  const p = Buffer.alloc(17 + 5);
  p.writeBigInt64LE(-1_500_000_000n, 0);
  p.writeUInt32LE(3, 8);
  p[12] = 1;
  p.writeInt32LE(7, 13);
  p.write('oops\n', 17);
  assert.deepEqual(decodeFixupOk(p), {
    clockStepNs: -1_500_000_000n,
    entropyAdded: true,
    crngReseeded: true,
    hook: { state: 'exited', code: 7, output: 'oops\n' },
  });
  assert.throws(
    () => decodeFixupOk(Buffer.alloc(16)),
    (e: unknown) => isEmbersError(e, 'EMB_GUEST_AGENT_FAILED'),
  );
  p[12] = 9;
  assert.throws(
    () => decodeFixupOk(p),
    (e: unknown) => isEmbersError(e, 'EMB_GUEST_AGENT_FAILED') && /unknown run state 9/.test(e.message),
  );
});

test('EXEC request: timeout, flags, NUL-terminated argv; bad argv refused before anything is sent', () => {
  const p = new FrameDecoder().push(encodeExec({ argv: ['ls', '-l', ''], timeoutMs: 1234, kitRoot: true }))[0].payload;
  assert.equal(p.readUInt32LE(0), 1234);
  assert.equal(p.readUInt32LE(4), 2);
  assert.equal(p.subarray(8).toString('latin1'), 'ls\0-l\0\0');
  const sh = new FrameDecoder().push(encodeExec({ argv: ['echo hi; exit 3'], timeoutMs: 0, shell: true }))[0].payload;
  assert.equal(sh.readUInt32LE(4), 1);
  for (const bad of [
    { argv: [] },
    { argv: [''] },
    { argv: ['a\0b'] },
    { argv: ['a', 'b'], shell: true },
    { argv: Array(256).fill('x') },
  ]) {
    assert.throws(
      () => encodeExec({ timeoutMs: 0, ...bad }),
      (e: unknown) => isEmbersError(e, 'EMB_USAGE'),
      JSON.stringify(bad).slice(0, 60),
    );
  }
});

test('EXIT answer and the exit code a shell would report', () => {
  assert.deepEqual(decodeExit(Buffer.from([1, 3, 0, 0, 0])), { state: 'exited', code: 3 });
  assert.equal(exitCodeOf({ state: 'exited', code: 3 }), 3);
  assert.equal(exitCodeOf({ state: 'signaled', code: 9 }), 137);
  assert.equal(exitCodeOf({ state: 'timeout', code: 0 }), 124);
  assert.equal(exitCodeOf({ state: 'not-started', code: 2 }), 127);
  assert.throws(
    () => decodeExit(Buffer.from([1])),
    (e: unknown) => isEmbersError(e, 'EMB_GUEST_AGENT_FAILED'),
  );
});

/**
 * The guest agent's protocol, host side: frames and the messages they carry. The guest side is
 * src/guest/init/embers-agent.c; this file and its comment are the reference for both.
 *
 * Channel: a virtio-serial port named "org.embers.agent.0" (QEMU; the host end is a Unix
 * socket per VM, `agent.sock` in the VM's dir) or vsock port 5252 (Firecracker; the host
 * connects to the VM's vsock Unix socket and sends `CONNECT 5252\n`, Firecracker answers
 * `OK <port>\n`). Never the guest's network.
 *
 * Frame (both ways): u32 little-endian N (1..1 MiB), u8 type, N-1 bytes of payload. The host
 * sends one request and reads frames until its final answer; it may close between requests.
 * Integers are little-endian.
 *
 *   request                                      answers
 *   HELLO  0x01 (empty)                          HELLO_OK 0x81 "embers-agent <version>"
 *   FIXUP  0x02 u64 realtime ns, u32 n, n bytes  FIXUP_OK 0x82 i64 clock step ns, u32 flags
 *          of entropy, u32 hook timeout ms,               (1 entropy added, 2 CRNG reseeded),
 *          hook path (rest; empty: no hook)               u8 hook state, i32 hook code, the
 *                                                         tail of the hook's output (≤ 4 KiB)
 *   EXEC   0x03 u32 timeout ms (0: none), u32    STDOUT 0x83 / STDERR 0x84 bytes (any number),
 *          flags (1 shell: argv[0] is a script   then EXIT 0x85 u8 state, i32 code
 *          for the kit's busybox sh -c; 2 kit
 *          root), argv as NUL-terminated strings
 *   any                                          ERROR 0xFF text
 *
 * Run states: 0 none, 1 exited (code = exit status), 2 killed by a signal (code = signal),
 * 3 timed out (killed), 4 could not start (code = errno).
 */
import { EmbersError } from '../errors.js';

export const AGENT_PORT_NAME = 'org.embers.agent.0';
export const AGENT_VSOCK_PORT = 5252;
export const MAX_FRAME = 1024 * 1024;

export const MSG = {
  HELLO: 0x01,
  FIXUP: 0x02,
  EXEC: 0x03,
  HELLO_OK: 0x81,
  FIXUP_OK: 0x82,
  STDOUT: 0x83,
  STDERR: 0x84,
  EXIT: 0x85,
  ERROR: 0xff,
} as const;

export const EXEC_FLAGS = { shell: 1, kitRoot: 2 } as const;

export type RunState = 'none' | 'exited' | 'signaled' | 'timeout' | 'not-started';
const RUN_STATES: RunState[] = ['none', 'exited', 'signaled', 'timeout', 'not-started'];

export interface Frame {
  type: number;
  payload: Buffer;
}

export function encodeFrame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (payload.length + 1 > MAX_FRAME)
    throw EmbersError.of('EMB_CONFIG_INVALID', {
      option: 'an agent message',
      problem: `of ${payload.length} bytes is larger than ${MAX_FRAME - 1}`,
    });
  const head = Buffer.alloc(5);
  head.writeUInt32LE(payload.length + 1, 0);
  head[4] = type;
  return Buffer.concat([head, payload]);
}

/** Splits a byte stream into frames; throws EMB_GUEST_AGENT_FAILED on a length out of range. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const frames: Frame[] = [];
    for (;;) {
      if (this.buf.length < 4) break;
      const len = this.buf.readUInt32LE(0);
      if (len < 1 || len > MAX_FRAME) {
        throw EmbersError.of('EMB_GUEST_AGENT_FAILED', {
          problem: 'frame-length',
          length: len,
          expected: `1..${MAX_FRAME}`,
        });
      }
      if (this.buf.length < 4 + len) break;
      frames.push({ type: this.buf[4], payload: Buffer.from(this.buf.subarray(5, 4 + len)) });
      this.buf = this.buf.subarray(4 + len);
    }
    return frames;
  }

  /** Bytes received that do not yet make a frame. */
  get pending(): number {
    return this.buf.length;
  }
}

export interface FixupRequest {
  /** The host's CLOCK_REALTIME, in ns since the epoch. */
  realtimeNs: bigint;
  /** Bytes for the kernel RNG (RNDADDENTROPY). */
  entropy: Buffer;
  hook?: { path: string; timeoutMs: number };
}

export function encodeFixup(r: FixupRequest): Buffer {
  const hook = Buffer.from(r.hook?.path ?? '');
  const p = Buffer.alloc(8 + 4 + r.entropy.length + 4 + hook.length);
  p.writeBigUInt64LE(r.realtimeNs, 0);
  p.writeUInt32LE(r.entropy.length, 8);
  r.entropy.copy(p, 12);
  p.writeUInt32LE(r.hook ? r.hook.timeoutMs : 0, 12 + r.entropy.length);
  hook.copy(p, 16 + r.entropy.length);
  return encodeFrame(MSG.FIXUP, p);
}

export interface FixupResult {
  /** How far the guest's clock was moved, in ns (positive: it was behind). */
  clockStepNs: bigint;
  entropyAdded: boolean;
  crngReseeded: boolean;
  hook: { state: RunState; code: number; output: string };
}

export function decodeFixupOk(p: Buffer): FixupResult {
  if (p.length < 17)
    throw EmbersError.of('EMB_GUEST_AGENT_FAILED', {
      problem: 'short-answer',
      what: 'FIXUP',
      length: p.length,
      expected: 'at least 17',
    });
  const flags = p.readUInt32LE(8);
  return {
    clockStepNs: p.readBigInt64LE(0),
    entropyAdded: (flags & 1) !== 0,
    crngReseeded: (flags & 2) !== 0,
    hook: { state: runState(p[12]), code: p.readInt32LE(13), output: p.subarray(17).toString('utf8') },
  };
}

export interface ExecRequest {
  argv: string[];
  /** 0: no timeout. */
  timeoutMs: number;
  shell?: boolean;
  kitRoot?: boolean;
}

export function encodeExec(r: ExecRequest): Buffer {
  if (r.argv.length === 0 || r.argv[0] === '')
    throw EmbersError.of('EMB_USAGE', { option: 'exec', problem: 'needs a command' });
  if (r.argv.length > 255)
    throw EmbersError.of('EMB_USAGE', {
      option: 'the number of exec arguments',
      value: r.argv.length,
      expected: 'at most 255',
    });
  for (const a of r.argv)
    if (a.includes('\0'))
      throw EmbersError.of('EMB_USAGE', { option: 'an exec argument', problem: 'contains a NUL byte' });
  if (r.shell && r.argv.length !== 1)
    throw EmbersError.of('EMB_USAGE', {
      option: '--shell',
      problem: 'takes the command as one argument (a sh -c script)',
    });
  const head = Buffer.alloc(8);
  head.writeUInt32LE(Math.max(0, Math.min(0xffffffff, Math.round(r.timeoutMs))), 0);
  head.writeUInt32LE((r.shell ? EXEC_FLAGS.shell : 0) | (r.kitRoot ? EXEC_FLAGS.kitRoot : 0), 4);
  return encodeFrame(MSG.EXEC, Buffer.concat([head, ...r.argv.map((a) => Buffer.from(`${a}\0`))]));
}

export interface ExitStatus {
  state: RunState;
  code: number;
}

export function decodeExit(p: Buffer): ExitStatus {
  if (p.length < 5)
    throw EmbersError.of('EMB_GUEST_AGENT_FAILED', {
      problem: 'short-answer',
      what: 'EXIT',
      length: p.length,
      expected: '5',
    });
  return { state: runState(p[0]), code: p.readInt32LE(1) };
}

function runState(n: number): RunState {
  const s = RUN_STATES[n];
  if (!s) throw EmbersError.of('EMB_GUEST_AGENT_FAILED', { problem: 'run-state', state: n });
  return s;
}

/** The process exit code a run state stands for, as a shell reports it (timeout(1): 124). */
export function exitCodeOf(s: ExitStatus): number {
  if (s.state === 'exited') return s.code;
  if (s.state === 'signaled') return 128 + s.code;
  if (s.state === 'timeout') return 124;
  return 127;
}

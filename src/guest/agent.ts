/**
 * The host's client of the guest agent (protocol: agent-protocol.ts). One connection per
 * request: connect to the VM's agent socket, send the request, read frames to the final
 * answer, close. The VMM serialises connections (QEMU accepts one chardev client at a time).
 *
 * A virtio-serial port is one stream for all connections, and the guest hears of a departed
 * host only after a grace (embers-channel.h, HOST_GRACE_MS): frames that a connection gave up
 * waiting for can arrive on the next one. So a virtio-serial connection opens with a HELLO,
 * and what comes before its answer is dropped. (A vsock connection is a stream of its own.)
 */
import type { Socket } from 'node:net';
import { EmbersError } from '../errors.js';
import { connectWithTimeout } from '../util/socket.js';
import {
  AGENT_VSOCK_PORT,
  decodeExit,
  decodeFixupOk,
  encodeExec,
  encodeFixup,
  encodeFrame,
  FrameDecoder,
  MSG,
  type ExecRequest,
  type ExitStatus,
  type FixupRequest,
  type FixupResult,
  type Frame,
} from './agent-protocol.js';

/** Where a VM's agent is reached from the host. */
export type AgentChannel = { kind: 'virtio-serial'; socket: string } | { kind: 'vsock'; socket: string; port?: number };

/** A connection to the agent: frames in, frames out. */
class AgentConnection {
  private readonly decoder = new FrameDecoder();
  private readonly queue: Frame[] = [];
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;
  private closed = false;

  private constructor(
    private readonly sock: Socket,
    private readonly channel: AgentChannel,
  ) {
    sock.on('data', (chunk: Buffer) => {
      try {
        this.queue.push(...this.decoder.push(chunk));
      } catch (err) {
        this.failure = err as Error;
        sock.destroy();
      }
      this.wake();
    });
    sock.on('error', (err) => {
      this.failure ??= err;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** The agent's banner ("embers-agent 1"), from the HELLO that opens a virtio-serial connection. */
  banner: string | undefined;

  static async open(channel: AgentChannel, timeoutMs: number): Promise<AgentConnection> {
    const sock = await connectWithTimeout(channel.socket, timeoutMs, {
      timeout: () => unreachable(channel, `no connection in ${timeoutMs} ms`),
      refused: (err) => unreachable(channel, err.message, err),
    });
    if (channel.kind === 'vsock') await vsockHandshake(sock, channel, timeoutMs);
    const c = new AgentConnection(sock, channel);
    if (channel.kind === 'virtio-serial') {
      try {
        c.banner = await c.hello(performance.now() + timeoutMs, { dropEarlier: true });
      } catch (err) {
        c.close();
        throw err;
      }
    }
    return c;
  }

  /** HELLO, answered with the agent's banner. `dropEarlier`: frames before the answer are dropped (see the file comment). */
  async hello(deadline: number, opts: { dropEarlier: boolean }): Promise<string> {
    this.send(encodeFrame(MSG.HELLO));
    for (;;) {
      const f = await this.next(deadline, 'HELLO');
      if (f.type === MSG.HELLO_OK) return f.payload.toString('utf8');
      if (opts.dropEarlier) continue;
      throw f.type === MSG.ERROR ? agentRefused(f, 'HELLO') : unexpected(f, 'HELLO');
    }
  }

  send(frame: Buffer): void {
    this.sock.write(frame);
  }

  /** The next frame, or an error if none comes before `deadline` (performance.now() ms; Infinity: none). */
  async next(deadline: number, what: string): Promise<Frame> {
    for (;;) {
      const f = this.queue.shift();
      if (f) return f;
      if (this.failure) throw asAgentError(this.failure, this.channel, what);
      if (this.closed) throw unreachable(this.channel, `the channel closed while waiting for ${what}`);
      const left = deadline - performance.now();
      if (left <= 0) throw unreachable(this.channel, `no answer to ${what} in time`);
      await new Promise<void>((resolve) => {
        const timer = Number.isFinite(left) ? setTimeout(resolve, left) : undefined;
        this.waiter = () => {
          if (timer) clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

function unreachable(channel: AgentChannel, why: string, cause?: unknown): EmbersError {
  return EmbersError.of(
    'EMB_GUEST_AGENT_UNREACHABLE',
    { socket: channel.socket, channel: channel.kind, reason: why },
    cause === undefined ? undefined : { cause },
  );
}

function asAgentError(err: Error, channel: AgentChannel, what: string): EmbersError {
  if (err instanceof EmbersError) return err;
  return unreachable(channel, `${what}: ${err.message}`, err);
}

function agentRefused(f: Frame, what: string): EmbersError {
  return EmbersError.of('EMB_GUEST_AGENT_FAILED', { problem: 'refused', what, reason: f.payload.toString('utf8') });
}

function unexpected(f: Frame, what: string): EmbersError {
  return EmbersError.of('EMB_GUEST_AGENT_FAILED', { problem: 'unexpected-type', what, type: f.type });
}

/** Firecracker's host-initiated vsock connection: "CONNECT <port>\n" → "OK <host port>\n". */
async function vsockHandshake(
  sock: Socket,
  channel: AgentChannel & { kind: 'vsock' },
  timeoutMs: number,
): Promise<void> {
  sock.write(`CONNECT ${channel.port ?? AGENT_VSOCK_PORT}\n`);
  await new Promise<void>((resolve, reject) => {
    let got = '';
    const timer = setTimeout(() => fail(`no answer to CONNECT in ${timeoutMs} ms`), timeoutMs);
    const fail = (why: string) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.destroy();
      reject(unreachable(channel, why));
    };
    const onData = (chunk: Buffer) => {
      const nl = chunk.indexOf(0x0a);
      got += chunk.subarray(0, nl < 0 ? chunk.length : nl).toString('latin1');
      if (nl < 0) return;
      clearTimeout(timer);
      sock.off('data', onData);
      if (!got.startsWith('OK ')) return fail(`the vsock device answered "${got}" to CONNECT`);
      // anything after the line is the first agent bytes: give it back to the stream
      if (nl + 1 < chunk.length) sock.unshift(chunk.subarray(nl + 1));
      resolve();
    };
    sock.on('data', onData);
    sock.once('close', () => fail('the vsock device closed the connection (is the agent listening?)'));
  });
  sock.removeAllListeners('close');
}

async function withConnection<T>(
  channel: AgentChannel,
  timeoutMs: number,
  fn: (c: AgentConnection) => Promise<T>,
): Promise<T> {
  const c = await AgentConnection.open(channel, timeoutMs);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Asks the agent who it is: "embers-agent 1". */
export function agentHello(channel: AgentChannel, timeoutMs = 5000): Promise<string> {
  return withConnection(
    channel,
    timeoutMs,
    async (c) => c.banner ?? (await c.hello(performance.now() + timeoutMs, { dropEarlier: false })),
  );
}

/**
 * The restore fix-ups: sets the guest's clock, feeds its RNG, runs the restore hook (if any).
 * `timeoutMs` bounds the agent's answer on top of the hook's own timeout.
 */
export function agentFixup(
  channel: AgentChannel,
  req: Omit<FixupRequest, 'realtimeNs'>,
  timeoutMs = 10_000,
): Promise<FixupResult> {
  return withConnection(channel, timeoutMs, async (c) => {
    // the clock is read as late as possible: just before the request is written
    const realtimeNs = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
    c.send(encodeFixup({ ...req, realtimeNs }));
    const f = await c.next(performance.now() + timeoutMs + (req.hook?.timeoutMs ?? 0), 'FIXUP');
    if (f.type === MSG.ERROR) throw agentRefused(f, 'the restore fix-ups');
    if (f.type !== MSG.FIXUP_OK) throw unexpected(f, 'FIXUP');
    return decodeFixupOk(f.payload);
  });
}

export interface ExecOptions extends ExecRequest {
  onStdout?: (b: Buffer) => void;
  onStderr?: (b: Buffer) => void;
  /** How long to wait for the connection. @default 5000 */
  connectTimeoutMs?: number;
}

/**
 * Runs a command in the guest, streaming its output. The agent enforces `timeoutMs` (killing
 * the command's process group); the host waits 10 s more before it gives up on the agent.
 */
export async function agentExec(channel: AgentChannel, o: ExecOptions): Promise<ExitStatus> {
  const frame = encodeExec(o);
  return withConnection(channel, o.connectTimeoutMs ?? 5000, async (c) => {
    c.send(frame);
    const deadline = o.timeoutMs > 0 ? performance.now() + o.timeoutMs + 10_000 : Infinity;
    for (;;) {
      const f = await c.next(deadline, 'EXEC');
      if (f.type === MSG.STDOUT) o.onStdout?.(f.payload);
      else if (f.type === MSG.STDERR) o.onStderr?.(f.payload);
      else if (f.type === MSG.EXIT) return decodeExit(f.payload);
      else if (f.type === MSG.ERROR) throw agentRefused(f, 'the command');
      else throw unexpected(f, 'EXEC');
    }
  });
}

import type { Socket } from 'node:net';
import { EmbersError } from '../../errors.js';
import { connectWithTimeout } from '../../util/socket.js';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  command: string;
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
}

/**
 * A QMP client over QEMU's Unix socket: greeting, capabilities negotiation, commands with
 * ids, events. One connection per operation; QEMU serves one QMP client at a time.
 */
export class QmpClient {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly eventWaiters: { name: string; resolve: (e: QmpEvent) => void }[] = [];
  private readonly events: QmpEvent[] = [];
  private closedError: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly path: string,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new Error('QMP connection closed')));
  }

  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const socket = await connectWithTimeout(path, timeoutMs, {
      timeout: () => EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'qmp-connect', path, timeoutMs }),
      refused: (err) =>
        EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'qmp-connect', path, reason: err.message }, { cause: err }),
    });
    const client = new QmpClient(socket, path);
    await client.waitEvent('__greeting__', timeoutMs);
    await client.execute('qmp_capabilities');
    return client;
  }

  /** Sends a command and resolves with its `return` value; a QMP error becomes EMB_VMM_COMMAND_FAILED. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closedError) return Promise.reject(this.wrap(command, this.closedError));
    const id = `e${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'qmp-command', command, timeoutMs, socket: this.path }));
      }, timeoutMs);
      this.pending.set(id, {
        command,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.socket.write(
        `${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`,
      );
    });
  }

  /** Resolves with the next event named `name` (or one already received since connecting). */
  waitEvent(name: string, timeoutMs = 30_000): Promise<QmpEvent> {
    const seen = this.events.findIndex((e) => e.event === name);
    if (seen >= 0) return Promise.resolve(this.events.splice(seen, 1)[0]);
    if (this.closedError) return Promise.reject(this.wrap(`wait for ${name}`, this.closedError));
    return new Promise((resolve, reject) => {
      const waiter = {
        name,
        resolve: (e: QmpEvent) => {
          clearTimeout(timer);
          resolve(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.eventWaiters.indexOf(waiter);
        if (i >= 0) this.eventWaiters.splice(i, 1);
        reject(EmbersError.of('EMB_VMM_TIMEOUT', { problem: 'qmp-event', event: name, timeoutMs, socket: this.path }));
      }, timeoutMs);
      this.eventWaiters.push(waiter);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) this.dispatchEvent({ event: '__greeting__', data: msg.QMP as Record<string, unknown> });
      else if ('event' in msg)
        this.dispatchEvent({ event: String(msg.event), data: msg.data as Record<string, unknown> | undefined });
      else if (typeof msg.id === 'string') {
        const p = this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id);
        if ('error' in msg) {
          const e = msg.error as { class?: string; desc?: string };
          p.reject(
            EmbersError.of('EMB_VMM_COMMAND_FAILED', { problem: 'qmp-refused', command: p.command, qmpError: e }),
          );
        } else p.resolve(msg.return);
      }
    }
  }

  private dispatchEvent(e: QmpEvent): void {
    const i = this.eventWaiters.findIndex((w) => w.name === e.event);
    if (i >= 0) this.eventWaiters.splice(i, 1)[0].resolve(e);
    else this.events.push(e);
  }

  private fail(err: Error): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(this.wrap(p.command, err));
    }
  }

  private wrap(what: string, err: Error): EmbersError {
    return EmbersError.of(
      'EMB_VMM_COMMAND_FAILED',
      { problem: 'qmp-broken', command: what, reason: err.message, socket: this.path },
      { cause: err },
    );
  }
}

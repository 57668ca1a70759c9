/**
 * Pre-opened connections to warm instances. A function's server may close every connection
 * after one answer (busybox httpd does), so each proxied request would pay a TCP handshake
 * with the guest on top of the hop through the daemon. Instead, while an instance is warm,
 * the node keeps one connection to it already open (as Envoy's `preconnect` does): a request
 * takes it, and the next one is opened at once, off the request path.
 *
 * A spare is never kept across a snapshot (the lifecycle drops it first: a snapshot must not
 * capture a half-used connection that every clone would inherit), is closed after `maxIdleMs`
 * unused (it holds a worker of the function's server), and is discarded if the function
 * closes it.
 */
import { connect, type Socket } from 'node:net';

interface Spare {
  socket: Socket;
  timer: NodeJS.Timeout;
}

export interface Upstream {
  host: string;
  port: number;
}

export class SpareConnections {
  private readonly spares = new Map<string, Spare>();
  private readonly wanted = new Map<string, Upstream>();

  /** @param maxIdleMs how long an unused spare stays open (well below servers' header timeouts, 60 s for most) */
  constructor(private readonly maxIdleMs = 10_000) {}

  /** Keeps a connection to `instance` open from now on (until `drop`). */
  prime(instance: string, to: Upstream): void {
    this.wanted.set(instance, to);
    if (!this.spares.has(instance)) this.open(instance, to);
  }

  /**
   * A connection to the instance: the spare if one is open (and `true`), else a new one. Either
   * way the next spare is opened, if the instance is still primed.
   */
  take(instance: string, to: Upstream): { socket: Socket; preopened: boolean } {
    const spare = this.spares.get(instance);
    this.spares.delete(instance);
    let socket: Socket;
    if (spare && !spare.socket.destroyed) {
      clearTimeout(spare.timer);
      spare.socket.removeAllListeners('end');
      spare.socket.removeAllListeners('close');
      socket = spare.socket;
    } else {
      socket = dial(to);
    }
    const again = this.wanted.get(instance);
    if (again) this.open(instance, again);
    return { socket, preopened: socket === spare?.socket };
  }

  /** Stops keeping a connection to the instance and closes the spare (before a snapshot, on stop). */
  drop(instance: string): void {
    this.wanted.delete(instance);
    const spare = this.spares.get(instance);
    this.spares.delete(instance);
    if (spare) this.close(spare);
  }

  /** Spares open now (for tests and metrics). */
  get size(): number {
    return this.spares.size;
  }

  closeAll(): void {
    for (const name of [...this.wanted.keys(), ...this.spares.keys()]) this.drop(name);
  }

  private open(instance: string, to: Upstream): void {
    const socket = dial(to);
    const spare: Spare = {
      socket,
      // unused for too long: close it; the next request dials, and primes again
      timer: setTimeout(() => {
        if (this.spares.get(instance) !== spare) return;
        this.spares.delete(instance);
        this.close(spare);
      }, this.maxIdleMs).unref(),
    };
    const lost = () => {
      if (this.spares.get(instance) === spare) this.spares.delete(instance);
      this.close(spare);
    };
    // the function closed it (or the connect failed): it is no spare any more
    socket.once('end', lost);
    socket.once('close', lost);
    this.spares.set(instance, spare);
  }

  private close(spare: Spare): void {
    clearTimeout(spare.timer);
    spare.socket.destroy();
  }
}

function dial(to: Upstream): Socket {
  const socket = connect({ host: to.host, port: to.port, noDelay: true });
  // errors surface to whoever uses the socket; an unused spare that fails is just closed
  socket.on('error', () => undefined);
  return socket;
}

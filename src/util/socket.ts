import { connect, type Socket } from 'node:net';

/** How a failed connection is reported: the caller's own errors, for a timeout and for a refusal. */
export interface ConnectFailures {
  /** The error when no connection was made in time (the socket is destroyed first). */
  timeout(): Error;
  /** The error when the connection failed (`err` is the socket's own error). */
  refused(err: Error): Error;
}

/** Connects to the socket at `path` (a unix socket path), giving up after `timeoutMs`. */
export function connectWithTimeout(path: string, timeoutMs: number, failures: ConnectFailures): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = connect(path);
    const timer = setTimeout(() => {
      s.destroy();
      reject(failures.timeout());
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(failures.refused(err));
    });
  });
}

/**
 * Reading a body stream to its last byte, also when the connection broke.
 *
 * A Readable's own async iterator stops yielding as soon as the stream is destroyed, so
 * bytes that had arrived but were not read yet are dropped when an HTTP client (undici)
 * destroys a body whose connection closed early. For a download that resumes with a Range
 * request, those are bytes fetched twice; for a test that cuts a connection, a count that
 * depends on timing. This iterator yields everything buffered, then throws the stream's error.
 */
import type { Readable } from 'node:stream';

/** Yields every chunk the stream received, in order; ends at its end, throws its error after the last buffered chunk. */
export async function* everyChunk(stream: Readable): AsyncGenerator<Buffer> {
  for (;;) {
    const chunk = stream.read() as Buffer | null;
    if (chunk !== null) {
      yield chunk;
      continue;
    }
    if (stream.readableEnded) return;
    if (stream.errored) throw stream.errored;
    if (stream.destroyed) throw Object.assign(new Error('the stream closed before its end'), { code: 'ECONNRESET' });
    await new Promise<void>((resolve) => {
      const wake = (): void => {
        for (const event of EVENTS) stream.off(event, wake);
        resolve();
      };
      for (const event of EVENTS) stream.on(event, wake);
    });
  }
}

const EVENTS = ['readable', 'end', 'error', 'close'] as const;

import type { TransferProgress } from '../snapshot/transfer-progress.js';
import { mib } from '../util/format.js';

/**
 * A transfer progress display on stderr: one line, rewritten in place on a terminal, a
 * line per 10% otherwise (logs stay readable).
 */
export function transferProgress(
  write: (line: string) => void = (l) => process.stderr.write(l),
): (e: TransferProgress) => void {
  const tty = process.stderr.isTTY;
  let lastDecile = -1;
  let lastDraw = 0;
  return (e) => {
    const pct = e.bytesTotal > 0 ? Math.floor((e.bytesDone / e.bytesTotal) * 100) : 100;
    const text = `${e.direction} ${e.id}: ${mib(e.bytesDone)}/${mib(e.bytesTotal)} (${pct}%) ${e.file}`;
    if (tty) {
      const now = Date.now();
      if (now - lastDraw < 100 && pct < 100) return;
      lastDraw = now;
      write(`\r\x1b[2K${text}${pct >= 100 ? '\n' : ''}`);
    } else if (Math.floor(pct / 10) !== lastDecile) {
      lastDecile = Math.floor(pct / 10);
      write(`${text}\n`);
    }
  };
}

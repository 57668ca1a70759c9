import { EmbersError, asEmbersError } from '../errors.js';

/** Where a command reports: human lines, or one JSON object as the last line with --json. */
export class Output {
  constructor(readonly json: boolean) {}

  /** Progress and human-readable lines go to stderr, so stdout carries only results. */
  progress(msg: string): void {
    process.stderr.write(`${msg}\n`);
  }

  /** A result: printed as text, or collected as the final JSON object. */
  result(human: string, data: unknown): void {
    if (this.json) process.stdout.write(`${JSON.stringify(data)}\n`);
    else if (human) process.stdout.write(`${human}\n`);
  }

  fail(err: unknown): number {
    const e: EmbersError = asEmbersError(err);
    if (this.json) {
      process.stdout.write(`${JSON.stringify({ error: e.toJSON() })}\n`);
    } else {
      process.stderr.write(`error ${e.code}: ${e.message}\nhint: ${e.hint}\n`);
      if (e.code === 'EMB_INTERNAL' && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    }
    return e.exitCode;
  }
}

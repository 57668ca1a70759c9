/** Milliseconds rounded to a tenth, as every timing embers reports. */
export function roundMs(ms: number): number {
  return Math.round(ms * 10) / 10;
}

/** Bytes as "12.3 MiB". */
export function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** Timings of the phases of one operation: `mark(phase, since)` records the ms from `since` to now. */
export function phaseTimer(): { phases: Record<string, number>; mark: (phase: string, since: number) => number } {
  const phases: Record<string, number> = {};
  return { phases, mark: (phase, since) => (phases[phase] = roundMs(performance.now() - since)) };
}

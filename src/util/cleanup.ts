/**
 * An owner for the resources a multi-step operation creates. Each step registers how to
 * release what it made; on failure `release()` undoes them in reverse order, and the error
 * lists every release step that itself failed (a leak, named, not hidden).
 */
class Cleanup {
  private readonly steps: { label: string; fn: () => Promise<void> | void }[] = [];

  /** Registers a release step; steps run last-in, first-out. */
  add(label: string, fn: () => Promise<void> | void): void {
    this.steps.push({ label, fn });
  }

  /** Forgets every step: the resources now belong to someone else. */
  disarm(): void {
    this.steps.length = 0;
  }

  /** Runs every step, newest first, even if some fail; returns the failures. */
  async release(): Promise<{ label: string; error: unknown }[]> {
    const failures: { label: string; error: unknown }[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop()!;
      try {
        await step.fn();
      } catch (error) {
        failures.push({ label: step.label, error });
      }
    }
    return failures;
  }
}

/** Runs `body` with a Cleanup that is released if `body` throws, and disarmed if it returns. */
export async function withCleanup<T>(body: (cleanup: Cleanup) => Promise<T>): Promise<T> {
  const cleanup = new Cleanup();
  try {
    const result = await body(cleanup);
    cleanup.disarm();
    return result;
  } catch (err) {
    const failures = await cleanup.release();
    if (failures.length > 0 && err instanceof Error) {
      (err as Error & { cleanupFailures?: unknown }).cleanupFailures = failures.map((f) => ({
        step: f.label,
        error: f.error instanceof Error ? f.error.message : String(f.error),
      }));
    }
    throw err;
  }
}

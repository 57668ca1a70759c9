/** A bounded pool of async workers over a list of items. */

/**
 * Runs `worker` over `items`, at most `concurrency` at once. The first failure aborts the
 * others (through the signal they get) and is thrown once every worker has stopped, so nothing
 * is still writing when this returns.
 */
export async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  worker: (item: T, signal: AbortSignal) => Promise<void>,
  outer?: AbortSignal,
): Promise<void> {
  const ac = new AbortController();
  const onOuterAbort = () => ac.abort(outer!.reason);
  if (outer?.aborted) ac.abort(outer.reason);
  else outer?.addEventListener('abort', onOuterAbort, { once: true });
  let next = 0;
  let failed = false;
  let firstError: unknown;
  const lane = async () => {
    while (!ac.signal.aborted && next < items.length) {
      const item = items[next++];
      try {
        await worker(item, ac.signal);
      } catch (err) {
        if (!failed) {
          failed = true;
          firstError = err;
          ac.abort(err);
        }
        return;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, lane));
  } finally {
    outer?.removeEventListener('abort', onOuterAbort);
  }
  if (failed) throw firstError;
  outer?.throwIfAborted();
}

/** The lifecycle's background work (starts, snapshots, stops, lookups): tracked so that shutdown can wait for all of it. */
export class BackgroundTasks {
  private readonly running = new Set<Promise<unknown>>();

  track(p: Promise<unknown>): void {
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
  }

  /** Waits until nothing runs, including work started by work that ended meanwhile. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }
}

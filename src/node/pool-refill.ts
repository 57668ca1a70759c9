import type { SlotPool } from '../net/pool.js';

/**
 * Tops a slot pool up in the background, off the start path (after a boot or restore took
 * slots from it). One refill runs at a time; a request during one runs another after it.
 */
export class PoolRefill {
  private refilling: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly pool: SlotPool,
    private readonly onError: (msg: string) => void = () => undefined,
  ) {}

  schedule(): void {
    if (this.refilling) {
      this.again = true;
      return;
    }
    this.refilling = (async () => {
      do {
        this.again = false;
        await this.pool.fill().catch((err: Error) => this.onError(`network pool refill failed: ${err.message}`));
      } while (this.again);
    })().finally(() => (this.refilling = undefined));
  }

  /** Waits until no refill runs. */
  async settle(): Promise<void> {
    while (this.refilling) await this.refilling;
  }
}

/**
 * The large responses of one HTTP server still being delivered.
 *
 * @module
 */

const ignore = (): void => {};

/**
 * The deliveries (each a response's `completed`) a server's shutdown waits
 * for before it cuts what is left: `Deno.serve`'s shutdown ends an HTTP/2
 * stream whose body is not all sent, the rest lost. One per server; only
 * large answers are added (the others are not tracked at all).
 *
 * @example
 * ```ts
 * import { PendingDeliveries } from "./_pending_deliveries.ts";
 * const deliveries = new PendingDeliveries();
 * const { promise, resolve } = Promise.withResolvers<void>();
 * deliveries.add(promise);
 * console.log(deliveries.size); // 1
 * resolve();
 * await deliveries.settled(1000);
 * console.log(deliveries.size); // 0
 * ```
 */
export class PendingDeliveries {
  readonly #pending = new Set<Promise<void>>();

  /** How many deliveries are still pending. */
  get size(): number {
    return this.#pending.size;
  }

  /** Adds a delivery; it leaves the set once settled (either way). */
  add(completed: Promise<void>): void {
    const done = completed.then(ignore, ignore);
    this.#pending.add(done);
    void done.then(() => this.#pending.delete(done));
  }

  /**
   * Resolves once no delivery is pending (those added meanwhile included),
   * or after `timeout` ms (`Infinity`: no bound), whichever comes first.
   */
  async settled(timeout: number): Promise<void> {
    if (this.#pending.size === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let over = false;
    const bound = timeout === Infinity || timeout > 2 ** 31 - 1
      ? undefined
      : new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          over = true;
          resolve();
        }, Math.max(timeout, 0));
      });
    try {
      while (this.#pending.size > 0 && !over) {
        const all = Promise.all(this.#pending);
        await (bound === undefined ? all : Promise.race([all, bound]));
        // The removal is queued behind each settlement: let it run.
        await Promise.resolve();
      }
    } finally {
      clearTimeout(timer);
    }
  }
}

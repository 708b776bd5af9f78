/**
 * The reconnect policy's record of recent crashes per worker slot, kept
 * bounded: a slot gone for good (removed by a resize or autoscale) is
 * forgotten, so a pool resized for months does not keep one entry per slot
 * id it ever had (ids are never reused). Private to the bundled plugins.
 *
 * @module
 */

/**
 * Crash times per slot id within a window.
 *
 * @example
 * ```ts
 * import { CrashHistory } from "./_crash_history.ts";
 * const history = new CrashHistory(60_000);
 * console.log(history.record("w1", 1_000)); // 1
 * console.log(history.record("w1", 2_000)); // 2
 * history.prune(new Set(["w2"]), 2_000); // w1 is gone
 * console.log(history.size); // 0
 * ```
 */
export class CrashHistory {
  #crashes = new Map<string, number[]>();
  #window: number;

  /** `window`: how long a crash counts, in ms. */
  constructor(window: number) {
    this.#window = window;
  }

  /** Slots with a crash on record (for tests). */
  get size(): number {
    return this.#crashes.size;
  }

  /** Records a crash of `id` at `now`; returns its crashes within the window. */
  record(id: string, now: number): number {
    const recent = (this.#crashes.get(id) ?? []).filter((t) =>
      now - t < this.#window
    );
    recent.push(now);
    this.#crashes.set(id, recent);
    return recent.length;
  }

  /** Forgets the crashes of `id` (revived after failing, or removed). */
  forget(id: string): void {
    this.#crashes.delete(id);
  }

  /**
   * Forgets every slot not in `live` (gone for good), and those whose
   * crashes all left the window by `now`.
   */
  prune(live: ReadonlySet<string>, now: number): void {
    for (const [id, times] of this.#crashes) {
      if (!live.has(id) || times.every((t) => now - t >= this.#window)) {
        this.#crashes.delete(id);
      }
    }
  }

  /** Forgets everything (the pool closed). */
  clear(): void {
    this.#crashes.clear();
  }
}

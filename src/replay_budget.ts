/**
 * A bound on the output that many replay buffers keep together: a pool's
 * running evals share one (`evalReplayBudget`).
 *
 * @module
 */

/**
 * What a {@linkcode ReplayBudget} asks of a buffer it bounds
 * (`OutputBuffer` implements it).
 *
 * @example
 * ```ts
 * import type { ReplayBudgetMember } from "@pyproxy/pyproxy";
 * const member: ReplayBudgetMember = { shrink: (limit) => console.log("down to", limit) };
 * member.shrink(0);
 * ```
 */
export interface ReplayBudgetMember {
  /**
   * Drops the buffer's oldest output until it holds at most `limit` code
   * units, as far as it may (it keeps its newest chunk, and what an attached
   * reader has not taken yet), reporting each drop to its share.
   */
  shrink(limit: number): void;
}

/**
 * One buffer's part of a {@linkcode ReplayBudget}, from
 * {@linkcode ReplayBudget.join}: the buffer reports every change of what it
 * holds, and leaves once it no longer counts.
 *
 * @example
 * ```ts
 * import { ReplayBudget } from "@pyproxy/pyproxy";
 * const budget = new ReplayBudget({ maxBytes: 100 });
 * const share = budget.join({ shrink: () => {} });
 * share.add(10);
 * console.log(share.bytes, budget.bytes); // 10 10
 * share.leave();
 * console.log(budget.bytes); // 0
 * ```
 */
export interface ReplayBudgetShare {
  /** What the buffer holds, as it reported it. */
  readonly bytes: number;
  /**
   * Counts `units` more (or, negative, fewer) held by the buffer. When that
   * is not a drop and the total is past the budget, the buffers holding the
   * most are asked to shrink (this one included) before it returns: `add(0)`
   * asks again once a buffer may drop what it held back.
   */
  add(units: number): void;
  /** The buffer no longer counts (it ended, or was released). Idempotent. */
  leave(): void;
}

/**
 * Options of {@linkcode ReplayBudget}.
 *
 * @example
 * ```ts
 * import type { ReplayBudgetOptions } from "@pyproxy/pyproxy";
 * const options: ReplayBudgetOptions = { maxBytes: 32 * 1024 * 1024 };
 * console.log(options.maxBytes);
 * ```
 */
export interface ReplayBudgetOptions {
  /**
   * The most output its buffers keep together, in UTF-16 code units (as
   * `OutputBuffer`'s `maxBytes`): a number >= 0, `Infinity` for no bound.
   *
   * @default {67108864}
   */
  maxBytes?: number;
}

interface Share extends ReplayBudgetShare {
  member: ReplayBudgetMember | undefined;
  units: number;
  /** Its place in the budget's list (-1: left). */
  index: number;
  /**
   * It could drop nothing when last asked (it holds only its newest chunk,
   * or what an attached reader has not taken): not asked again until it
   * reports a chunk or a reader leaving (`add(units >= 0)`).
   */
  blocked: boolean;
}

/**
 * Bounds the output a set of replay buffers keep together. Past the bound,
 * output is dropped from the buffers that hold the most, oldest first, down
 * towards the level of the next largest: a buffer holding less than its fair
 * share loses nothing, and one that prints a lot cannot push out everyone
 * else's replay. Each buffer still keeps its newest chunk and whatever an
 * attached reader has not taken yet, so the total can exceed the bound by
 * those. No cost per chunk below the bound but an addition; past it, each
 * chunk stored scans the buffers that hold output.
 *
 * @example
 * ```ts
 * import { OutputBuffer } from "@pyproxy/pyproxy";
 * import { ReplayBudget } from "@pyproxy/pyproxy";
 * const budget = new ReplayBudget({ maxBytes: 8 });
 * const a = new OutputBuffer({ budget });
 * const b = new OutputBuffer({ budget });
 * for (let seq = 0; seq < 4; seq++) a.push({ fd: 1, data: "aa", seq });
 * b.push({ fd: 1, data: "bb", seq: 0 });
 * console.log(a.bytes, b.bytes, budget.bytes); // 6 2 8
 * a.end();
 * console.log(budget.bytes); // 2
 * ```
 */
export class ReplayBudget {
  #maxBytes: number;
  #bytes = 0;
  // An array, not a Set: a join and a leave per eval (see _string_table.ts).
  #shares: Share[] = [];
  #shrinking = false;

  /** Creates an empty budget. */
  constructor(options: ReplayBudgetOptions = {}) {
    const maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    if (!(maxBytes >= 0)) {
      throw new RangeError(
        `Cannot create replay budget: maxBytes ${maxBytes} is not a number >= 0`,
      );
    }
    this.#maxBytes = maxBytes;
  }

  /** The bound, in UTF-16 code units. */
  get maxBytes(): number {
    return this.#maxBytes;
  }

  /** Output its buffers hold now, in UTF-16 code units. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of buffers that joined and did not leave. */
  get members(): number {
    return this.#shares.length;
  }

  /** Adds a buffer, holding nothing yet; it reports through the share. */
  join(member: ReplayBudgetMember): ReplayBudgetShare {
    const share: Share = {
      member,
      units: 0,
      index: this.#shares.length,
      blocked: false,
      get bytes(): number {
        return share.units;
      },
      add: (units: number): void => {
        if (share.index < 0) return;
        share.units += units;
        this.#bytes += units;
        // Not on a drop (a shrink drops, and a push's own cap drops before
        // it adds): a drop never makes the total grow.
        if (units < 0) return;
        // A chunk, or a reader gone: it may have something to drop again.
        share.blocked = false;
        if (this.#bytes > this.#maxBytes) this.#shrink();
      },
      leave: (): void => this.#remove(share),
    };
    this.#shares.push(share);
    return share;
  }

  #remove(share: Share): void {
    const index = share.index;
    if (index < 0) return;
    this.#bytes -= share.units;
    share.units = 0;
    share.index = -1;
    share.member = undefined;
    const last = this.#shares.pop()!;
    if (last !== share) {
      this.#shares[index] = last;
      last.index = index;
    }
  }

  /**
   * Water-filling: the largest share drops its oldest chunks down to the
   * second largest's level (or less, if that is enough), and so on, until
   * the total fits or no share can drop more. A share that could drop
   * nothing is left out until it reports again: with many buffers that each
   * hold only what they must keep (their newest chunks past the bound), a
   * chunk stored costs one scan, not one per buffer (2000 running evals
   * over the bound cost ~30 ms of the thread per chunk that way).
   */
  #shrink(): void {
    // A shrink drops (negative adds): never re-entered, but be sure.
    if (this.#shrinking) return;
    this.#shrinking = true;
    try {
      while (this.#bytes > this.#maxBytes) {
        let largest: Share | undefined;
        let second = 0;
        for (const share of this.#shares) {
          if (share.blocked) continue;
          if (largest === undefined || share.units > largest.units) {
            if (largest !== undefined) second = largest.units;
            largest = share;
          } else if (share.units > second) second = share.units;
        }
        if (largest === undefined) return;
        const before = largest.units;
        const excess = this.#bytes - this.#maxBytes;
        // At least one chunk, so that equal shares take turns.
        largest.member?.shrink(
          Math.min(before - 1, Math.max(second, before - excess)),
        );
        if (largest.units >= before) largest.blocked = true;
      }
    } finally {
      this.#shrinking = false;
    }
  }
}

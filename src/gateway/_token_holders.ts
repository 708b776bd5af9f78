/**
 * The connections a token let in that last as long as their clients want
 * (channel subscriptions, over SSE or a WebSocket): a reload that retires
 * the token ends them, as it refuses the token's next requests. Bounded
 * streams (a model's, an eval's) end with their work and are not held.
 *
 * @module
 */

/** The open channel subscriptions by the token each presented. */
export class TokenHolders {
  readonly #held = new Map<object, { token: string; end: () => void }>();

  /** Subscriptions held (open). */
  get size(): number {
    return this.#held.size;
  }

  /**
   * Holds a subscription let in by `token`; `end` closes it. Returns its
   * release, to call once it closed (whatever closed it).
   */
  hold(token: string, end: () => void): () => void {
    const key = {};
    this.#held.set(key, { token, end });
    return () => void this.#held.delete(key);
  }

  /**
   * Ends (and releases) the subscriptions whose token `accepted` no longer
   * takes; returns how many.
   */
  revoke(accepted: (token: string) => boolean): number {
    let ended = 0;
    for (const [key, { token, end }] of this.#held) {
      if (accepted(token)) continue;
      this.#held.delete(key);
      ended++;
      try {
        end();
      } catch {
        // Closed meanwhile.
      }
    }
    return ended;
  }
}

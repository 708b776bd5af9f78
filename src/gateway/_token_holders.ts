/**
 * The connections a token let in that outlive their request: channel
 * subscriptions (as long as their clients want), model streams (an LLM's
 * may run for minutes), eval streams and the eval's code itself. A reload
 * or a token file's change that retires the token ends them, as it refuses
 * the token's next requests: a token retired because it leaked must not
 * keep what it opened. A plain call is not held: it was let in, and ends
 * within its timeout.
 *
 * @module
 */
import { bearerToken } from "./security.ts";

/** What a token holds: how the log counts what a retirement ended. */
export type HeldKind = "subscription" | "stream";

/**
 * The end of a stream whose token was retired, for its last event: the
 * `message` of an `Unauthorized` error (status 401, as its next request).
 */
export const TOKEN_RETIRED =
  "Cannot complete stream: the token it was opened with is no longer accepted (a reload or a token file retired it)";

/**
 * A stream's hold on its token ({@linkcode TokenHolders.holdRequest}):
 * `signal` aborts when the token is retired.
 */
export interface TokenHold {
  /** Aborted (once) when a reload or a token file retires the token. */
  readonly signal: AbortSignal;
  /** Releases the hold: call it once the stream ended, however it ended. */
  release(): void;
}

/** The open subscriptions and streams by the token each presented. */
export class TokenHolders {
  readonly #held = new Map<
    object,
    { token: string; end: () => void; kind: HeldKind }
  >();

  /** Subscriptions and streams held (open). */
  get size(): number {
    return this.#held.size;
  }

  /**
   * Holds a subscription or stream let in by `token`; `end` closes it.
   * Returns its release, to call once it closed (whatever closed it).
   */
  hold(
    token: string,
    end: () => void,
    kind: HeldKind = "subscription",
  ): () => void {
    const key = {};
    this.#held.set(key, { token, end, kind });
    return () => void this.#held.delete(key);
  }

  /**
   * Holds a stream let in by the bearer token of `request` (the header:
   * streams are `POST`s and `GET`s of API clients); `onRetire` runs when
   * the token is retired, before `signal` aborts. `undefined` for a request
   * without one (the auth middleware let it in otherwise: no token set).
   */
  holdRequest(
    request: Request,
    onRetire?: () => void,
  ): TokenHold | undefined {
    const token = bearerToken(request.headers.get("authorization") ?? "");
    if (token === undefined) return undefined;
    const controller = new AbortController();
    const release = this.hold(token, () => {
      try {
        onRetire?.();
      } finally {
        controller.abort();
      }
    }, "stream");
    return { signal: controller.signal, release };
  }

  /**
   * Ends (and releases) the subscriptions and streams whose token
   * `accepted` no longer takes; returns how many of each.
   */
  revoke(accepted: (token: string) => boolean): Record<HeldKind, number> {
    const ended = { subscription: 0, stream: 0 };
    for (const [key, { token, end, kind }] of this.#held) {
      if (accepted(token)) continue;
      this.#held.delete(key);
      ended[kind]++;
      try {
        end();
      } catch {
        // Closed meanwhile.
      }
    }
    return ended;
  }
}

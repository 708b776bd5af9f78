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
    { token: string; end: () => void; kind: HeldKind; manage: boolean }
  >();
  /** The tokens in force since the last {@linkcode revoke}; none: the first. */
  #accepts: ((token: string) => boolean) | undefined;
  /** The same for what only the management token may hold (evals). */
  #acceptsManage: ((token: string) => boolean) | undefined;

  /** Subscriptions and streams held (open). */
  get size(): number {
    return this.#held.size;
  }

  /**
   * Holds a subscription or stream let in by `token`; `end` closes it.
   * Returns its release, to call once it closed (whatever closed it).
   * `manage`: what only the management token may open (an eval), ended
   * when the token is no longer a management token, even if it is still
   * accepted as the inference token. A token retired since its request
   * was let in (a reload while the request's body came in) is not held:
   * `end` runs at once (after the caller's turn), as a reload would have
   * run it.
   */
  hold(
    token: string,
    end: () => void,
    kind: HeldKind = "subscription",
    manage = false,
  ): () => void {
    if (!this.#accepted(token, manage)) {
      queueMicrotask(() => {
        try {
          end();
        } catch {
          // Closed meanwhile.
        }
      });
      return () => {};
    }
    const key = {};
    this.#held.set(key, { token, end, kind, manage });
    return () => void this.#held.delete(key);
  }

  /** Whether the tokens in force take `token` (for what `manage` says). */
  #accepted(token: string, manage: boolean): boolean {
    const accepts = manage && this.#acceptsManage !== undefined
      ? this.#acceptsManage
      : this.#accepts;
    return accepts === undefined || accepts(token);
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
    manage = false,
  ): TokenHold | undefined {
    const token = bearerToken(request.headers.get("authorization") ?? "");
    if (token === undefined) return undefined;
    const controller = new AbortController();
    const end = () => {
      try {
        onRetire?.();
      } finally {
        controller.abort();
      }
    };
    if (!this.#accepted(token, manage)) {
      // Retired while the request came in (a reload during its body):
      // ended now, as a reload just after would end it.
      end();
      return { signal: controller.signal, release: () => {} };
    }
    const release = this.hold(token, end, "stream", manage);
    return { signal: controller.signal, release };
  }

  /**
   * Ends (and releases) the subscriptions and streams whose token
   * `accepted` no longer takes (or, for those held as `manage`,
   * `acceptedManage` when given: a management token set); returns how many
   * of each. Later holds are checked against them too.
   */
  revoke(
    accepted: (token: string) => boolean,
    acceptedManage?: (token: string) => boolean,
  ): Record<HeldKind, number> {
    this.#accepts = accepted;
    this.#acceptsManage = acceptedManage;
    const ended = { subscription: 0, stream: 0 };
    for (const [key, { token, end, kind, manage }] of this.#held) {
      if (this.#accepted(token, manage)) continue;
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

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
 * Why a hold ended: `"retired"`, its token is no longer accepted; else its
 * token is still accepted but may no longer hold it: `"tenant"`, the token
 * is now a tenant's (an eval, without a management token set; a
 * subscription to a channel not its own), `"inference"`, the token is no
 * longer a management token (an eval, a management token set).
 */
export type HoldEnd = "retired" | "tenant" | "inference";

/**
 * The end of a stream whose token was retired, for its last event: the
 * `message` of an `Unauthorized` error (status 401, as its next request).
 */
export const TOKEN_RETIRED =
  "Cannot complete stream: the token it was opened with is no longer accepted (a reload or a token file retired it)";

/**
 * The end of an eval whose token is still accepted but may no longer run
 * eval (`why` not `"retired"`), for its last event: the `message` of a
 * `ForbiddenToken` error (status 403, as its next eval would get). Says
 * no more than that 403 does.
 */
export function tokenDemoted(why: "tenant" | "inference"): string {
  return why === "inference"
    ? "Cannot complete stream: the token it was opened with is no longer a management token (a reload or a token file moved it), and eval takes the management token"
    : "Cannot complete stream: the token it was opened with is now a tenant's (a reload or a token file marked it \"tenant\"), and eval takes an operator's token";
}

/**
 * A stream's hold on its token ({@linkcode TokenHolders.holdRequest}):
 * `signal` aborts when the token is retired.
 */
export interface TokenHold {
  /** Aborted (once) when a reload or a token file retires the token. */
  readonly signal: AbortSignal;
  /** Why `signal` aborted; `undefined` until it does. */
  readonly why: HoldEnd | undefined;
  /** Releases the hold: call it once the stream ended, however it ended. */
  release(): void;
}

/** The open subscriptions and streams by the token each presented. */
export class TokenHolders {
  readonly #held = new Map<
    object,
    {
      token: string;
      end: (why: HoldEnd) => void;
      kind: HeldKind;
      manage: boolean;
      channel: string | undefined;
    }
  >();
  /** The tokens in force since the last {@linkcode revoke}; none: the first. */
  #accepts: ((token: string) => boolean) | undefined;
  /** The same for what only the management token may hold (evals). */
  #acceptsManage: ((token: string) => boolean) | undefined;
  /** How a token `#acceptsManage` refuses was demoted. */
  #manageDemotion: "tenant" | "inference" = "inference";
  /** Whether a token may hold a channel's subscription; none: any. */
  #channelAllowed: ((token: string, channel: string) => boolean) | undefined;

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
   * run it. `channel`: the channel a subscription follows, ended when the
   * token may no longer follow it (a tenant's, not its channel).
   */
  hold(
    token: string,
    end: (why: HoldEnd) => void,
    kind: HeldKind = "subscription",
    manage = false,
    channel?: string,
  ): () => void {
    const why = this.#ended(token, manage, channel);
    if (why !== undefined) {
      queueMicrotask(() => {
        try {
          end(why);
        } catch {
          // Closed meanwhile.
        }
      });
      return () => {};
    }
    const key = {};
    this.#held.set(key, { token, end, kind, manage, channel });
    return () => void this.#held.delete(key);
  }

  /**
   * Why the tokens in force end a hold of `token` (for what `manage` and
   * `channel` say), or `undefined` when they keep it.
   */
  #ended(
    token: string,
    manage: boolean,
    channel: string | undefined,
  ): HoldEnd | undefined {
    if (this.#accepts !== undefined && !this.#accepts(token)) return "retired";
    if (
      manage && this.#acceptsManage !== undefined && !this.#acceptsManage(token)
    ) {
      // Accepted, as an inference or a tenant's token: demoted.
      return this.#manageDemotion;
    }
    if (
      channel !== undefined && this.#channelAllowed !== undefined &&
      !this.#channelAllowed(token, channel)
    ) return "tenant";
    return undefined;
  }

  /**
   * Holds a stream let in by the bearer token of `request` (the header:
   * streams are `POST`s and `GET`s of API clients); `onRetire` runs when
   * the token is retired, before `signal` aborts. `undefined` for a request
   * without one (the auth middleware let it in otherwise: no token set).
   */
  holdRequest(
    request: Request,
    onRetire?: (why: HoldEnd) => void,
    manage = false,
  ): TokenHold | undefined {
    const token = bearerToken(request.headers.get("authorization") ?? "");
    if (token === undefined) return undefined;
    const controller = new AbortController();
    let ended: HoldEnd | undefined;
    const end = (why: HoldEnd) => {
      ended = why;
      try {
        onRetire?.(why);
      } finally {
        controller.abort();
      }
    };
    const why = this.#ended(token, manage, undefined);
    if (why !== undefined) {
      // Retired while the request came in (a reload during its body):
      // ended now, as a reload just after would end it.
      end(why);
      return { signal: controller.signal, why, release: () => {} };
    }
    const release = this.hold(token, end, "stream", manage);
    return {
      signal: controller.signal,
      get why() {
        return ended;
      },
      release,
    };
  }

  /**
   * Ends (and releases) the subscriptions and streams whose token
   * `accepted` no longer takes (or, for those held as `manage`,
   * `acceptedManage` when given: a management token set, `manageSet`, or
   * else tenants marked; or, for a channel's subscription,
   * `channelAllowed` when given: tenants marked); returns how many of
   * each, those whose token is still accepted but may no longer hold them
   * (made a tenant's, or no longer the management token) apart in
   * `demoted`. Later holds are checked against them too.
   */
  revoke(
    accepted: (token: string) => boolean,
    acceptedManage?: (token: string) => boolean,
    channelAllowed?: (token: string, channel: string) => boolean,
    manageSet = true,
  ): Record<HeldKind, number> & { demoted: Record<HeldKind, number> } {
    this.#accepts = accepted;
    this.#acceptsManage = acceptedManage;
    this.#manageDemotion = manageSet ? "inference" : "tenant";
    this.#channelAllowed = channelAllowed;
    const ended = {
      subscription: 0,
      stream: 0,
      demoted: { subscription: 0, stream: 0 },
    };
    for (const [key, { token, end, kind, manage, channel }] of this.#held) {
      const why = this.#ended(token, manage, channel);
      if (why === undefined) continue;
      this.#held.delete(key);
      (why === "retired" ? ended : ended.demoted)[kind]++;
      try {
        end(why);
      } catch {
        // Closed meanwhile.
      }
    }
    return ended;
  }
}

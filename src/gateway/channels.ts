/**
 * In-process publish/subscribe channels for the gateway: bounded history per
 * channel, a bounded buffer per subscriber, and slow subscribers dropped (with
 * a notice) instead of growing memory.
 *
 * @module
 */
import { withRawIntegers } from "../_exact_json.ts";
import { bytesAsBase64Json, holdsBytes, mayHoldBytes } from "../_binary.ts";
import { ChannelLimitError, SerializationError } from "../errors.ts";
import { nonFiniteReason } from "../_non_finite.ts";

/**
 * One published message.
 *
 * @example
 * ```ts
 * import { ChannelHub, type ChannelMessage } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub();
 * hub.publish("news", { hello: "world" });
 * const last: ChannelMessage | undefined = hub.list()[0]?.history.at(-1);
 * console.log(last?.seq, last?.data); // 1 { hello: "world" }
 * hub.close();
 * ```
 */
export interface ChannelMessage {
  /** The channel name. */
  channel: string;
  /** Per-channel sequence number, from 1. */
  seq: number;
  /**
   * The channel's numbering `seq` belongs to: made when the channel is (a
   * gateway's start, an idle channel forgotten and made again), so a `seq`
   * of another epoch is of a numbering that started again since.
   */
  epoch: string;
  /** When it was published (ms since the epoch). */
  time: number;
  /** The JSON payload. */
  data: unknown;
}

/**
 * What a subscriber receives: a message, or the notice that it was dropped (always last).
 *
 * @example
 * ```ts
 * import { ChannelHub, type ChannelEvent } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub();
 * const sub = hub.subscribe("news");
 * hub.publish("news", "hello");
 * const event: ChannelEvent = (await sub.next()).value;
 * if (event.type === "message") console.log(event.message.data); // "hello"
 * hub.close();
 * ```
 */
export type ChannelEvent =
  | { type: "message"; message: ChannelMessage }
  | { type: "dropped"; reason: string };

/**
 * A channel as listed by {@linkcode ChannelHub.list}.
 *
 * @example
 * ```ts
 * import { ChannelHub, type ChannelInfo } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub();
 * hub.publish("scores", { score: 0.7 });
 * const info: ChannelInfo | undefined = hub.list()[0];
 * console.log(info?.name, info?.published); // "scores" 1
 * hub.close();
 * ```
 */
export interface ChannelInfo {
  /** The channel name. */
  name: string;
  /** Live subscribers. */
  subscribers: number;
  /** Messages published since the channel was created. */
  published: number;
  /** Its numbering's epoch ({@linkcode ChannelMessage.epoch}). */
  epoch: string;
  /** Subscribers dropped for being too slow. */
  dropped: number;
  /** The most recent messages (oldest first). */
  history: ChannelMessage[];
}

/**
 * Options for {@linkcode ChannelHub.subscribe}.
 *
 * @example
 * ```ts
 * import { ChannelHub } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub();
 * hub.publish("news", "first");
 * hub.publish("news", "second");
 * // Resume after the message with seq 1 (e.g. from an SSE Last-Event-ID).
 * const sub = hub.subscribe("news", { afterSeq: 1 });
 * console.log((await sub.next()).value); // { type: "message", message: { seq: 2, data: "second", ... } }
 * hub.close();
 * ```
 */
export interface SubscribeOptions {
  /**
   * Replay the history messages with a `seq` greater than this first (e.g.
   * from `Last-Event-ID`); beyond the channel's last `seq`, or of another
   * `afterEpoch` (its numbering started again: a restart), the whole
   * history, and the subscription says so ({@linkcode Subscription.restarted}).
   */
  afterSeq?: number;
  /**
   * The epoch `afterSeq` belongs to ({@linkcode ChannelMessage.epoch}), when
   * the client knows it: one that is not the channel's tells a restart even
   * once the new numbering passed `afterSeq`.
   */
  afterEpoch?: string;
}

/**
 * One subscriber of a channel: an async iterator of {@linkcode ChannelEvent}s.
 *
 * @example
 * ```ts
 * import { ChannelHub } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub();
 * const sub = hub.subscribe("news");
 * hub.publish("news", { hello: "world" });
 * const first = await sub.next();
 * console.log(first.value); // { type: "message", message: { channel: "news", seq: 1, ... } }
 * sub.close();
 * ```
 */
export class Subscription implements AsyncIterableIterator<ChannelEvent> {
  /** The channel subscribed to. */
  readonly channel: string;
  /** The channel's epoch when subscribed ({@linkcode ChannelMessage.epoch}). */
  readonly epoch: string;
  /**
   * Whether the resume point (`afterSeq`, `afterEpoch`) was of a numbering
   * that started again since: the whole history is replayed, and messages
   * of the old numbering after that point may be lost.
   */
  readonly restarted: boolean;
  #queue: ChannelEvent[] = [];
  #sizes: number[] = [];
  #bytes = 0;
  #limit: number;
  #maxBytes: number;
  #waiter: ((result: IteratorResult<ChannelEvent>) => void) | undefined;
  #done = false;
  #onClose: (sub: Subscription) => void;
  #onDrop: ((reason: string) => void) | undefined;

  /**
   * Created by {@linkcode ChannelHub.subscribe}; `onDrop` is told the reason
   * when the subscription is dropped (not when it is closed).
   */
  constructor(
    channel: string,
    limit: number,
    onClose: (sub: Subscription) => void,
    maxBytes: number = Infinity,
    onDrop?: (reason: string) => void,
    resume: { epoch: string; restarted: boolean } = {
      epoch: "",
      restarted: false,
    },
  ) {
    this.channel = channel;
    this.epoch = resume.epoch;
    this.restarted = resume.restarted;
    this.#limit = limit;
    this.#maxBytes = maxBytes;
    this.#onClose = onClose;
    this.#onDrop = onDrop;
  }

  /** True once closed or dropped. */
  get closed(): boolean {
    return this.#done;
  }

  /** Messages waiting to be read. */
  get buffered(): number {
    return this.#queue.length;
  }

  /**
   * Queues a message; returns `false` (and drops this subscriber) when its
   * buffer is full.
   */
  push(message: ChannelMessage, size = 0): boolean {
    if (this.#done) return false;
    const event: ChannelEvent = { type: "message", message };
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = undefined;
      waiter({ value: event, done: false });
      return true;
    }
    if (this.#queue.length >= this.#limit) {
      this.drop(
        `subscriber too slow: more than ${this.#limit} messages buffered`,
      );
      return false;
    }
    if (this.#bytes + size > this.#maxBytes && this.#queue.length > 0) {
      this.drop(
        `subscriber too slow: more than ${this.#maxBytes} bytes of messages buffered`,
      );
      return false;
    }
    this.#queue.push(event);
    this.#sizes.push(size);
    this.#bytes += size;
    return true;
  }

  /**
   * Queues a message of the kept history replayed as the subscription
   * starts: never a reason to drop it (the history is bounded by its own
   * limits), though its bytes count against what live messages may add.
   * A history larger than `maxBufferBytes` (50 messages of the 1 MiB body
   * limit, against 16 MiB) dropped a resuming subscriber at once, and again
   * at each reconnect.
   */
  replay(message: ChannelMessage, size = 0): void {
    if (this.#done) return;
    this.#queue.push({ type: "message", message });
    this.#sizes.push(size);
    this.#bytes += size;
  }

  /** Drops the subscriber: the buffer is freed and the next event is the `dropped` notice. */
  drop(reason: string): void {
    if (this.#done) return;
    // Free the backlog at once: a slow consumer must not pin memory.
    this.#queue = [{ type: "dropped", reason }];
    this.#sizes = [0];
    this.#bytes = 0;
    this.#finish();
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = undefined;
      this.#queue = [];
      waiter({ value: { type: "dropped", reason }, done: false });
    }
    this.#onDrop?.(reason);
  }

  /** Stops the subscription (no notice). */
  close(): void {
    if (this.#done) return;
    this.#queue = [];
    this.#sizes = [];
    this.#bytes = 0;
    this.#finish();
    if (this.#waiter) {
      const waiter = this.#waiter;
      this.#waiter = undefined;
      waiter({ value: undefined, done: true });
    }
  }

  /** The next event; `done` after a close or after the `dropped` notice. */
  next(): Promise<IteratorResult<ChannelEvent>> {
    const event = this.#queue.shift();
    if (event) {
      this.#bytes -= this.#sizes.shift() ?? 0;
      return Promise.resolve({ value: event, done: false });
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.#waiter = resolve));
  }

  /** Closes the subscription when a `for await` loop exits early. */
  return(): Promise<IteratorResult<ChannelEvent>> {
    this.close();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Iterates the events. */
  [Symbol.asyncIterator](): AsyncIterableIterator<ChannelEvent> {
    return this;
  }

  #finish(): void {
    this.#done = true;
    this.#onClose(this);
  }
}

interface Channel {
  name: string;
  history: ChannelMessage[];
  /** The size of each history message (characters of its JSON). */
  sizes: number[];
  subscribers: Set<Subscription>;
  seq: number;
  /** Its numbering's epoch (ChannelMessage.epoch). */
  epoch: string;
  dropped: number;
  /** The tenant owning it (`tenantOf`), whose bounds it counts against. */
  tenant: TenantUse | undefined;
}

/** What one tenant's channels hold, against its bounds. */
interface TenantUse {
  id: string;
  channels: number;
  subscribers: number;
  historyBytes: number;
  /** Its channels' history messages, oldest first (as the hub's `#otherKept`). */
  kept: Map<ChannelMessage, Channel>;
}

/**
 * Options for {@linkcode ChannelHub.publish} and
 * {@linkcode ChannelHub.publishRefusal}.
 *
 * @example
 * ```ts
 * import { ChannelHub, type PublishOptions } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub({ tenantMaxChannels: 1 });
 * hub.tenantOf = (name) => name.startsWith("acme.") ? "acme" : undefined;
 * hub.subscribe("acme.a");
 * // The operator's publish: not held to acme's bounds.
 * const operator: PublishOptions = { tenantBounds: false };
 * console.log(hub.publishRefusal("acme.b", operator)); // undefined
 * console.log(hub.publishRefusal("acme.b")?.name); // "ChannelLimitError"
 * hub.close();
 * ```
 */
export interface PublishOptions {
  /**
   * Whether the channel's tenant's bounds hold this publish: `false` for a
   * publisher that is not that tenant (the gateway's operator): a new
   * channel it makes is made past `tenantMaxChannels` (none of the
   * tenant's idle channels forgotten for it), and its message is kept
   * within the hub's history bounds only, not counted in the tenant's
   * `tenantMaxHistoryBytes` (it pushes none of the tenant's own history
   * out). The gateway passes `false` for every publish but a tenant's
   * token's and a call of a tenant's.
   * @default {true}
   */
  tenantBounds?: boolean;
}

/**
 * Options for {@linkcode ChannelHub}.
 *
 * @example
 * ```ts
 * import { ChannelHub } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub({ historySize: 10, bufferSize: 64, maxChannels: 100 });
 * hub.publish("news", { headline: "hello" });
 * console.log(hub.list()[0]?.history.length); // 1
 * hub.close();
 * ```
 */
export interface ChannelHubOptions {
  /**
   * Messages kept per channel for listing and for resuming subscribers.
   * @default {50}
   */
  historySize?: number;
  /**
   * Messages buffered per subscriber before it is dropped as too slow.
   * @default {256}
   */
  bufferSize?: number;
  /**
   * Channels kept at most; the least recently used channel without
   * subscribers is forgotten beyond that, one without history first. With
   * tenants (`tenantOf`) and every channel subscribed, the holder of the
   * most channels (a tenant, or the channels of no tenant together) gives
   * up its least recently used one (its subscribers dropped) to a holder
   * of at least two fewer: N holders keep `maxChannels / N` each at least.
   * @default {1000}
   */
  maxChannels?: number;
  /**
   * Characters of JSON kept in the histories of all channels together: past
   * it, the oldest history messages of the holder of the most are
   * forgotten (a tenant's, or those of no tenant's share together; without
   * tenants, the oldest of any channel). A message larger than this on its
   * own is delivered but not kept.
   * @default {67108864}
   */
  maxHistoryBytes?: number;
  /**
   * Characters of JSON buffered per subscriber before it is dropped as too
   * slow (besides `bufferSize` messages); one message is always accepted.
   * @default {16777216}
   */
  maxBufferBytes?: number;
  /**
   * Called when a subscriber is dropped as too slow (by its buffer bounds, or
   * by a route calling `drop`), with its channel and the reason; not for the
   * subscribers ended by `close()`. The gateway logs it. An exception thrown
   * here is ignored.
   */
  onDrop?: (channel: string, reason: string) => void;
  /**
   * The tenant owning a channel, by its name (`undefined`: no one's; asked
   * once, as the channel is made): a tenant's channels together have at
   * most `tenantMaxChannels` channels, `tenantMaxSubscribers` subscribers
   * and `tenantMaxHistoryBytes` of history, so that one tenant cannot take
   * the hub's `maxChannels` or `maxHistoryBytes` from the others. A
   * gateway with tenants' tokens sets it ({@linkcode ChannelHub.tenantOf}).
   * Without it, no bounds but the hub's.
   */
  tenantOf?: (channel: string) => string | undefined;
  /**
   * Channels one tenant keeps at most: past it, its least recently used
   * channel without subscribers is forgotten (one without history first),
   * and with subscribers on all of them a new one is refused
   * ({@linkcode ChannelLimitError}).
   * @default {100}
   */
  tenantMaxChannels?: number;
  /**
   * Subscribers of one tenant's channels together: past it a subscription
   * is refused ({@linkcode ChannelLimitError}).
   * @default {1000}
   */
  tenantMaxSubscribers?: number;
  /**
   * Characters of JSON kept in the histories of one tenant's channels
   * together: past it, that tenant's oldest history messages are forgotten
   * (not another's). A message larger than this is delivered but not kept.
   * @default {8388608}
   */
  tenantMaxHistoryBytes?: number;
}

const CHANNEL_NAME = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * Publish/subscribe hub with bounded memory: each channel keeps its last
 * `historySize` messages, each subscriber at most `bufferSize` unread ones.
 *
 * @example Two subscribers
 * ```ts
 * import { ChannelHub } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub({ historySize: 10, bufferSize: 100 });
 * const a = hub.subscribe("scores");
 * const b = hub.subscribe("scores");
 * hub.publish("scores", { score: 0.7 });
 * console.log((await a.next()).value, (await b.next()).value);
 * console.log(hub.list()[0]?.subscribers); // 2
 * hub.close();
 * ```
 */
export class ChannelHub {
  #channels = new Map<string, Channel>();
  #historySize: number;
  #bufferSize: number;
  #maxChannels: number;
  #maxHistoryBytes: number;
  #maxBufferBytes: number;
  /**
   * The history messages counted in no tenant's share (the channels of no
   * tenant, the operator's messages), oldest first (a Map keeps insertion
   * order), with their channel; a tenant's are in its `kept`. Past
   * maxHistoryBytes the holder of the most (a tenant, or these) loses its
   * oldest first.
   */
  #otherKept = new Map<ChannelMessage, Channel>();
  #historyBytes = 0;
  /** Of `#historyBytes`, those counted in the tenants' shares. */
  #tenantHistoryBytes = 0;
  /** Channels of the tenants (the others are no one's). */
  #tenantChannels = 0;
  #closed = false;
  #dropped = 0;
  #onDrop: ((channel: string, reason: string) => void) | undefined;
  /**
   * The data of messages holding `BigInt`s, with each one as `JSON.rawJSON`
   * of its digits: written once at publish, then by every subscriber and
   * listing with no `BigInt` written again (a 1 MB message of 4300-digit
   * integers cost ~30 ms per subscriber that way).
   */
  #wire = new WeakMap<ChannelMessage, unknown>();
  /** The tenants owning channels now, by id. */
  #tenants = new Map<string, TenantUse>();
  #tenantMaxChannels: number;
  #tenantMaxSubscribers: number;
  #tenantMaxHistoryBytes: number;
  /**
   * The tenant owning a channel ({@linkcode ChannelHubOptions.tenantOf}),
   * asked as a channel is made: a channel made before it was set (or
   * while it answered `undefined`) stays no one's until forgotten.
   *
   * @example
   * ```ts
   * import { ChannelHub } from "@pyproxy/pyproxy";
   * const hub = new ChannelHub({ tenantMaxSubscribers: 1 });
   * hub.tenantOf = (name) => name.startsWith("acme.") ? "acme" : undefined;
   * hub.subscribe("acme.events");
   * try {
   *   hub.subscribe("acme.events");
   * } catch (err) {
   *   console.log((err as Error).name); // "ChannelLimitError"
   * }
   * hub.close();
   * ```
   */
  tenantOf: ((channel: string) => string | undefined) | undefined;
  /**
   * The tenant a call's caller is (`undefined`: none, an operator's), for
   * the channels plugin: a model's `host.publish` in a tenant's call
   * reaches only the channels {@linkcode ChannelHub.tenantOf} gives that
   * tenant. Unset (no tenants): a model publishes to any channel. A
   * gateway with tokens sets it.
   *
   * @example
   * ```ts
   * import { ChannelHub } from "@pyproxy/pyproxy";
   * const hub = new ChannelHub();
   * hub.tenantOf = (name) => name.startsWith("acme.") ? "acme" : undefined;
   * hub.tenantOfCaller = (caller) => caller === "acme" ? "acme" : undefined;
   * console.log(hub.tenantOfCaller("acme")); // "acme"
   * hub.close();
   * ```
   */
  tenantOfCaller: ((caller: string) => string | undefined) | undefined;

  /** Creates an empty hub. */
  constructor(options: ChannelHubOptions = {}) {
    this.#onDrop = options.onDrop;
    this.tenantOf = options.tenantOf;
    this.#tenantMaxChannels = positive(
      options.tenantMaxChannels ?? 100,
      "tenantMaxChannels",
      false,
    );
    this.#tenantMaxSubscribers = positive(
      options.tenantMaxSubscribers ?? 1000,
      "tenantMaxSubscribers",
      false,
    );
    this.#tenantMaxHistoryBytes = positive(
      options.tenantMaxHistoryBytes ?? 8 * 1024 * 1024,
      "tenantMaxHistoryBytes",
      true,
    );
    this.#historySize = positive(
      options.historySize ?? 50,
      "historySize",
      true,
    );
    this.#bufferSize = positive(options.bufferSize ?? 256, "bufferSize", false);
    this.#maxChannels = positive(
      options.maxChannels ?? 1000,
      "maxChannels",
      false,
    );
    this.#maxHistoryBytes = positive(
      options.maxHistoryBytes ?? 64 * 1024 * 1024,
      "maxHistoryBytes",
      true,
    );
    this.#maxBufferBytes = positive(
      options.maxBufferBytes ?? 16 * 1024 * 1024,
      "maxBufferBytes",
      false,
    );
  }

  /** Characters of JSON kept in the histories of all channels. */
  get historyBytes(): number {
    return this.#historyBytes;
  }

  /**
   * Subscribers dropped as too slow since the hub was created, or with
   * their channel when a full hub is shared out among tenants
   * (`maxChannels`), in every channel (channels forgotten since included;
   * `close()` not counted).
   */
  get droppedCount(): number {
    return this.#dropped;
  }

  /** True when `name` is a valid channel name (1–128 of `A-Z a-z 0-9 _ . : -`). */
  static isValidName(name: string): boolean {
    return CHANNEL_NAME.test(name);
  }

  /**
   * Publishes `data` to every subscriber of `channel`; returns the stored
   * message and how many subscribers it reached. Throws a
   * `SerializationError` (nothing published, no channel made) for data that
   * cannot be written as JSON: a cycle, a `BigInt` nested deeper than
   * 1000 levels, or NaN or an infinity (which `JSON.stringify` writes as
   * `null`; a body's `1e400` is `Infinity` once parsed). Kept, such a
   * message ended each subscriber's stream without a word and made every
   * `GET /v1/channels` answer 400 while it stayed in the history (NaN: its
   * subscribers read `null`). After {@linkcode ChannelHub.close} it still
   * publishes, reaching no one.
   */
  publish(
    channel: string,
    data: unknown,
    options: PublishOptions = {},
  ): { message: ChannelMessage; delivered: number } {
    const bounded = options.tenantBounds !== false;
    // A closed hub (a drain) still publishes, to nobody: its subscribers
    // were dropped. A call in flight in the grace that publishes (a
    // model's host.publish, an execute's ?publish=) had its result lost to
    // a 400 "the channel hub is closed".
    let size: number;
    let wire: unknown;
    let text: string | undefined;
    try {
      ({ wire, size, text } = wireOf(data));
    } catch {
      // A BigInt (or data JSON cannot hold): its integers' digits, once.
      try {
        ({ wire, size, text } = wireOf(withRawIntegers(data)));
      } catch (err) {
        throw new SerializationError(
          `Cannot publish: the message cannot be written as JSON (${
            (err as Error).message
          }: a cycle, or a BigInt nested deeper than 1000 levels)`,
        );
      }
    }
    // NaN and infinities (a body's 1e400 too) would reach subscribers as null.
    const nonFinite = text === undefined
      ? undefined
      : nonFiniteReason(wire, text);
    if (nonFinite !== undefined) {
      throw new SerializationError(`Cannot publish: ${nonFinite}`, {
        details: { reason: nonFinite },
      });
    }
    const ch = this.#channel(channel, bounded);
    // Counted in its tenant's share: a tenant's own publish (or a model's
    // for it), not the operator's.
    const tenant = bounded ? ch.tenant : undefined;
    const message: ChannelMessage = {
      channel,
      seq: ++ch.seq,
      epoch: ch.epoch,
      time: Date.now(),
      data,
    };
    if (wire !== data) this.#wire.set(message, wire);
    // One larger than its tenant's share is not kept either: kept, it
    // forgot all the tenant's other history, then itself.
    if (
      this.#historySize > 0 && size <= this.#maxHistoryBytes &&
      (tenant === undefined || size <= this.#tenantMaxHistoryBytes)
    ) {
      ch.history.push(message);
      ch.sizes.push(size);
      this.#historyBytes += size;
      if (tenant !== undefined) {
        tenant.kept.set(message, ch);
        tenant.historyBytes += size;
        this.#tenantHistoryBytes += size;
      } else this.#otherKept.set(message, ch);
      if (ch.history.length > this.#historySize) this.#forgetOldest(ch);
      if (tenant !== undefined) {
        // Its own oldest, not another's (nor an operator's).
        while (tenant.historyBytes > this.#tenantMaxHistoryBytes) {
          this.#forgetOldest(tenant.kept.values().next().value!);
        }
      }
      while (this.#historyBytes > this.#maxHistoryBytes) {
        // The holder of the most history loses its oldest (its channel's
        // oldest: older ones of that channel went first). Before, the
        // oldest of any channel went: 8 tenants at their 8 MiB filled the
        // 64 MiB, and each new message of theirs forgot a small tenant's
        // or the operator's history. Now each of N holders keeps
        // maxHistoryBytes / N at least (within its own share).
        this.#forgetOldest(this.#mostHistory().values().next().value!);
      }
    }
    let delivered = 0;
    for (const sub of [...ch.subscribers]) {
      // A refused push drops the subscriber: its onDrop counts it.
      if (sub.push(message, size)) delivered++;
    }
    return { message, delivered };
  }

  /**
   * `message.data` as it is written to subscribers: the same value, except
   * that a `BigInt` in it is a `JSON.rawJSON` of its digits (made once, at
   * publish), so `JSON.stringify` writes it exactly and at no further cost,
   * and bytes in it (`Uint8Array`, `ArrayBuffer`, `DataView`) write base64
   * text (the caller's value is not changed).
   */
  wireData(message: ChannelMessage): unknown {
    return this.#wire.get(message) ?? message.data;
  }

  /**
   * The {@linkcode ChannelLimitError} a publish to `channel` would get now,
   * or `undefined`: a new channel of a tenant whose channels are at
   * `tenantMaxChannels`, all with subscribers (with `tenantBounds: false`,
   * never). The gateway asks it before an execute's `?publish=` runs its
   * model, so that a publish bound to be refused wastes no call (a bound
   * reached while the call runs still refuses the publish after it).
   */
  publishRefusal(
    channel: string,
    options: PublishOptions = {},
  ): ChannelLimitError | undefined {
    if (options.tenantBounds === false || this.#channels.has(channel)) {
      return undefined;
    }
    const owner = this.#tenantUse(channel);
    if (owner === undefined || owner.channels < this.#tenantMaxChannels) {
      return undefined;
    }
    for (const ch of this.#channels.values()) {
      if (ch.tenant === owner && ch.subscribers.size === 0) return undefined;
    }
    return this.#channelsFull(owner, channel);
  }

  /** Subscribes to `channel` (created when missing). */
  subscribe(channel: string, options: SubscribeOptions = {}): Subscription {
    if (this.#closed) {
      throw new TypeError("Cannot subscribe: the channel hub is closed");
    }
    // Its tenant's bound before the channel is made (a refused one made
    // none): a new channel's tenant has its use if it has other channels.
    const known = this.#channels.get(channel);
    const owner = known !== undefined ? known.tenant : this.#tenantUse(channel);
    if (
      owner !== undefined && owner.subscribers >= this.#tenantMaxSubscribers
    ) {
      throw new ChannelLimitError(
        `Cannot subscribe to channel ${
          JSON.stringify(channel)
        }: this tenant's channels have ${owner.subscribers} subscribers, their bound (channels.tenantMaxSubscribers ${this.#tenantMaxSubscribers}); close one first`,
        {
          details: {
            bound: "tenantMaxSubscribers",
            limit: this.#tenantMaxSubscribers,
          },
        },
      );
    }
    const ch = this.#channel(channel);
    const tenant = ch.tenant;
    // Past the channel's last seq, or of another epoch, the client saw a
    // numbering that started again since (the gateway restarted, or the
    // idle channel was forgotten): all it kept is new to that client.
    const { afterSeq, afterEpoch } = options;
    const restarted = afterSeq !== undefined &&
      (afterSeq > ch.seq ||
        (afterEpoch !== undefined && afterEpoch !== ch.epoch));
    // A replay larger than the buffer is clamped by the history size, which is the point of the bound.
    const sub = new Subscription(
      channel,
      Math.max(this.#bufferSize, this.#historySize),
      tenant === undefined ? (s) => ch.subscribers.delete(s) : (s) => {
        ch.subscribers.delete(s);
        tenant.subscribers--;
      },
      this.#maxBufferBytes,
      (reason) => {
        if (this.#closed) return; // shutting down, not too slow
        ch.dropped++;
        this.#dropped++;
        try {
          this.#onDrop?.(ch.name, reason);
        } catch {
          // the reporter's failure must not break publishing
        }
      },
      { epoch: ch.epoch, restarted },
    );
    if (afterSeq !== undefined) {
      const after = restarted ? 0 : afterSeq;
      ch.history.forEach((m, i) => {
        if (m.seq > after) sub.replay(m, ch.sizes[i]);
      });
    }
    ch.subscribers.add(sub);
    if (tenant !== undefined) tenant.subscribers++;
    return sub;
  }

  /** The channels with their subscriber counts and recent history. */
  list(): ChannelInfo[] {
    return [...this.#channels.values()].map((ch) => ({
      name: ch.name,
      subscribers: ch.subscribers.size,
      published: ch.seq,
      epoch: ch.epoch,
      dropped: ch.dropped,
      history: [...ch.history],
    }));
  }

  /** Total live subscribers across channels. */
  get subscriberCount(): number {
    let n = 0;
    for (const ch of this.#channels.values()) n += ch.subscribers.size;
    return n;
  }

  /**
   * Ends every subscription with a `dropped` notice (`reason`) and refuses
   * new ones; a publish then reaches no one (it does not throw).
   */
  close(reason = "server shutting down"): void {
    this.#closed = true;
    for (const ch of this.#channels.values()) {
      for (const sub of [...ch.subscribers]) sub.drop(reason);
    }
  }

  #channel(name: string, bounded = true): Channel {
    if (!CHANNEL_NAME.test(name)) {
      throw new TypeError(
        `Cannot use channel ${
          JSON.stringify(name)
        }: expected 1-128 characters of A-Z a-z 0-9 _ . : -`,
      );
    }
    let ch = this.#channels.get(name);
    if (ch) {
      // Map order doubles as LRU order.
      this.#channels.delete(name);
      this.#channels.set(name, ch);
      return ch;
    }
    const id = this.tenantOf?.(name);
    let tenant = id === undefined ? undefined : this.#tenants.get(id);
    if (id !== undefined && tenant === undefined) {
      tenant = {
        id,
        channels: 0,
        subscribers: 0,
        historyBytes: 0,
        kept: new Map(),
      };
    }
    if (
      bounded && tenant !== undefined &&
      tenant.channels >= this.#tenantMaxChannels
    ) this.#evictOwn(tenant, name);
    if (this.#channels.size >= this.#maxChannels) this.#evict(tenant);
    if (tenant !== undefined) {
      tenant.channels++;
      this.#tenantChannels++;
      this.#tenants.set(tenant.id, tenant);
    }
    ch = {
      name,
      history: [],
      sizes: [],
      subscribers: new Set(),
      seq: 0,
      // Random: a restarted gateway's numbering has another.
      epoch: crypto.randomUUID().slice(0, 8),
      dropped: 0,
      tenant,
    };
    this.#channels.set(name, ch);
    return ch;
  }

  /** Forgets the oldest history message of `ch`. */
  #forgetOldest(ch: Channel): void {
    const message = ch.history.shift();
    const size = ch.sizes.shift() ?? 0;
    this.#historyBytes -= size;
    if (message === undefined) return;
    // Only what counted in its share (not an operator's message).
    const tenant = ch.tenant;
    if (tenant !== undefined && tenant.kept.delete(message)) {
      tenant.historyBytes -= size;
      this.#tenantHistoryBytes -= size;
    } else this.#otherKept.delete(message);
  }

  /**
   * The history of the holder of the most (a tenant's `kept`, or the
   * messages of no tenant's share), oldest first: the one to forget from
   * past `maxHistoryBytes`.
   */
  #mostHistory(): Map<ChannelMessage, Channel> {
    let most = this.#historyBytes - this.#tenantHistoryBytes;
    let kept = this.#otherKept;
    for (const tenant of this.#tenants.values()) {
      if (tenant.historyBytes > most) {
        most = tenant.historyBytes;
        kept = tenant.kept;
      }
    }
    return kept;
  }

  /**
   * The holder of the most channels (a tenant's use, or `null`: the
   * channels of no tenant) and their number.
   */
  #mostChannels(): { holder: TenantUse | null; channels: number } {
    let holder: TenantUse | null = null;
    let channels = this.#channels.size - this.#tenantChannels;
    for (const tenant of this.#tenants.values()) {
      if (tenant.channels > channels) {
        holder = tenant;
        channels = tenant.channels;
      }
    }
    return { holder, channels };
  }

  /** The use of the tenant owning `name` now, if it has channels. */
  #tenantUse(name: string): TenantUse | undefined {
    const id = this.tenantOf?.(name);
    return id === undefined ? undefined : this.#tenants.get(id);
  }

  /** Forgets the channel `name` (one without subscribers) and its history. */
  #remove(name: string, ch: Channel): void {
    this.#channels.delete(name);
    while (ch.history.length > 0) this.#forgetOldest(ch);
    const tenant = ch.tenant;
    if (tenant === undefined) return;
    this.#tenantChannels--;
    if (--tenant.channels === 0) this.#tenants.delete(tenant.id);
  }

  /**
   * Makes room for one more channel of `tenant`, at its
   * `tenantMaxChannels`: forgets its least recently used channel without
   * subscribers (one without history first), else refuses `name`.
   */
  #evictOwn(tenant: TenantUse, name: string): void {
    let idle: string | undefined;
    for (const [key, ch] of this.#channels) {
      if (ch.tenant !== tenant || ch.subscribers.size !== 0) continue;
      if (ch.history.length === 0) return this.#remove(key, ch);
      idle ??= key;
    }
    if (idle !== undefined) {
      return this.#remove(idle, this.#channels.get(idle)!);
    }
    throw this.#channelsFull(tenant, name);
  }

  /** The refusal of `name`, a new channel of `tenant` at its bound. */
  #channelsFull(tenant: TenantUse, name: string): ChannelLimitError {
    return new ChannelLimitError(
      `Cannot create channel ${
        JSON.stringify(name)
      }: this tenant has ${tenant.channels} channels, all with subscribers, its bound (channels.tenantMaxChannels ${this.#tenantMaxChannels}); close a subscription or reuse a channel`,
      {
        details: {
          bound: "tenantMaxChannels",
          limit: this.#tenantMaxChannels,
        },
      },
    );
  }

  /**
   * Forgets the least recently used channel without subscribers, one
   * without history first: a subscription made one (every client that may
   * subscribe names any channel), and 1000 subscriptions to new names, one
   * after the other, forgot every idle channel's history and epoch,
   * another tenant's too, where forgetting the empty ones loses nothing.
   */
  #evict(tenant?: TenantUse): void {
    const { holder, channels: most } = this.#mostChannels();
    const mine = tenant === undefined
      ? this.#channels.size - this.#tenantChannels
      : tenant.channels;
    let idle: string | undefined;
    let own: string | undefined;
    let largest: string | undefined;
    for (const [name, ch] of this.#channels) {
      if (ch.subscribers.size !== 0) continue;
      if (ch.history.length === 0) return this.#remove(name, ch);
      idle ??= name;
      if (tenant !== undefined && ch.tenant === tenant) own ??= name;
      if (most > mine && (ch.tenant ?? null) === holder) largest ??= name;
    }
    // A tenant's new channel forgets its own history before another's, then
    // that of the holder of the most channels (more than its own), else
    // the least recently used.
    const name = own ?? largest ?? idle;
    if (name !== undefined) {
      return this.#remove(name, this.#channels.get(name)!);
    }
    // Every channel has subscribers: the holder of the most gives up its
    // least recently used one (its subscribers get a `dropped` notice) to
    // one that holds at least two fewer, so that N holders (tenants, and
    // the channels of no tenant) keep maxChannels / N each at least. Before,
    // 10 tenants at their 100 took the 1000 for good: every other tenant
    // and the operator were refused any channel.
    if (most >= mine + 2) {
      for (const [name, ch] of this.#channels) {
        if ((ch.tenant ?? null) !== holder) continue;
        for (const sub of [...ch.subscribers]) {
          sub.drop(
            `channel forgotten: the hub's ${this.#maxChannels} channels all have subscribers, and this channel's owner holds the most of them`,
          );
        }
        return this.#remove(name, ch);
      }
    }
    throw new RangeError(
      `Cannot create channel: ${this.#maxChannels} channels with subscribers exist`,
    );
  }
}

function positive(value: number, field: string, allowZero: boolean): number {
  if (!Number.isInteger(value) || value < (allowZero ? 0 : 1)) {
    throw new RangeError(
      `Cannot create channel hub: ${field} must be an integer >= ${
        allowZero ? 0 : 1
      }`,
    );
  }
  return value;
}

/**
 * Containers of a message looked into for bytes before its text is written:
 * enough for `{img}`, `{model, result}` or a few frames, little for a
 * message without bytes (~1 µs at most; 256 doubled the publish of a
 * 300-row result).
 */
const EARLY_BYTES_NODES = 16;

/**
 * `data` as it is written to subscribers, and the length of its JSON text.
 * Bytes (a `Uint8Array`...) go as base64 text, as the bytes a model
 * publishes do, not as JSON's `{"0":…,"1":…}`: those in its first
 * containers become views writing base64 before the text is written
 * (`JSON.stringify` writes a large one index by index, ~0.2 s per MB, and
 * fails past ~50 MB), any others once the text shows bytes may be left.
 * A message without bytes pays a walk of at most
 * {@linkcode EARLY_BYTES_NODES} containers and one native scan of its text.
 */
function wireOf(
  data: unknown,
): { wire: unknown; size: number; text: string | undefined } {
  let wire = bytesAsBase64Json(data, EARLY_BYTES_NODES);
  let text = JSON.stringify(wire);
  if (text !== undefined && mayHoldBytes(text) && holdsBytes(wire)) {
    wire = bytesAsBase64Json(wire, Infinity);
    text = JSON.stringify(wire);
  }
  return { wire, size: text?.length ?? 0, text };
}

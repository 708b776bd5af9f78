/**
 * Internals of `Pool`: the idle timeout of model streams on one timer per
 * pool. A stream's reader may take tens of thousands of items a second, so
 * taking an item costs the stream a `Date.now()` and nothing here: no timer
 * is set or cleared per item, nor per wait. The timer is armed for the
 * earliest time a watched stream could run out of idle time, and each time
 * it fires it looks at every watched stream once.
 *
 * A stream whose reader is waiting for an item cannot expire, but could
 * start its idle time at any moment; its idle time then runs out no sooner
 * than its timeout after this check, and that is when the timer looks at it
 * again. So the timer never fires late for it and no stream has to tell the
 * watch when its reader stops waiting.
 *
 * @module
 */
import type { IdleStream } from "./model_stream.ts";
import { MAX_TIMER_MS } from "./_timer.ts";

/**
 * The shortest delay between two checks: a reader that takes its items just
 * within its timeout would otherwise make the timer fire for every item.
 * Expiry may come this much late.
 */
const MIN_INTERVAL = 50;

interface Entry {
  stream: IdleStream;
  index: number;
}

/** What a `StreamIdleError` message names as the setting that cut the stream. */
export const IDLE_SETTING =
  "idle timeout: the stream's idleTimeout, else the pool's streamIdleTimeout";

/** Watches the streams of one pool for idle readers (see the module doc). */
export class StreamIdleWatch {
  #entries: Entry[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the timer fires (`Infinity`: not armed). */
  #timerAt = Infinity;
  #onExpire: (stream: IdleStream, error: unknown) => void;
  #tick = (): void => this.#check();

  /**
   * `onExpire` is called after a stream's own `expire()`, once per stream,
   * with what `expire()` threw (`undefined`: nothing).
   */
  constructor(onExpire: (stream: IdleStream, error: unknown) => void) {
    this.#onExpire = onExpire;
  }

  /**
   * Watches `stream` until the returned function is called. A timeout
   * beyond a timer's range (`Infinity` included) is no timeout: such a
   * stream is not watched.
   */
  watch(stream: IdleStream): () => void {
    if (!(stream.idleTimeout <= MAX_TIMER_MS)) return () => {};
    const entry: Entry = { stream, index: this.#entries.length };
    this.#entries.push(entry);
    const at = Date.now() + stream.idleTimeout;
    if (at < this.#timerAt) this.#arm(at);
    return () => this.#remove(entry);
  }

  /** How many streams are watched. */
  get size(): number {
    return this.#entries.length;
  }

  /** Stops the timer and forgets every stream (the pool closed). */
  clear(): void {
    for (const entry of this.#entries) entry.index = -1;
    this.#entries = [];
    this.#disarm();
  }

  #remove(entry: Entry): void {
    const index = entry.index;
    if (index < 0) return;
    entry.index = -1;
    const entries = this.#entries;
    const last = entries.pop()!;
    if (last !== entry) {
      entries[index] = last;
      last.index = index;
    }
    if (entries.length === 0) this.#disarm();
  }

  #arm(at: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(this.#tick, Math.max(0, at - Date.now()));
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  #check(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = Date.now();
    const expired: Entry[] = [];
    let next = Infinity;
    for (const entry of this.#entries) {
      const stream = entry.stream;
      const deadline = stream.idleDeadline();
      if (deadline <= now) expired.push(entry);
      else {
        // Waiting for an item (Infinity): idle from now at the earliest.
        const at = Math.min(deadline, now + stream.idleTimeout);
        if (at < next) next = at;
      }
    }
    for (const entry of expired) this.#remove(entry);
    if (next !== Infinity && this.#entries.length > 0) {
      this.#arm(Math.max(next, now + MIN_INTERVAL));
    }
    for (const { stream } of expired) {
      let error: unknown;
      try {
        stream.expire();
      } catch (err) {
        error = err ?? new Error("expire() threw undefined");
      }
      this.#onExpire(stream, error);
    }
  }
}

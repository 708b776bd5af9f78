/**
 * The write side of a `Session`: messages are queued and written in batches,
 * one write per batch. When the socket is idle, a batch is flushed by a
 * `setImmediate` callback, after the event loop has run the tasks that were
 * already due: requests that arrive one per task (the HTTP gateway's, one per
 * request) share a write instead of waking the Python server once each (the
 * end of the microtask, as before, gave exactly one message per write there;
 * the immediate gave +15-45% gateway requests/s and no change sequentially).
 * While a write is in flight, messages accumulate and go out as the next
 * batch as soon as it resolves.
 *
 * @module
 */
import { DEFAULT_MAX_FRAME_SIZE } from "./protocol/frame.ts";
import { BATCH_LIMITS, batchMessages } from "./protocol/batch_frame.ts";
import { encodeMessageFrames } from "./protocol/encode_message_frames.ts";
import { createMd5 } from "./protocol/md5.ts";
import type { SessionMessage } from "./session_types.ts";
import { SerializationError } from "./errors.ts";
import { refusedError, serializationError } from "./_json_check.ts";
import { nonFiniteReason } from "./_non_finite.ts";
import { stringifyExact } from "./_exact_json.ts";
import {
  fieldsHoldBytes,
  holdsBytes,
  itemsHoldBytes,
  mayHoldBytes,
  stringifyForWire,
  withBase64,
  writeForWire,
} from "./_binary.ts";
// Imported, not the global: a test that fakes the global timers must not stop writes.
import { setImmediate } from "node:timers";

type Outgoing = string | Uint8Array;

/** A write this large outlasts the socket buffers: its progress shows the peer is reading. */
const LARGE_WRITE = 1024 * 1024;

/** Queues outgoing messages and writes them in batches, one write at a time. */
export class Outbox {
  /** The largest payload the peer accepts (from its `auth` reply). */
  maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE;
  /** The peer accepts batch frames: small messages of one flush share a frame. */
  batch = false;
  /** `BigInt`s are written as exact integers (`integers: "bigint"`), not refused. */
  bigints = false;
  /** The peer reads bytes (`"bytes": true` in its hello): they go as base64 with `$bytes`. */
  bytes = false;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  // The connection's own write when it has one (no stream queue), else the writer's.
  #write: (data: Uint8Array) => Promise<void>;
  #done: PromiseWithResolvers<void> = Promise.withResolvers();
  #queue: Outgoing[] = [];
  #scheduled = false;
  #writing: Promise<void> | undefined;
  #writingLarge = false;
  #lastLargeWrite = 0;
  #closed = false;
  #onError: (err: unknown) => void;
  // Same hasher and encoder functions as the protocol streams, without their plumbing.
  #md5 = createMd5();
  #text = new TextEncoder();
  #flush = (): void => this.#flushQueue();
  #written = (): void => {
    this.#writing = undefined;
    if (this.#writingLarge) {
      this.#writingLarge = false;
      this.#lastLargeWrite = Date.now();
    }
    if (this.#queue.length > 0) this.#flushQueue();
  };
  #failed = (err: unknown): void => {
    this.#writing = undefined;
    this.#writingLarge = false;
    this.#done.resolve();
    this.#onError(err);
  };

  constructor(
    writable: WritableStream<Uint8Array>,
    write: ((data: Uint8Array) => Promise<void>) | undefined,
    onError: (err: unknown) => void,
  ) {
    this.#onError = onError;
    const writer = writable.getWriter();
    this.#writer = writer;
    this.#write = write ?? ((data) => writer.write(data));
  }

  /**
   * When the peer last proved it reads: now while a large write is in flight,
   * else when the last one completed (0: never). Small writes prove nothing
   * (the kernel buffers them for a peer that reads nothing).
   */
  get lastProgress(): number {
    return this.#writingLarge ? Date.now() : this.#lastLargeWrite;
  }

  /**
   * Encodes `msg` now (so a bad message fails alone, never the stream) and
   * queues it for the next flush. Returns the error when it cannot be sent.
   */
  push(msg: SessionMessage): Error | undefined {
    try {
      return this.#push(msg);
    } catch (err) {
      // A getter or a Proxy trap of the message that throws (in the look
      // for bytes, or in the exact-integer writer): the call fails alone.
      // Thrown out of push, the call's entry stayed in the session, and its
      // close rejected it again with no one to handle it (the process died
      // of the unhandled rejection).
      return new SerializationError(
        `Cannot send ${
          typeof msg.cmd === "string" ? msg.cmd : "message"
        }: reading it threw (${
          err instanceof Error ? err.message : String(err)
        })`,
        { cause: err },
      );
    }
  }

  #push(msg: SessionMessage): Error | undefined {
    if (this.#closed) {
      return new Error("Cannot send message: the session is closed");
    }
    if (msg.$bytes !== undefined) {
      return new SerializationError(
        `Cannot send ${
          msg.cmd ?? "message"
        }: '$bytes' is a field of the protocol, not an argument`,
      );
    }
    // Bytes among a call's fields (pool.execute(name, { image })), or a
    // batch's calls' fields, go as base64 at once: stringified first (as
    // {"0":…}), a 900 KB image took 0.8 s on Bun.
    const direct = fieldsHoldBytes(msg.msg) ||
      (Array.isArray(msg.msgs) && itemsHoldBytes(msg.msgs));
    let item: Outgoing | Error = direct ? "" : this.#stringify(msg);
    if (item instanceof Error) return item;
    // JSON.stringify writes bytes in a few shapes ({"0":…}, {}): only a text
    // with one of them is walked (docs/protocol.md §3, Bytes).
    if (direct || (mayHoldBytes(item) && holdsBytes(msg))) {
      if (!this.bytes) {
        return new SerializationError(
          `Cannot send ${
            msg.cmd ?? "message"
          }: it holds bytes (a Uint8Array, ArrayBuffer or DataView) and this Python server does not read them (update pyproxy_server)`,
        );
      }
      try {
        item = this.#stringify(withBase64(msg) as SessionMessage);
      } catch (err) {
        // Bytes that cannot be read (a detached ArrayBuffer): this message fails alone.
        return err instanceof SerializationError
          ? err
          : serializationError(msg, err);
      }
      if (item instanceof Error) return item;
    }
    // JSON.stringify writes NaN and infinities as null: only a text with a
    // null is walked for them.
    const nonFinite = nonFiniteReason(msg, item);
    if (nonFinite !== undefined) return refusedError(msg, nonFinite);
    // UTF-8 takes at most 3 bytes per UTF-16 unit: only encode here when the limit may be hit.
    if (item.length * 3 > this.maxFrameSize) {
      const bytes = new TextEncoder().encode(item);
      if (bytes.length > this.maxFrameSize) {
        return new SerializationError(
          `Cannot send ${
            msg.cmd ?? "message"
          }: ${bytes.length} bytes exceed the server's frame limit of ${this.maxFrameSize} (spill-over sends larger messages through files)`,
          { details: { bytes: bytes.length, limit: this.maxFrameSize } },
        );
      }
      item = bytes;
    }
    this.#queue.push(item);
    if (!this.#scheduled && this.#writing === undefined) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
    return undefined;
  }

  /** `msg` as JSON text, or the `SerializationError` saying why it is not JSON. */
  #stringify(msg: SessionMessage): string | Error {
    try {
      // Bytes a result gave (their toJSON writes base64) write `{}` here: bytes again.
      const text = stringifyForWire(msg);
      if (typeof text !== "string") throw new TypeError("not a JSON value");
      return text;
    } catch (err) {
      // Only a message that JSON.stringify refused pays for the replacer.
      const text = this.bigints
        ? writeForWire(() => exactOrUndefined(msg))
        : undefined;
      return text ?? serializationError(msg, err);
    }
  }

  #flushQueue(): void {
    this.#scheduled = false;
    if (
      this.#queue.length === 0 || this.#closed || this.#writing !== undefined
    ) return;
    const queued = this.#queue;
    this.#queue = [];
    let bytes: Uint8Array;
    try {
      bytes = encodeMessageFrames(
        this.batch ? batchMessages(queued, BATCH_LIMITS) : queued,
        this.#md5,
        this.#text,
      );
    } catch (err) {
      this.#failed(err);
      return;
    }
    this.#writingLarge = bytes.length >= LARGE_WRITE;
    this.#writing = this.#write(bytes).then(this.#written, this.#failed);
  }

  /**
   * Drops what is still queued, closes the write side and waits until the
   * bytes already handed over are written, at most `ms` milliseconds (a
   * peer that stopped reading must not hold the close up).
   */
  async close(ms: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    const closing = (this.#writing ?? Promise.resolve())
      .then(() => this.#writer.close())
      .catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      closing,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
    clearTimeout(timer);
    this.#done.resolve();
  }

  /** Settles once the write side is closed or failed (never rejects). */
  get done(): Promise<void> {
    return this.#done.promise;
  }
}

/** `msg` as JSON with exact `BigInt`s, or `undefined` when it fails for another reason. */
function exactOrUndefined(msg: SessionMessage): string | undefined {
  try {
    return stringifyExact(msg);
  } catch {
    return undefined;
  }
}

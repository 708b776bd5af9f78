/**
 * The write side of a `Session`: messages queued during one microtask are
 * encoded, signed and framed as one batch and written with one write.
 *
 * @module
 */
import { DEFAULT_MAX_FRAME_SIZE } from "./protocol/frame.ts";
import { FrameEncoderStream } from "./protocol/frame_encoder_stream.ts";
import { JsonEncoderStream } from "./protocol/json_encoder_stream.ts";
import { createMd5 } from "./protocol/md5.ts";
import { Md5SignerStream } from "./protocol/md5_signer_stream.ts";
import type { SessionMessage } from "./session_types.ts";

type Outgoing = string | Uint8Array;

/** Queues outgoing messages and flushes them once per microtask. */
export class Outbox {
  /** The largest payload the peer accepts (from its `auth` reply). */
  maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE;
  #writer: WritableStreamDefaultWriter<Outgoing[]>;
  #done: Promise<void>;
  #queue: Outgoing[] = [];
  #scheduled = false;
  #closed = false;
  #onError: (err: unknown) => void;
  #flush = (): void => this.#flushQueue();

  constructor(
    writable: WritableStream<Uint8Array>,
    onError: (err: unknown) => void,
  ) {
    this.#onError = onError;
    const encoder = new JsonEncoderStream();
    this.#writer = encoder.writable.getWriter();
    this.#done = encoder.readable
      .pipeThrough(new Md5SignerStream({ md5: createMd5() }))
      .pipeThrough(new FrameEncoderStream())
      .pipeTo(writable)
      .catch(onError);
  }

  /**
   * Encodes `msg` now (so a bad message fails alone, never the stream) and
   * queues it for the next flush. Returns the error when it cannot be sent.
   */
  push(msg: SessionMessage): Error | undefined {
    if (this.#closed) {
      return new Error("Cannot send message: the session is closed");
    }
    let item: Outgoing;
    try {
      const text = JSON.stringify(msg);
      if (typeof text !== "string") throw new TypeError("not a JSON value");
      item = text;
    } catch (err) {
      return new TypeError(
        `Cannot send ${msg.cmd ?? "message"}: it is not JSON serialisable (${
          (err as Error).message
        })`,
        { cause: err },
      );
    }
    // UTF-8 takes at most 3 bytes per UTF-16 unit: only encode here when the limit may be hit.
    if (item.length * 3 > this.maxFrameSize) {
      const bytes = new TextEncoder().encode(item);
      if (bytes.length > this.maxFrameSize) {
        return new RangeError(
          `Cannot send ${
            msg.cmd ?? "message"
          }: ${bytes.length} bytes exceed the server's frame limit of ${this.maxFrameSize}`,
        );
      }
      item = bytes;
    }
    this.#queue.push(item);
    if (!this.#scheduled) {
      this.#scheduled = true;
      queueMicrotask(this.#flush);
    }
    return undefined;
  }

  #flushQueue(): void {
    this.#scheduled = false;
    if (this.#queue.length === 0 || this.#closed) return;
    const batch = this.#queue;
    this.#queue = [];
    this.#writer.write(batch).catch(this.#onError);
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
    this.#writer.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#done,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
    clearTimeout(timer);
  }

  /** Settles once the write pipe ended (never rejects). */
  get done(): Promise<void> {
    return this.#done;
  }
}

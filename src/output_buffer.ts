/**
 * The bounded, sequence-numbered replay buffer behind an atom's output.
 *
 * @module
 */
import type {
  ReplayBudget,
  ReplayBudgetMember,
  ReplayBudgetShare,
} from "./replay_budget.ts";

/**
 * One piece of an atom's output.
 *
 * `seq` counts chunks from 0 per atom. `truncated` is present only on the
 * first chunk a reader gets after a gap: it is the number of chunks right
 * before this one that were dropped from the replay buffer (its byte cap was
 * reached while nobody was reading), so `seq - truncated` is where the reader
 * wanted to resume.
 *
 * @example
 * ```ts
 * import type { OutputChunk } from "@pyproxy/pyproxy";
 * const chunk: OutputChunk = { fd: 1, data: "hello\n", seq: 0 };
 * console.log(chunk.data);
 * ```
 */
export interface OutputChunk {
  /** 1 for stdout, 2 for stderr. */
  fd: 1 | 2;
  /** The text, possibly several writes coalesced. */
  data: string;
  /** The chunk's sequence number (0, 1, 2, ... per atom). */
  seq: number;
  /** Number of chunks missing right before this one (only after a gap). */
  truncated?: number;
}

/**
 * Options for {@linkcode OutputBuffer}.
 *
 * @example
 * ```ts
 * import type { OutputBufferOptions } from "@pyproxy/pyproxy";
 * const options: OutputBufferOptions = { maxBytes: 1024, onAck: (seq) => console.log("ack", seq) };
 * console.log(options.maxBytes);
 * ```
 */
export interface OutputBufferOptions {
  /**
   * The most output kept for replay, counted in UTF-16 code units of `data`
   * (≈ bytes for ASCII). The newest chunk is always kept.
   *
   * @default {8388608}
   */
  maxBytes?: number;
  /**
   * Called when the acknowledged sequence number advances: every chunk up to
   * `seq` was delivered to all attached readers, or stored while none was
   * attached. The producer may send more output.
   */
  onAck?: (seq: number) => void;
  /**
   * A bound shared with other buffers (a pool's running evals share one):
   * past it, the buffers holding the most drop their oldest chunks, as past
   * `maxBytes`. The buffer counts in it from its first chunk until
   * {@linkcode OutputBuffer.end}.
   */
  budget?: ReplayBudget;
}

interface Reader {
  /** The next sequence number this reader wants. */
  cursor: number;
  /** Pulled at least once and not cancelled: its pace holds back acks. */
  attached: boolean;
  wake: (() => void) | undefined;
}

/**
 * Keeps an atom's output chunks for live readers and late replay, within a
 * byte cap. Readers that are attached (reading) apply backpressure: a chunk is
 * acknowledged only once every attached reader has taken it, so their chunks
 * are never dropped. With no attached reader every chunk is acknowledged as it
 * is stored and the oldest chunks are dropped beyond the cap, so memory stays
 * bounded and the producer never stalls.
 *
 * @example Replay from a sequence number
 * ```ts
 * import { OutputBuffer } from "@pyproxy/pyproxy";
 * const buffer = new OutputBuffer();
 * buffer.push({ fd: 1, data: "a", seq: 0 });
 * buffer.push({ fd: 1, data: "b", seq: 1 });
 * buffer.end();
 * for await (const chunk of buffer.readable(1)) console.log(chunk.data); // "b"
 * ```
 */
export class OutputBuffer implements ReplayBudgetMember {
  #chunks: OutputChunk[] = [];
  #head = 0;
  #bytes = 0;
  #maxBytes: number;
  #nextSeq = 0;
  #acked = -1;
  #dropped = 0;
  #ended = false;
  #readers = new Set<Reader>();
  #onAck: ((seq: number) => void) | undefined;
  #budget: ReplayBudget | undefined;
  #share: ReplayBudgetShare | undefined;

  /** Creates an empty buffer. */
  constructor(options: OutputBufferOptions = {}) {
    const maxBytes = options.maxBytes ?? 8 * 1024 * 1024;
    if (!(maxBytes >= 0)) {
      throw new RangeError(
        `Cannot create output buffer: maxBytes ${maxBytes} < 0`,
      );
    }
    this.#maxBytes = maxBytes;
    this.#onAck = options.onAck;
    this.#budget = options.budget;
  }

  /** Output currently kept, in UTF-16 code units. */
  get bytes(): number {
    return this.#bytes;
  }

  /** The sequence number the next pushed chunk is expected to carry. */
  get nextSeq(): number {
    return this.#nextSeq;
  }

  /** The oldest sequence number still kept (equals `nextSeq` when empty). */
  get firstSeq(): number {
    return this.#chunks[this.#head]?.seq ?? this.#nextSeq;
  }

  /** Number of chunks dropped for the byte cap. */
  get dropped(): number {
    return this.#dropped;
  }

  /** The highest acknowledged sequence number (-1 for none). */
  get acked(): number {
    return this.#acked;
  }

  /** True once {@linkcode OutputBuffer.end} was called. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Stores a chunk (sequence numbers must increase) and wakes readers. */
  push(chunk: OutputChunk): void {
    if (this.#ended) return;
    if (chunk.seq < this.#nextSeq) return; // a duplicate: keep the first copy
    // Joined at the first chunk: evals still queued hold nothing to count.
    if (this.#share === undefined && this.#budget !== undefined) {
      this.#share = this.#budget.join(this);
    }
    this.#chunks.push(chunk);
    this.#bytes += chunk.data.length;
    this.#nextSeq = chunk.seq + 1;
    this.#evict(this.#maxBytes);
    // After its own cap's drops (reported as they happen): the budget sees
    // the net growth, and shrinks the largest buffers only past its bound.
    this.#share?.add(chunk.data.length);
    this.#wakeAll();
    this.#updateAck();
  }

  /** Marks the end of output: readers close after the last chunk. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    // Complete now: what it keeps is bounded by whoever keeps it (a pool's
    // registry of finished atoms), no longer by the budget of running ones.
    this.#share?.leave();
    this.#share = undefined;
    this.#budget = undefined;
    this.#wakeAll();
  }

  /**
   * Drops the oldest chunks until at most `limit` code units are kept, as
   * far as the buffer may: never its newest chunk, nor a chunk an attached
   * reader has not taken yet (called by its {@linkcode ReplayBudget}).
   */
  shrink(limit: number): void {
    this.#evict(Math.min(limit, this.#maxBytes));
  }

  /**
   * A stream of the chunks from `fromSeq` on: the kept ones, then live ones
   * until {@linkcode OutputBuffer.end}. A chunk after a gap carries `truncated`.
   */
  readable(fromSeq = 0): ReadableStream<OutputChunk> {
    const reader: Reader = {
      cursor: Math.max(0, Math.floor(fromSeq)),
      attached: false,
      wake: undefined,
    };
    const detach = (): void => {
      reader.attached = false;
      this.#readers.delete(reader);
      this.#evict(this.#maxBytes);
      // What it held back may go now, if the shared budget is over.
      this.#share?.add(0);
      this.#updateAck();
    };
    this.#readers.add(reader);
    return new ReadableStream<OutputChunk>({
      pull: async (controller) => {
        if (!reader.attached && this.#readers.has(reader)) {
          reader.attached = true;
          this.#updateAck();
        }
        for (;;) {
          const chunk = this.#next(reader);
          if (chunk) {
            controller.enqueue(chunk);
            this.#evict(this.#maxBytes);
            // Taken: what it held back may go, if the shared budget is over
            // (the budget asks again a buffer that reports, not one that
            // could drop nothing when last asked).
            this.#share?.add(0);
            this.#updateAck();
            return;
          }
          if (this.#ended) {
            detach();
            controller.close();
            return;
          }
          await new Promise<void>((resolve) => reader.wake = resolve);
          reader.wake = undefined;
        }
      },
      cancel: detach,
    }, { highWaterMark: 0 });
  }

  /** The chunk at or after the reader's cursor, advancing it. */
  #next(reader: Reader): OutputChunk | undefined {
    const first = this.#chunks[this.#head];
    if (!first || reader.cursor >= this.#nextSeq) return undefined;
    // Sequence numbers are contiguous, so the index is direct when no gap.
    let index = this.#head + Math.max(0, reader.cursor - first.seq);
    while (
      index < this.#chunks.length && this.#chunks[index]!.seq < reader.cursor
    ) index++;
    const chunk = this.#chunks[index];
    if (!chunk) return undefined;
    const missing = chunk.seq - reader.cursor;
    reader.cursor = chunk.seq + 1;
    return missing > 0 ? { ...chunk, truncated: missing } : chunk;
  }

  #evict(limit: number): void {
    while (this.#bytes > limit && this.#chunks.length - this.#head > 1) {
      const front = this.#chunks[this.#head]!;
      for (const reader of this.#readers) {
        // An attached reader's undelivered chunks are held by backpressure
        // (bounded by the producer's window), never dropped.
        if (reader.attached && reader.cursor <= front.seq) return;
      }
      this.#chunks[this.#head] = undefined as unknown as OutputChunk;
      this.#head++;
      this.#bytes -= front.data.length;
      this.#dropped++;
      this.#share?.add(-front.data.length);
    }
    if (this.#head > 1024 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#head = 0;
    }
  }

  #updateAck(): void {
    let acked = this.#nextSeq - 1;
    for (const reader of this.#readers) {
      if (reader.attached) acked = Math.min(acked, reader.cursor - 1);
    }
    if (acked > this.#acked) {
      this.#acked = acked;
      this.#onAck?.(acked);
    }
  }

  #wakeAll(): void {
    for (const reader of this.#readers) reader.wake?.();
  }
}

/**
 * The frame decoding state machine (bytes → frames).
 *
 * @module
 */
import { FrameError } from "../errors.ts";
import {
  BEGIN_MARKER,
  CHECKSUM_OFFSET,
  DEFAULT_MAX_FRAME_SIZE,
  type Frame,
  HEADER_SIZE,
  LENGTH_OFFSET,
  TRAILER_SIZE,
  VERSION,
} from "./frame.ts";

/**
 * The decoding state machine behind {@linkcode FrameDecoderStream}, usable
 * without stream plumbing (the `Session` read loop calls it directly, one
 * pipe stage less per read). `push` returns the frames completed by a chunk
 * (views into it when a frame lies inside it) and throws a `FrameError` on
 * bad input; `end` throws when the input stopped inside a frame.
 *
 * @example
 * ```ts
 * import { FrameDecoder } from "@pyproxy/pyproxy";
 * const decoder = new FrameDecoder(1024);
 * console.log(decoder.push(new Uint8Array()).length); // 0
 * decoder.end();
 * ```
 */
export class FrameDecoder {
  #maxFrameSize: number;
  /** Header bytes gathered so far when a header spans chunks. */
  #header = new Uint8Array(HEADER_SIZE);
  #headerFill = 0;
  /** The exact-size buffer of a frame spanning chunks (header included), and how much of it is filled. */
  #partial: Uint8Array | undefined;
  #partialFill = 0;

  /** Creates a decoder accepting payloads of at most `maxFrameSize` bytes. */
  constructor(maxFrameSize: number = DEFAULT_MAX_FRAME_SIZE) {
    if (!(maxFrameSize >= 0 && maxFrameSize <= 0xffffffff)) {
      throw new RangeError(
        `Cannot create frame decoder: maxFrameSize ${maxFrameSize} is out of range`,
      );
    }
    this.#maxFrameSize = maxFrameSize;
  }

  /** Whether part of a frame is buffered (a frame is being received). */
  get inFrame(): boolean {
    return this.#headerFill > 0 || this.#partial !== undefined;
  }

  /** Decodes the frames completed by `chunk`. */
  push(chunk: Uint8Array): Frame[] {
    const frames: Frame[] = [];
    let pos = 0;
    const n = chunk.length;
    if (this.#headerFill > 0 || this.#partial !== undefined) {
      pos = this.#continue(chunk, frames);
      if (pos < 0) return frames;
    }
    while (pos < n) {
      const avail = n - pos;
      if (avail < HEADER_SIZE) {
        checkPrefix(chunk, pos, avail);
        this.#header.set(chunk.subarray(pos), 0);
        this.#headerFill = avail;
        break;
      }
      const length = this.#checkHeader(chunk, pos);
      const total = HEADER_SIZE + length + TRAILER_SIZE;
      if (avail >= total) {
        frames.push(frameAt(chunk, pos, length));
        pos += total;
      } else {
        this.#partial = new Uint8Array(total);
        this.#partial.set(chunk.subarray(pos), 0);
        this.#partialFill = avail;
        break;
      }
    }
    return frames;
  }

  /** Throws a `FrameError` when the input ended inside a frame. */
  end(): void {
    if (this.#headerFill > 0 || this.#partial !== undefined) {
      throw new FrameError(
        "Cannot decode frame: the stream ended inside a frame",
      );
    }
  }

  /** Feeds the start of `chunk` to the frame in progress; returns where whole frames resume, or -1 when the chunk is used up. */
  #continue(chunk: Uint8Array, frames: Frame[]): number {
    let pos = 0;
    if (this.#partial === undefined) {
      const take = Math.min(HEADER_SIZE - this.#headerFill, chunk.length);
      this.#header.set(chunk.subarray(0, take), this.#headerFill);
      this.#headerFill += take;
      pos = take;
      if (this.#headerFill < HEADER_SIZE) {
        checkPrefix(this.#header, 0, this.#headerFill);
        return -1;
      }
      this.#headerFill = 0;
      const length = this.#checkHeader(this.#header, 0);
      this.#partial = new Uint8Array(HEADER_SIZE + length + TRAILER_SIZE);
      this.#partial.set(this.#header, 0);
      this.#partialFill = HEADER_SIZE;
    }
    const partial = this.#partial;
    const take = Math.min(
      partial.length - this.#partialFill,
      chunk.length - pos,
    );
    partial.set(chunk.subarray(pos, pos + take), this.#partialFill);
    this.#partialFill += take;
    pos += take;
    if (this.#partialFill < partial.length) return -1;
    this.#partial = undefined;
    this.#partialFill = 0;
    frames.push(
      frameAt(partial, 0, partial.length - HEADER_SIZE - TRAILER_SIZE),
    );
    return pos;
  }

  /** Validates a complete header at `pos`; returns the payload length. */
  #checkHeader(buf: Uint8Array, pos: number): number {
    checkPrefix(buf, pos, HEADER_SIZE);
    const p = pos + LENGTH_OFFSET;
    const length = ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) |
      buf[p + 3]!) >>> 0;
    if (length > this.#maxFrameSize) {
      throw new FrameError(
        `Cannot decode frame: length ${length} exceeds the limit of ${this.#maxFrameSize} bytes`,
      );
    }
    return length;
  }
}

/** Fails as soon as the first bytes of a header are wrong, without waiting for the rest. */
function checkPrefix(buf: Uint8Array, pos: number, avail: number): void {
  const m = Math.min(avail, 4);
  for (let i = 0; i < m; i++) {
    if (buf[pos + i] !== BEGIN_MARKER.charCodeAt(i)) {
      throw new FrameError(
        `Cannot decode frame: bad begin marker (byte ${i} is ${buf[pos + i]})`,
      );
    }
  }
  if (avail > 4 && buf[pos + 4] !== VERSION) {
    throw new FrameError(
      `Cannot decode frame: unsupported version ${buf[pos + 4]}`,
    );
  }
}

/** The frame of a complete, header-checked frame at `pos`; checks its end marker. */
function frameAt(buf: Uint8Array, pos: number, length: number): Frame {
  const c = pos + CHECKSUM_OFFSET;
  const t = pos + HEADER_SIZE + length;
  for (let i = 0; i < TRAILER_SIZE; i++) {
    if (buf[c + i] !== buf[t + i]) {
      throw new FrameError(
        "Cannot decode frame: the end marker does not match the checksum",
      );
    }
  }
  return {
    checksum: buf.subarray(c, c + 16),
    payload: buf.subarray(pos + HEADER_SIZE, t),
  };
}

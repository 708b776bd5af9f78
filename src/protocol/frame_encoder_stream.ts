/**
 * Frames → bytes, the last stage of the write side.
 *
 * @module
 */
import { FrameError } from "../errors.ts";
import {
  CHECKSUM_OFFSET,
  type Frame,
  HEADER_SIZE,
  LENGTH_OFFSET,
  TRAILER_SIZE,
  VERSION,
} from "./frame.ts";

/**
 * Options of {@linkcode FrameEncoderStream}.
 *
 * @example
 * ```ts
 * import { FrameEncoderStream } from "@pyproxy/pyproxy";
 * const encoder = new FrameEncoderStream({ maxFrameSize: 16 * 1024 * 1024 });
 * console.log(encoder.writable instanceof WritableStream); // true
 * ```
 */
export interface FrameEncoderStreamOptions {
  /**
   * The largest payload written; a bigger one errors the stream with a
   * `FrameError` (the peer would drop the connection anyway). Callers that
   * must keep the stream check sizes before writing.
   *
   * @default {4294967295}
   */
  maxFrameSize?: number;
}

/**
 * Writes a batch of frames as ONE `Uint8Array` (its size is computed first and
 * it is allocated once), so a batch costs one write on the socket.
 *
 * @example
 * ```ts
 * import { FrameEncoderStream } from "@pyproxy/pyproxy";
 * const frame = { checksum: new Uint8Array(16), payload: new TextEncoder().encode("{}") };
 * const [bytes] = await Array.fromAsync(ReadableStream.from([[frame, frame]]).pipeThrough(new FrameEncoderStream()));
 * console.log(bytes!.length); // 86
 * ```
 */
export class FrameEncoderStream extends TransformStream<Frame[], Uint8Array> {
  /** Creates the stage. */
  constructor(options: FrameEncoderStreamOptions = {}) {
    const max = options.maxFrameSize ?? 0xffffffff;
    super({
      transform(frames, controller) {
        if (frames.length === 0) return;
        controller.enqueue(encodeFrames(frames, max));
      },
    });
  }
}

/**
 * The logic of {@linkcode FrameEncoderStream} as a plain function: the
 * frames of a batch in one `Uint8Array`. Throws a `FrameError` when a
 * payload is longer than `max`.
 *
 * @example
 * ```ts
 * import { encodeFrames } from "@pyproxy/pyproxy";
 * const frame = { checksum: new Uint8Array(16), payload: new TextEncoder().encode("{}") };
 * console.log(encodeFrames([frame]).length); // 43
 * ```
 */
export function encodeFrames(frames: Frame[], max = 0xffffffff): Uint8Array {
  let total = 0;
  for (let i = 0; i < frames.length; i++) {
    const length = frames[i]!.payload.length;
    if (length > max) {
      throw new FrameError(
        `Cannot encode frame: length ${length} exceeds the limit of ${max} bytes`,
      );
    }
    total += HEADER_SIZE + length + TRAILER_SIZE;
  }
  const out = new Uint8Array(total);
  let pos = 0;
  for (let i = 0; i < frames.length; i++) {
    const { checksum, payload } = frames[i]!;
    const length = payload.length;
    out[pos] = 0x50; // "PYPX"
    out[pos + 1] = 0x59;
    out[pos + 2] = 0x50;
    out[pos + 3] = 0x58;
    out[pos + 4] = VERSION;
    out.set(checksum, pos + CHECKSUM_OFFSET);
    const p = pos + LENGTH_OFFSET;
    out[p] = length >>> 24;
    out[p + 1] = length >>> 16;
    out[p + 2] = length >>> 8;
    out[p + 3] = length;
    out.set(payload, pos + HEADER_SIZE);
    out.set(checksum, pos + HEADER_SIZE + length);
    pos += HEADER_SIZE + length + TRAILER_SIZE;
  }
  return out;
}

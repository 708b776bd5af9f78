/**
 * Bytes → frames, the first stage of the read side.
 *
 * @module
 */
import { DEFAULT_MAX_FRAME_SIZE, type Frame } from "./frame.ts";
import { FrameDecoder } from "./frame_decoder.ts";

/**
 * Options of {@linkcode FrameDecoderStream}.
 *
 * @example
 * ```ts
 * import { FrameDecoderStream } from "@pyproxy/pyproxy";
 * const decoder = new FrameDecoderStream({ maxFrameSize: 16 * 1024 * 1024 });
 * console.log(decoder.readable instanceof ReadableStream); // true
 * ```
 */
export interface FrameDecoderStreamOptions {
  /**
   * The largest payload accepted, in bytes. A header announcing more errors
   * the stream before anything is allocated.
   *
   * @default {67108864}
   */
  maxFrameSize?: number;
}

/**
 * Splits a byte stream into frames. Batch-oriented: every input chunk gives
 * one output array with every frame completed by that chunk (chunks that
 * complete none give nothing).
 *
 * A frame that lies inside one chunk is returned as views into that chunk (no
 * copy). A frame spanning chunks is assembled into one buffer of its exact
 * size, allocated once its header is known, so arbitrary chunking (down to
 * one byte per chunk) costs linear time. A bad begin marker, version or end
 * marker, a length above `maxFrameSize` or a stream that ends inside a frame
 * errors the stream with a `FrameError`: the connection cannot be resynchronised.
 *
 * @example Decode two frames from one chunk
 * ```ts
 * import { FrameDecoderStream, FrameEncoderStream } from "@pyproxy/pyproxy";
 * const frame = { checksum: new Uint8Array(16), payload: new TextEncoder().encode("{}") };
 * const bytes = await new Response(
 *   ReadableStream.from([[frame, frame]]).pipeThrough(new FrameEncoderStream()),
 * ).bytes();
 * const batches = await Array.fromAsync(ReadableStream.from([bytes]).pipeThrough(new FrameDecoderStream()));
 * console.log(batches[0]!.length); // 2
 * ```
 */
export class FrameDecoderStream extends TransformStream<Uint8Array, Frame[]> {
  /** Creates the stage. */
  constructor(options: FrameDecoderStreamOptions = {}) {
    const decoder = new FrameDecoder(
      options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE,
    );
    super({
      transform(chunk, controller) {
        const frames = decoder.push(chunk);
        if (frames.length > 0) controller.enqueue(frames);
      },
      flush() {
        decoder.end();
      },
    });
  }
}

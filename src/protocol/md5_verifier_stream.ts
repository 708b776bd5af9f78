/**
 * Frames → verified payloads, the second stage of the read side.
 *
 * @module
 */
import { ChecksumError } from "../errors.ts";
import type { Frame } from "./frame.ts";
import { createMd5, type Md5 } from "./md5.ts";

/** Options of {@linkcode Md5VerifierStream}. */
export interface Md5VerifierStreamOptions {
  /**
   * The hasher to use.
   *
   * @default {createMd5()}
   */
  md5?: Md5;
}

/**
 * Checks each frame's payload against its MD5 checksum. A mismatch is
 * recoverable (the frame length was trusted, the stream is still aligned), so
 * it becomes a `ChecksumError` item in the batch instead of a stream error.
 *
 * @example
 * ```ts
 * import { ChecksumError } from "../errors.ts";
 * import { Md5VerifierStream } from "./md5_verifier_stream.ts";
 * const frame = { checksum: new Uint8Array(16), payload: new TextEncoder().encode("{}") };
 * const [batch] = await Array.fromAsync(ReadableStream.from([[frame]]).pipeThrough(new Md5VerifierStream()));
 * console.log(batch![0] instanceof ChecksumError); // true
 * ```
 */
export class Md5VerifierStream
  extends TransformStream<Frame[], Array<Uint8Array | ChecksumError>> {
  /** Creates the stage. */
  constructor(options: Md5VerifierStreamOptions = {}) {
    const md5 = options.md5 ?? createMd5();
    const digest = new Uint8Array(16);
    super({
      transform(frames, controller) {
        const out = new Array<Uint8Array | ChecksumError>(frames.length);
        for (let i = 0; i < frames.length; i++) {
          const { checksum, payload } = frames[i]!;
          md5(payload, digest, 0);
          out[i] = equal16(digest, checksum) ? payload : new ChecksumError(
            `Cannot verify frame: md5 of the ${payload.length}-byte payload does not match its checksum`,
          );
        }
        controller.enqueue(out);
      },
    });
  }
}

function equal16(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return b.length === 16;
}

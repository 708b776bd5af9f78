/**
 * Frames → verified payloads, the second stage of the read side.
 *
 * @module
 */
import { ChecksumError } from "../errors.ts";
import type { Frame } from "./frame.ts";
import { createMd5, type Md5 } from "./md5.ts";

/**
 * Options of {@linkcode Md5VerifierStream}.
 *
 * @example
 * ```ts
 * import { createMd5 } from "@pyproxy/pyproxy";
 * import { Md5VerifierStream } from "@pyproxy/pyproxy";
 * const verifier = new Md5VerifierStream({ md5: createMd5() });
 * console.log(verifier.readable instanceof ReadableStream); // true
 * ```
 */
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
 * import { ChecksumError } from "@pyproxy/pyproxy";
 * import { Md5VerifierStream } from "@pyproxy/pyproxy";
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
          out[i] = verifyFrame(frames[i]!, md5, digest);
        }
        controller.enqueue(out);
      },
    });
  }
}

/**
 * The logic of {@linkcode Md5VerifierStream} for one frame, as a plain
 * function: its payload, or a `ChecksumError` when the MD5 does not match.
 * `digest` is 16 bytes of scratch space, reused between calls.
 *
 * @example
 * ```ts
 * import { createMd5 } from "@pyproxy/pyproxy";
 * import { verifyFrame } from "@pyproxy/pyproxy";
 * const frame = { checksum: new Uint8Array(16), payload: new Uint8Array() };
 * console.log(verifyFrame(frame, createMd5(), new Uint8Array(16)) instanceof Error); // true
 * ```
 */
export function verifyFrame(
  frame: Frame,
  md5: Md5,
  digest: Uint8Array,
): Uint8Array | ChecksumError {
  const { checksum, payload } = frame;
  md5(payload, digest, 0);
  return equal16(digest, checksum) ? payload : new ChecksumError(
    `Cannot verify frame: md5 of the ${payload.length}-byte payload does not match its checksum`,
  );
}

function equal16(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false;
  return b.length === 16;
}

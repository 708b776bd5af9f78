/**
 * Payloads → frames, the middle stage of the write side.
 *
 * @module
 */
import type { Frame } from "./frame.ts";
import { createMd5, type Md5 } from "./md5.ts";

/** Options of {@linkcode Md5SignerStream}. */
export interface Md5SignerStreamOptions {
  /**
   * The hasher to use.
   *
   * @default {createMd5()}
   */
  md5?: Md5;
}

/**
 * Computes the MD5 checksum of each payload of a batch. The checksums of a
 * batch share one allocation.
 *
 * @example
 * ```ts
 * import { Md5SignerStream } from "./md5_signer_stream.ts";
 * const [frames] = await Array.fromAsync(ReadableStream.from([[new Uint8Array()]]).pipeThrough(new Md5SignerStream()));
 * console.log(frames![0]!.checksum.length); // 16
 * ```
 */
export class Md5SignerStream extends TransformStream<Uint8Array[], Frame[]> {
  /** Creates the stage. */
  constructor(options: Md5SignerStreamOptions = {}) {
    const md5 = options.md5 ?? createMd5();
    super({
      transform(payloads, controller) {
        const n = payloads.length;
        const sums = new Uint8Array(16 * n);
        const frames = new Array<Frame>(n);
        for (let i = 0; i < n; i++) {
          const payload = payloads[i]!;
          md5(payload, sums, 16 * i);
          frames[i] = { checksum: sums.subarray(16 * i, 16 * i + 16), payload };
        }
        controller.enqueue(frames);
      },
    });
  }
}

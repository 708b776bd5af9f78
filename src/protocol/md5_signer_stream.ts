/**
 * Payloads → frames, the middle stage of the write side.
 *
 * @module
 */
import type { Frame } from "./frame.ts";
import { createMd5, type Md5 } from "./md5.ts";

/**
 * Options of {@linkcode Md5SignerStream}.
 *
 * @example
 * ```ts
 * import { createMd5 } from "@pyproxy/pyproxy";
 * import { Md5SignerStream } from "@pyproxy/pyproxy";
 * const signer = new Md5SignerStream({ md5: createMd5({ nativeThreshold: Infinity }) });
 * console.log(signer.readable instanceof ReadableStream); // true
 * ```
 */
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
 * import { Md5SignerStream } from "@pyproxy/pyproxy";
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
        controller.enqueue(signPayloads(payloads, md5));
      },
    });
  }
}

/**
 * The logic of {@linkcode Md5SignerStream} as a plain function: the frames
 * of `payloads`, their checksums sharing one allocation.
 *
 * @example
 * ```ts
 * import { createMd5 } from "@pyproxy/pyproxy";
 * import { signPayloads } from "@pyproxy/pyproxy";
 * console.log(signPayloads([new Uint8Array()], createMd5())[0]!.checksum.length); // 16
 * ```
 */
export function signPayloads(payloads: Uint8Array[], md5: Md5): Frame[] {
  const n = payloads.length;
  const sums = new Uint8Array(16 * n);
  const frames = new Array<Frame>(n);
  for (let i = 0; i < n; i++) {
    const payload = payloads[i]!;
    md5(payload, sums, 16 * i);
    frames[i] = { checksum: sums.subarray(16 * i, 16 * i + 16), payload };
  }
  return frames;
}

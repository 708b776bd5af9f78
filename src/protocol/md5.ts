/**
 * MD5, the frame checksum of the wire protocol (docs/protocol.md §2): the one
 * place to make hashing fast.
 *
 * `node:crypto` costs a fixed ~2 µs per call in Deno, which dominates small
 * frames, so small inputs are hashed by an unrolled pure TypeScript MD5 and
 * large ones by `node:crypto` (see {@linkcode MD5_NATIVE_THRESHOLD}).
 *
 * @module
 */
import { createHash } from "node:crypto";

/**
 * Hashes `data` and writes the 16-byte digest into `out` at `offset` (a fresh
 * 16-byte array when `out` is omitted); returns `out`.
 *
 * @example
 * ```ts
 * import { createMd5, type Md5 } from "@pyproxy/pyproxy";
 * const hash: Md5 = createMd5();
 * console.log(hash(new TextEncoder().encode("abc")).length); // 16
 * ```
 */
export type Md5 = (
  data: Uint8Array,
  out?: Uint8Array,
  offset?: number,
) => Uint8Array;

/**
 * Inputs of at least this many bytes are hashed with `node:crypto`, smaller
 * ones in TypeScript (measured with `bench/md5_bench.ts`: the native hash
 * wins only once its per-call overhead is amortised).
 *
 * @example
 * ```ts
 * import { MD5_NATIVE_THRESHOLD } from "@pyproxy/pyproxy";
 * console.log(MD5_NATIVE_THRESHOLD > 0);
 * ```
 */
export const MD5_NATIVE_THRESHOLD = 16384;

/**
 * Options of {@linkcode createMd5}.
 *
 * @example
 * ```ts
 * import { createMd5 } from "@pyproxy/pyproxy";
 * // Always the TypeScript implementation, e.g. to compare it with node:crypto.
 * const md5 = createMd5({ nativeThreshold: Infinity });
 * console.log(md5(new Uint8Array(3)).length); // 16
 * ```
 */
export interface CreateMd5Options {
  /**
   * Inputs of at least this many bytes go to `node:crypto`. `Infinity` forces
   * the TypeScript implementation, `0` the native one.
   *
   * @default {MD5_NATIVE_THRESHOLD}
   */
  nativeThreshold?: number;
}

/**
 * Creates an MD5 hasher with its own scratch state (one per stream stage, so
 * nothing is shared between streams and no module state is mutated).
 *
 * @example Hash a payload
 * ```ts
 * import { createMd5 } from "@pyproxy/pyproxy";
 * const md5 = createMd5();
 * const hex = Array.from(md5(new Uint8Array()), (b) => b.toString(16).padStart(2, "0")).join("");
 * console.log(hex); // "d41d8cd98f00b204e9800998ecf8427e"
 * ```
 */
export function createMd5(options: CreateMd5Options = {}): Md5 {
  const threshold = options.nativeThreshold ?? MD5_NATIVE_THRESHOLD;
  const state = new Int32Array(4);
  // The last partial block plus padding and length: at most two blocks.
  const tail = new Uint8Array(128);

  function blocks(m: Uint8Array, start: number, end: number): void {
    let a = state[0]!;
    let b = state[1]!;
    let c = state[2]!;
    let d = state[3]!;
    for (let o = start; o < end; o += 64) {
      const x0 = m[o + 0]! | (m[o + 1]! << 8) | (m[o + 2]! << 16) |
        (m[o + 3]! << 24);
      const x1 = m[o + 4]! | (m[o + 5]! << 8) | (m[o + 6]! << 16) |
        (m[o + 7]! << 24);
      const x2 = m[o + 8]! | (m[o + 9]! << 8) | (m[o + 10]! << 16) |
        (m[o + 11]! << 24);
      const x3 = m[o + 12]! | (m[o + 13]! << 8) | (m[o + 14]! << 16) |
        (m[o + 15]! << 24);
      const x4 = m[o + 16]! | (m[o + 17]! << 8) | (m[o + 18]! << 16) |
        (m[o + 19]! << 24);
      const x5 = m[o + 20]! | (m[o + 21]! << 8) | (m[o + 22]! << 16) |
        (m[o + 23]! << 24);
      const x6 = m[o + 24]! | (m[o + 25]! << 8) | (m[o + 26]! << 16) |
        (m[o + 27]! << 24);
      const x7 = m[o + 28]! | (m[o + 29]! << 8) | (m[o + 30]! << 16) |
        (m[o + 31]! << 24);
      const x8 = m[o + 32]! | (m[o + 33]! << 8) | (m[o + 34]! << 16) |
        (m[o + 35]! << 24);
      const x9 = m[o + 36]! | (m[o + 37]! << 8) | (m[o + 38]! << 16) |
        (m[o + 39]! << 24);
      const x10 = m[o + 40]! | (m[o + 41]! << 8) | (m[o + 42]! << 16) |
        (m[o + 43]! << 24);
      const x11 = m[o + 44]! | (m[o + 45]! << 8) | (m[o + 46]! << 16) |
        (m[o + 47]! << 24);
      const x12 = m[o + 48]! | (m[o + 49]! << 8) | (m[o + 50]! << 16) |
        (m[o + 51]! << 24);
      const x13 = m[o + 52]! | (m[o + 53]! << 8) | (m[o + 54]! << 16) |
        (m[o + 55]! << 24);
      const x14 = m[o + 56]! | (m[o + 57]! << 8) | (m[o + 58]! << 16) |
        (m[o + 59]! << 24);
      const x15 = m[o + 60]! | (m[o + 61]! << 8) | (m[o + 62]! << 16) |
        (m[o + 63]! << 24);
      const aa = a;
      const bb = b;
      const cc = c;
      const dd = d;
      a = (a + (d ^ (b & (c ^ d))) + x0 + -0x28955b88) | 0;
      a = (((a << 7) | (a >>> 25)) + b) | 0;
      d = (d + (c ^ (a & (b ^ c))) + x1 + -0x173848aa) | 0;
      d = (((d << 12) | (d >>> 20)) + a) | 0;
      c = (c + (b ^ (d & (a ^ b))) + x2 + 0x242070db) | 0;
      c = (((c << 17) | (c >>> 15)) + d) | 0;
      b = (b + (a ^ (c & (d ^ a))) + x3 + -0x3e423112) | 0;
      b = (((b << 22) | (b >>> 10)) + c) | 0;
      a = (a + (d ^ (b & (c ^ d))) + x4 + -0x0a83f051) | 0;
      a = (((a << 7) | (a >>> 25)) + b) | 0;
      d = (d + (c ^ (a & (b ^ c))) + x5 + 0x4787c62a) | 0;
      d = (((d << 12) | (d >>> 20)) + a) | 0;
      c = (c + (b ^ (d & (a ^ b))) + x6 + -0x57cfb9ed) | 0;
      c = (((c << 17) | (c >>> 15)) + d) | 0;
      b = (b + (a ^ (c & (d ^ a))) + x7 + -0x02b96aff) | 0;
      b = (((b << 22) | (b >>> 10)) + c) | 0;
      a = (a + (d ^ (b & (c ^ d))) + x8 + 0x698098d8) | 0;
      a = (((a << 7) | (a >>> 25)) + b) | 0;
      d = (d + (c ^ (a & (b ^ c))) + x9 + -0x74bb0851) | 0;
      d = (((d << 12) | (d >>> 20)) + a) | 0;
      c = (c + (b ^ (d & (a ^ b))) + x10 + -0x0000a44f) | 0;
      c = (((c << 17) | (c >>> 15)) + d) | 0;
      b = (b + (a ^ (c & (d ^ a))) + x11 + -0x76a32842) | 0;
      b = (((b << 22) | (b >>> 10)) + c) | 0;
      a = (a + (d ^ (b & (c ^ d))) + x12 + 0x6b901122) | 0;
      a = (((a << 7) | (a >>> 25)) + b) | 0;
      d = (d + (c ^ (a & (b ^ c))) + x13 + -0x02678e6d) | 0;
      d = (((d << 12) | (d >>> 20)) + a) | 0;
      c = (c + (b ^ (d & (a ^ b))) + x14 + -0x5986bc72) | 0;
      c = (((c << 17) | (c >>> 15)) + d) | 0;
      b = (b + (a ^ (c & (d ^ a))) + x15 + 0x49b40821) | 0;
      b = (((b << 22) | (b >>> 10)) + c) | 0;
      a = (a + (c ^ (d & (b ^ c))) + x1 + -0x09e1da9e) | 0;
      a = (((a << 5) | (a >>> 27)) + b) | 0;
      d = (d + (b ^ (c & (a ^ b))) + x6 + -0x3fbf4cc0) | 0;
      d = (((d << 9) | (d >>> 23)) + a) | 0;
      c = (c + (a ^ (b & (d ^ a))) + x11 + 0x265e5a51) | 0;
      c = (((c << 14) | (c >>> 18)) + d) | 0;
      b = (b + (d ^ (a & (c ^ d))) + x0 + -0x16493856) | 0;
      b = (((b << 20) | (b >>> 12)) + c) | 0;
      a = (a + (c ^ (d & (b ^ c))) + x5 + -0x29d0efa3) | 0;
      a = (((a << 5) | (a >>> 27)) + b) | 0;
      d = (d + (b ^ (c & (a ^ b))) + x10 + 0x02441453) | 0;
      d = (((d << 9) | (d >>> 23)) + a) | 0;
      c = (c + (a ^ (b & (d ^ a))) + x15 + -0x275e197f) | 0;
      c = (((c << 14) | (c >>> 18)) + d) | 0;
      b = (b + (d ^ (a & (c ^ d))) + x4 + -0x182c0438) | 0;
      b = (((b << 20) | (b >>> 12)) + c) | 0;
      a = (a + (c ^ (d & (b ^ c))) + x9 + 0x21e1cde6) | 0;
      a = (((a << 5) | (a >>> 27)) + b) | 0;
      d = (d + (b ^ (c & (a ^ b))) + x14 + -0x3cc8f82a) | 0;
      d = (((d << 9) | (d >>> 23)) + a) | 0;
      c = (c + (a ^ (b & (d ^ a))) + x3 + -0x0b2af279) | 0;
      c = (((c << 14) | (c >>> 18)) + d) | 0;
      b = (b + (d ^ (a & (c ^ d))) + x8 + 0x455a14ed) | 0;
      b = (((b << 20) | (b >>> 12)) + c) | 0;
      a = (a + (c ^ (d & (b ^ c))) + x13 + -0x561c16fb) | 0;
      a = (((a << 5) | (a >>> 27)) + b) | 0;
      d = (d + (b ^ (c & (a ^ b))) + x2 + -0x03105c08) | 0;
      d = (((d << 9) | (d >>> 23)) + a) | 0;
      c = (c + (a ^ (b & (d ^ a))) + x7 + 0x676f02d9) | 0;
      c = (((c << 14) | (c >>> 18)) + d) | 0;
      b = (b + (d ^ (a & (c ^ d))) + x12 + -0x72d5b376) | 0;
      b = (((b << 20) | (b >>> 12)) + c) | 0;
      a = (a + (b ^ c ^ d) + x5 + -0x0005c6be) | 0;
      a = (((a << 4) | (a >>> 28)) + b) | 0;
      d = (d + (a ^ b ^ c) + x8 + -0x788e097f) | 0;
      d = (((d << 11) | (d >>> 21)) + a) | 0;
      c = (c + (d ^ a ^ b) + x11 + 0x6d9d6122) | 0;
      c = (((c << 16) | (c >>> 16)) + d) | 0;
      b = (b + (c ^ d ^ a) + x14 + -0x021ac7f4) | 0;
      b = (((b << 23) | (b >>> 9)) + c) | 0;
      a = (a + (b ^ c ^ d) + x1 + -0x5b4115bc) | 0;
      a = (((a << 4) | (a >>> 28)) + b) | 0;
      d = (d + (a ^ b ^ c) + x4 + 0x4bdecfa9) | 0;
      d = (((d << 11) | (d >>> 21)) + a) | 0;
      c = (c + (d ^ a ^ b) + x7 + -0x0944b4a0) | 0;
      c = (((c << 16) | (c >>> 16)) + d) | 0;
      b = (b + (c ^ d ^ a) + x10 + -0x41404390) | 0;
      b = (((b << 23) | (b >>> 9)) + c) | 0;
      a = (a + (b ^ c ^ d) + x13 + 0x289b7ec6) | 0;
      a = (((a << 4) | (a >>> 28)) + b) | 0;
      d = (d + (a ^ b ^ c) + x0 + -0x155ed806) | 0;
      d = (((d << 11) | (d >>> 21)) + a) | 0;
      c = (c + (d ^ a ^ b) + x3 + -0x2b10cf7b) | 0;
      c = (((c << 16) | (c >>> 16)) + d) | 0;
      b = (b + (c ^ d ^ a) + x6 + 0x04881d05) | 0;
      b = (((b << 23) | (b >>> 9)) + c) | 0;
      a = (a + (b ^ c ^ d) + x9 + -0x262b2fc7) | 0;
      a = (((a << 4) | (a >>> 28)) + b) | 0;
      d = (d + (a ^ b ^ c) + x12 + -0x1924661b) | 0;
      d = (((d << 11) | (d >>> 21)) + a) | 0;
      c = (c + (d ^ a ^ b) + x15 + 0x1fa27cf8) | 0;
      c = (((c << 16) | (c >>> 16)) + d) | 0;
      b = (b + (c ^ d ^ a) + x2 + -0x3b53a99b) | 0;
      b = (((b << 23) | (b >>> 9)) + c) | 0;
      a = (a + (c ^ (b | ~d)) + x0 + -0x0bd6ddbc) | 0;
      a = (((a << 6) | (a >>> 26)) + b) | 0;
      d = (d + (b ^ (a | ~c)) + x7 + 0x432aff97) | 0;
      d = (((d << 10) | (d >>> 22)) + a) | 0;
      c = (c + (a ^ (d | ~b)) + x14 + -0x546bdc59) | 0;
      c = (((c << 15) | (c >>> 17)) + d) | 0;
      b = (b + (d ^ (c | ~a)) + x5 + -0x036c5fc7) | 0;
      b = (((b << 21) | (b >>> 11)) + c) | 0;
      a = (a + (c ^ (b | ~d)) + x12 + 0x655b59c3) | 0;
      a = (((a << 6) | (a >>> 26)) + b) | 0;
      d = (d + (b ^ (a | ~c)) + x3 + -0x70f3336e) | 0;
      d = (((d << 10) | (d >>> 22)) + a) | 0;
      c = (c + (a ^ (d | ~b)) + x10 + -0x00100b83) | 0;
      c = (((c << 15) | (c >>> 17)) + d) | 0;
      b = (b + (d ^ (c | ~a)) + x1 + -0x7a7ba22f) | 0;
      b = (((b << 21) | (b >>> 11)) + c) | 0;
      a = (a + (c ^ (b | ~d)) + x8 + 0x6fa87e4f) | 0;
      a = (((a << 6) | (a >>> 26)) + b) | 0;
      d = (d + (b ^ (a | ~c)) + x15 + -0x01d31920) | 0;
      d = (((d << 10) | (d >>> 22)) + a) | 0;
      c = (c + (a ^ (d | ~b)) + x6 + -0x5cfebcec) | 0;
      c = (((c << 15) | (c >>> 17)) + d) | 0;
      b = (b + (d ^ (c | ~a)) + x13 + 0x4e0811a1) | 0;
      b = (((b << 21) | (b >>> 11)) + c) | 0;
      a = (a + (c ^ (b | ~d)) + x4 + -0x08ac817e) | 0;
      a = (((a << 6) | (a >>> 26)) + b) | 0;
      d = (d + (b ^ (a | ~c)) + x11 + -0x42c50dcb) | 0;
      d = (((d << 10) | (d >>> 22)) + a) | 0;
      c = (c + (a ^ (d | ~b)) + x2 + 0x2ad7d2bb) | 0;
      c = (((c << 15) | (c >>> 17)) + d) | 0;
      b = (b + (d ^ (c | ~a)) + x9 + -0x14792c6f) | 0;
      b = (((b << 21) | (b >>> 11)) + c) | 0;
      a = (a + aa) | 0;
      b = (b + bb) | 0;
      c = (c + cc) | 0;
      d = (d + dd) | 0;
    }
    state[0] = a;
    state[1] = b;
    state[2] = c;
    state[3] = d;
  }

  return function md5(
    data: Uint8Array,
    out: Uint8Array = new Uint8Array(16),
    offset = 0,
  ): Uint8Array {
    const n = data.length;
    if (n >= threshold) {
      out.set(createHash("md5").update(data).digest(), offset);
      return out;
    }
    state[0] = 0x67452301;
    state[1] = -0x10325477;
    state[2] = -0x67452302;
    state[3] = 0x10325476;
    const full = n - (n % 64);
    blocks(data, 0, full);
    const rest = n - full;
    tail.set(data.subarray(full), 0);
    tail[rest] = 0x80;
    const tailLength = rest < 56 ? 64 : 128;
    tail.fill(0, rest + 1, tailLength - 8);
    // Bit length, little-endian 64-bit (inputs are < 2^32 bytes here).
    const bits = n * 8;
    const lo = bits >>> 0;
    const hi = Math.floor(bits / 0x100000000);
    const p = tailLength - 8;
    tail[p] = lo;
    tail[p + 1] = lo >>> 8;
    tail[p + 2] = lo >>> 16;
    tail[p + 3] = lo >>> 24;
    tail[p + 4] = hi;
    tail[p + 5] = hi >>> 8;
    tail[p + 6] = hi >>> 16;
    tail[p + 7] = hi >>> 24;
    blocks(tail, 0, tailLength);
    for (let i = 0; i < 4; i++) {
      const w = state[i]!;
      const q = offset + i * 4;
      out[q] = w;
      out[q + 1] = w >>> 8;
      out[q + 2] = w >>> 16;
      out[q + 3] = w >>> 24;
    }
    return out;
  };
}

/**
 * The raw 16-byte MD5 digest of `data`. Convenient for one-off hashing; hot
 * paths keep a hasher from {@linkcode createMd5} instead.
 *
 * @example
 * ```ts
 * import { md5 } from "@pyproxy/pyproxy";
 * console.log(md5(new TextEncoder().encode("PYPX")).length); // 16
 * ```
 */
export function md5(data: Uint8Array): Uint8Array {
  return createMd5()(data);
}

/**
 * The whole write side (JSON text → UTF-8 → MD5 → frame) for one batch, in
 * one buffer: what a session writes per flush.
 *
 * @module
 */
import { FrameError } from "../errors.ts";
import {
  CHECKSUM_OFFSET,
  HEADER_SIZE,
  LENGTH_OFFSET,
  TRAILER_SIZE,
  VERSION,
} from "./frame.ts";
import { encodeFrames } from "./frame_encoder_stream.ts";
import type { Md5 } from "./md5.ts";
import { signPayloads } from "./md5_signer_stream.ts";

/** Text up to this many UTF-16 units is encoded straight into the output (sized for 3 bytes per unit). */
const DIRECT_UNITS = 262144;

/**
 * Frames a batch of messages given as JSON text (or as its UTF-8 bytes) into
 * one `Uint8Array`, ready for one socket write. Below 256 Ki UTF-16 units of
 * text, the text is encoded straight into its frame in the output buffer and
 * hashed there: one allocation and no copy per message, against three stages
 * that each allocate (`encodeJsonBatch` → `signPayloads` → `encodeFrames`),
 * which is the same output. Larger batches are encoded exactly first, so the
 * buffer is never oversized by the 3-bytes-per-unit bound. Throws a
 * `FrameError` when a payload is longer than `max` bytes.
 *
 * @example
 * ```ts
 * import { createMd5 } from "@pyproxy/pyproxy";
 * import { encodeMessageFrames } from "@pyproxy/pyproxy";
 * const bytes = encodeMessageFrames(['{"id":1,"cmd":"ping"}'], createMd5(), new TextEncoder());
 * console.log(bytes.length); // 62: 25 header + 21 payload + 16 trailer
 * ```
 */
export function encodeMessageFrames(
  items: ArrayLike<string | Uint8Array>,
  md5: Md5,
  encoder: TextEncoder,
  max = 0xffffffff,
): Uint8Array {
  const n = items.length;
  let units = 0;
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    const item = items[i]!;
    if (typeof item === "string") units += item.length;
    else bytes += item.length;
  }
  if (units > DIRECT_UNITS) {
    const payloads = new Array<Uint8Array>(n);
    for (let i = 0; i < n; i++) {
      const item = items[i]!;
      payloads[i] = typeof item === "string" ? encoder.encode(item) : item;
    }
    return encodeFrames(signPayloads(payloads, md5), max);
  }
  const out = new Uint8Array(
    units * 3 + bytes + n * (HEADER_SIZE + TRAILER_SIZE),
  );
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const item = items[i]!;
    const start = pos + HEADER_SIZE;
    let length: number;
    if (typeof item === "string") {
      length = encoder.encodeInto(item, out.subarray(start)).written;
    } else {
      out.set(item, start);
      length = item.length;
    }
    if (length > max) {
      throw new FrameError(
        `Cannot encode frame: length ${length} exceeds the limit of ${max} bytes`,
      );
    }
    out[pos] = 0x50; // "PYPX"
    out[pos + 1] = 0x59;
    out[pos + 2] = 0x50;
    out[pos + 3] = 0x58;
    out[pos + 4] = VERSION;
    md5(out.subarray(start, start + length), out, pos + CHECKSUM_OFFSET);
    const p = pos + LENGTH_OFFSET;
    out[p] = length >>> 24;
    out[p + 1] = length >>> 16;
    out[p + 2] = length >>> 8;
    out[p + 3] = length;
    out.copyWithin(
      start + length,
      pos + CHECKSUM_OFFSET,
      pos + CHECKSUM_OFFSET + TRAILER_SIZE, // the trailer repeats the checksum
    );
    pos = start + length + TRAILER_SIZE;
  }
  return out.subarray(0, pos);
}

/**
 * Byte and stream helpers for the protocol property and fuzz tests: joining
 * and cutting byte buffers, and running bytes through the host's read side.
 *
 * @module
 */
import {
  FrameDecoderStream,
  JsonDecoderStream,
  Md5VerifierStream,
} from "../src/protocol/mod.ts";
import type { RawItem } from "./_harness.ts";

/** Joins `parts` into one buffer. */
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Cuts `bytes` at `cuts` (taken modulo the length, deduplicated, sorted). */
export function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((
    a,
    b,
  ) => a - b);
  const chunks: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    if (p > prev) chunks.push(bytes.slice(prev, p));
    prev = p;
  }
  return chunks;
}

/**
 * Runs `chunks` through `FrameDecoderStream` → `Md5VerifierStream` →
 * `JsonDecoderStream` and flattens the batches; rejects with the stream error.
 */
export async function decode(
  chunks: Uint8Array[],
  maxFrameSize?: number,
): Promise<RawItem[]> {
  const batches = await Array.fromAsync(
    ReadableStream.from(chunks)
      .pipeThrough(
        new FrameDecoderStream(
          maxFrameSize === undefined ? {} : { maxFrameSize },
        ),
      )
      .pipeThrough(new Md5VerifierStream())
      .pipeThrough(new JsonDecoderStream()),
  );
  return batches.flat();
}

/**
 * The transport of the wire protocol (docs/protocol.md): batch-oriented
 * stream stages between a byte stream and JSON messages.
 *
 * Read side: `FrameDecoderStream` → `Md5VerifierStream` → `JsonDecoderStream`.
 * Write side: `JsonEncoderStream` → `Md5SignerStream` → `FrameEncoderStream`.
 *
 * @example Round-trip one message
 * ```ts
 * import {
 *   FrameDecoderStream, FrameEncoderStream, JsonDecoderStream, JsonEncoderStream, Md5SignerStream, Md5VerifierStream,
 * } from "./mod.ts";
 * const batches = await Array.fromAsync(
 *   ReadableStream.from([[{ id: 1, cmd: "ping" }]])
 *     .pipeThrough(new JsonEncoderStream()).pipeThrough(new Md5SignerStream()).pipeThrough(new FrameEncoderStream())
 *     .pipeThrough(new FrameDecoderStream()).pipeThrough(new Md5VerifierStream()).pipeThrough(new JsonDecoderStream()),
 * );
 * console.log(batches[0]); // [{ id: 1, cmd: "ping" }]
 * ```
 *
 * @module
 */
export * from "./frame.ts";
export * from "./md5.ts";
export * from "./frame_decoder.ts";
export * from "./frame_decoder_stream.ts";
export * from "./md5_verifier_stream.ts";
export * from "./json_decoder_stream.ts";
export * from "./json_encoder_stream.ts";
export * from "./md5_signer_stream.ts";
export * from "./frame_encoder_stream.ts";
export * from "./encode_message_frames.ts";
export * from "./batch_frame.ts";

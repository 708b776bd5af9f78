/**
 * The frame layout of the wire protocol (docs/protocol.md §2):
 *
 * ```text
 * "PYPX" | version (1) | md5 (16) | length (4, big-endian) | payload | md5 (16)
 * ```
 *
 * @module
 */

/**
 * The four ASCII bytes every frame starts with (`50 59 50 58`).
 *
 * @example
 * ```ts
 * import { BEGIN_MARKER } from "@pyproxy/pyproxy";
 * console.log(BEGIN_MARKER.charCodeAt(0)); // 80
 * ```
 */
export const BEGIN_MARKER = "PYPX";

/**
 * The protocol version carried in byte 4 of every frame.
 *
 * @example
 * ```ts
 * import { VERSION } from "@pyproxy/pyproxy";
 * console.log(VERSION); // 1
 * ```
 */
export const VERSION = 1;

/**
 * Bytes before the payload: marker (4) + version (1) + checksum (16) + length (4).
 *
 * @example
 * ```ts
 * import { HEADER_SIZE } from "@pyproxy/pyproxy";
 * console.log(HEADER_SIZE); // 25
 * ```
 */
export const HEADER_SIZE = 25;

/**
 * Bytes after the payload: the checksum again, as the end marker.
 *
 * @example
 * ```ts
 * import { TRAILER_SIZE } from "@pyproxy/pyproxy";
 * console.log(TRAILER_SIZE); // 16
 * ```
 */
export const TRAILER_SIZE = 16;

/**
 * Offset of the checksum field inside the header.
 *
 * @example
 * ```ts
 * import { CHECKSUM_OFFSET } from "@pyproxy/pyproxy";
 * console.log(CHECKSUM_OFFSET); // 5
 * ```
 */
export const CHECKSUM_OFFSET = 5;

/**
 * Offset of the big-endian payload length inside the header.
 *
 * @example
 * ```ts
 * import { LENGTH_OFFSET } from "@pyproxy/pyproxy";
 * console.log(LENGTH_OFFSET); // 21
 * ```
 */
export const LENGTH_OFFSET = 21;

/**
 * The largest payload a receiver accepts unless configured otherwise: 64 MiB.
 *
 * @example
 * ```ts
 * import { DEFAULT_MAX_FRAME_SIZE } from "@pyproxy/pyproxy";
 * console.log(DEFAULT_MAX_FRAME_SIZE); // 67108864
 * ```
 */
export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024 * 1024;

/**
 * One decoded (or to-be-encoded) frame: the 16-byte MD5 from its header and
 * its payload. Both may be views into a larger buffer (the chunk they were
 * read from), so writing into them changes that buffer.
 *
 * @example
 * ```ts
 * import type { Frame } from "@pyproxy/pyproxy";
 * const frame: Frame = { checksum: new Uint8Array(16), payload: new Uint8Array() };
 * console.log(frame.payload.length); // 0
 * ```
 */
export interface Frame {
  /** The 16-byte MD5 digest from the header (the claimed checksum of `payload`). */
  checksum: Uint8Array;
  /** The payload bytes (UTF-8 JSON text). */
  payload: Uint8Array;
}

/**
 * How the cache stores (`MemoryStore`, `RedisStore`)
 * write a value as text and read it back with its types: a value without
 * bytes is its JSON text, as it always was; a value holding bytes (a
 * `Uint8Array`, any `ArrayBuffer` view, an `ArrayBuffer`) is
 * `"$bytes:"` followed by the JSON of `{"value": ..., "$bytes": [paths]}`,
 * its bytes base64 strings at the places the paths name (the steps of
 * docs/protocol.md §3, Bytes). No JSON text starts with `$`, so the marker
 * is never mistaken for a value: a string `"$bytes:…"` is stored as its JSON,
 * `"\"$bytes:…\""`.
 *
 * @module
 */
import {
  decodeBytes,
  holdsBytes,
  mayHoldBytes,
  withBase64,
  writeForWire,
} from "../src/_binary.ts";
import { parseJson, stringifyJson } from "../src/_exact_json.ts";
import { SerializationError } from "../src/errors.ts";

/** What a stored value holding bytes starts with. */
export const BYTES_MARKER = "$bytes:";

/**
 * The text to store for `value`, or `undefined` when it is not JSON.
 * Throws what `JSON.stringify` throws (a cycle), and a `SerializationError`
 * for bytes over a detached `ArrayBuffer`.
 */
export function encodeCacheValue(value: unknown): string | undefined {
  // Bytes a result gave write base64 through their toJSON; written as for
  // the wire they write `{}`, a shape mayHoldBytes finds.
  const json = writeForWire(() => stringifyJson(value));
  if (json === undefined || !mayHoldBytes(json) || !holdsBytes(value)) {
    return json;
  }
  return BYTES_MARKER + stringifyJson(withBase64({ value }));
}

/**
 * The value stored as `text` (bytes as `Uint8Array`s). Throws a
 * `SyntaxError` for text that is not JSON and a `SerializationError` for a
 * marked value whose paths or base64 are bad.
 */
export function decodeCacheValue(text: string): unknown {
  if (!text.startsWith(BYTES_MARKER)) return parseJson(text);
  const stored = parseJson(text.slice(BYTES_MARKER.length));
  if (
    typeof stored !== "object" || stored === null || Array.isArray(stored) ||
    !Object.hasOwn(stored, "value") || !Object.hasOwn(stored, "$bytes")
  ) {
    throw new SerializationError(
      `Cannot read cached value: '${BYTES_MARKER}' is not followed by {"value", "$bytes"}`,
    );
  }
  const error = decodeBytes(stored as Record<string, unknown>);
  if (error !== undefined) {
    throw new SerializationError(
      `Cannot read cached value: ${error.message}`,
      { cause: error },
    );
  }
  return (stored as { value: unknown }).value;
}

/**
 * Payloads → messages, the last stage of the read side.
 *
 * @module
 */
import { ProtocolError } from "../errors.ts";

/**
 * Options of {@linkcode JsonDecoderStream}.
 *
 * @example
 * ```ts
 * import { JsonDecoderStream } from "@pyproxy/pyproxy";
 * // Revive ISO dates (slower: leave unset on hot paths).
 * const decoder = new JsonDecoderStream({
 *   reviver: (_key, value) =>
 *     typeof value === "string" && /^\d{4}-\d\d-\d\dT/.test(value) ? new Date(value) : value,
 * });
 * console.log(decoder.readable instanceof ReadableStream); // true
 * ```
 */
export interface JsonDecoderStreamOptions {
  /**
   * Revives values during `JSON.parse` (slower; leave unset on hot paths).
   *
   * @default {undefined}
   */
  reviver?: (key: string, value: unknown) => unknown;
}

/**
 * Parses each payload as UTF-8 JSON. A payload that is not valid UTF-8, not
 * JSON, or not a JSON object becomes a `ProtocolError` item; error items from
 * earlier stages pass through unchanged.
 *
 * @example
 * ```ts
 * import { JsonDecoderStream } from "@pyproxy/pyproxy";
 * const payload = new TextEncoder().encode('{"id":1,"ok":true,"result":"pong"}');
 * const [batch] = await Array.fromAsync(ReadableStream.from([[payload]]).pipeThrough(new JsonDecoderStream()));
 * console.log(batch![0]); // { id: 1, ok: true, result: "pong" }
 * ```
 */
export class JsonDecoderStream extends TransformStream<
  Array<Uint8Array | Error>,
  Array<Record<string, unknown> | Error>
> {
  /** Creates the stage. */
  constructor(options: JsonDecoderStreamOptions = {}) {
    const text = new TextDecoder("utf-8", { ignoreBOM: true });
    const reviver = options.reviver;
    super({
      transform(items, controller) {
        const out = new Array<Record<string, unknown> | Error>(items.length);
        for (let i = 0; i < items.length; i++) {
          const item = items[i]!;
          out[i] = item instanceof Error
            ? item
            : parsePayload(item, text, reviver);
        }
        controller.enqueue(out);
      },
    });
  }
}

/**
 * The logic of {@linkcode JsonDecoderStream} for one payload, as a plain
 * function: the JSON object, or a `ProtocolError` when the payload is not
 * UTF-8 JSON text of an object. `text` is a UTF-8 decoder with `ignoreBOM`;
 * a non-fatal one is faster (Deno's fast path), and invalid UTF-8 is still
 * refused: only text holding U+FFFD is decoded again, fatally. `parse`,
 * when given, parses the text instead of `JSON.parse` (and `reviver` is not
 * used): the session's exact integers (docs/models.md "Large integers").
 *
 * @example
 * ```ts
 * import { parsePayload } from "@pyproxy/pyproxy";
 * const text = new TextDecoder("utf-8", { ignoreBOM: true });
 * console.log(parsePayload(new TextEncoder().encode('{"id":1}'), text)); // { id: 1 }
 * ```
 */
export function parsePayload(
  payload: Uint8Array,
  text: TextDecoder,
  reviver?: (key: string, value: unknown) => unknown,
  parse?: (json: string) => unknown,
): Record<string, unknown> | ProtocolError {
  let value: unknown;
  try {
    let json = text.decode(payload);
    if (json.includes("\uFFFD")) {
      // A real U+FFFD, or invalid bytes replaced by it: only a fatal decoder tells.
      json = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(
        payload,
      );
    }
    value = parse === undefined ? JSON.parse(json, reviver) : parse(json);
  } catch (err) {
    return new ProtocolError(
      `Cannot parse payload: ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return new ProtocolError(
      `Cannot parse payload: expected a JSON object, got ${
        value === null
          ? "null"
          : Array.isArray(value)
          ? "an array"
          : typeof value
      }`,
    );
  }
  return value as Record<string, unknown>;
}

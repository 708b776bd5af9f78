/**
 * Model answers' bodies whose delivery the server's shutdown waits for
 * when large.
 *
 * @module
 */
import { stringifyJson } from "../_exact_json.ts";
import { LARGE_BODY_BYTES, type Runtime } from "../runtime/types.ts";
import { jsonResponse } from "./json_response.ts";

const JSON_TYPE = "application/json";

/** A character UTF-8 writes in more than one byte. */
const NOT_ASCII = /[\u0080-\uffff]/;

/**
 * Whether `text` may take {@linkcode LARGE_BODY_BYTES} or more in UTF-8
 * (what is sent): its length alone undercounts a non-ASCII text up to three
 * times (65,000 "€", 195 KB, went untracked and was cut at the drain). A
 * text between a third of the bound and the bound is large unless it is
 * ASCII (one native scan, ~23 µs at 60,000 characters; a count of its bytes
 * cost ~140 µs, more than tracking it does).
 */
function largeText(text: string): boolean {
  const length = text.length;
  if (length >= LARGE_BODY_BYTES) return true;
  return length * 3 >= LARGE_BODY_BYTES && NOT_ASCII.test(text);
}

/**
 * The body of an answer to `request`: as it is, unless it is large (64
 * KiB and more; a string: in UTF-8) and the runtime tracks such
 * bodies' delivery ({@linkcode Runtime.deliveredBody}, Deno): then what the
 * runtime makes of it, so that a drain or a listener replaced by a new
 * certificate does not cut it short over HTTP/2. A stream (a gzip body) is
 * always large. `headers` (the response's, still to be made) may get the
 * body's `content-length`.
 *
 * @example
 * ```ts
 * import { answerBody } from "./_answer_body.ts";
 * import { defaultRuntime } from "../runtime/mod.ts";
 * const body = answerBody(defaultRuntime(), new Request("http://x/"), "small", {});
 * console.log(body); // "small"
 * ```
 */
export function answerBody(
  runtime: Runtime,
  request: Request,
  body: string | Uint8Array | ReadableStream<Uint8Array>,
  headers: Record<string, string>,
): BodyInit {
  if (runtime.deliveredBody === undefined) return body as BodyInit;
  if (typeof body === "string") {
    if (!largeText(body)) return body;
  } else if (body instanceof Uint8Array) {
    if (body.byteLength < LARGE_BODY_BYTES) return body as BodyInit;
  }
  return runtime.deliveredBody(request, body, headers);
}

/**
 * A model's result as a JSON response (a `BigInt` written exactly, as
 * `jsonResponse` does), its body from {@linkcode answerBody}. Where the
 * runtime does not track deliveries (Bun): `jsonResponse`'s own path,
 * `Response.json`.
 *
 * @example
 * ```ts
 * import { jsonAnswer } from "./_answer_body.ts";
 * import { defaultRuntime } from "../runtime/mod.ts";
 * const res = jsonAnswer(defaultRuntime(), new Request("http://x/"), { n: 1n });
 * console.log(await res.text()); // {"n":1}
 * ```
 */
export function jsonAnswer(
  runtime: Runtime,
  request: Request,
  value: unknown,
): Response {
  if (runtime.deliveredBody === undefined) return jsonResponse(value);
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    text = stringifyJson(value);
    if (text === undefined) throw err;
  }
  const headers: Record<string, string> = { "content-type": JSON_TYPE };
  return new Response(
    !largeText(text) ? text : runtime.deliveredBody(request, text, headers),
    { headers },
  );
}

/**
 * JSON responses that may hold a `BigInt`.
 *
 * @module
 */
import { stringifyJson } from "../_exact_json.ts";

/**
 * `Response.json(value, { status })`, except that a value holding a `BigInt`
 * (the gateway's pool runs with `integers: "bigint"`: a model's result, the
 * options a model was loaded with, a plugin's status) is written with its
 * exact integer literals instead of failing the request: only such a value
 * pays for a second pass. Throws what `JSON.stringify` throws otherwise.
 *
 * @example
 * ```ts
 * import { jsonResponse } from "./json_response.ts";
 * console.log(await jsonResponse({ id: 2n ** 64n }).text()); // {"id":18446744073709551616}
 * ```
 */
export function jsonResponse(value: unknown, status = 200): Response {
  try {
    return Response.json(value, { status });
  } catch (err) {
    const text = stringifyJson(value);
    if (text === undefined) throw err;
    return new Response(text, {
      status,
      headers: { "content-type": "application/json" },
    });
  }
}

/**
 * A request body that a model's declared `inputs` accept, for the `try:`
 * line `serve` prints: `{"hello":"world"}` sent to a model that declares
 * `{"x": "number"}` was a 400 ("x: is required"), the first thing a new user
 * saw.
 *
 * @module
 */

const SAMPLES: Record<string, unknown> = {
  number: 1,
  integer: 1,
  string: "text",
  boolean: true,
  array: [],
  object: {},
};

/**
 * The JSON text of a body that passes `inputs` (every required field with
 * a value of its type, optional ones left out; `"any"` and unknown types
 * get `null`), or `{"hello":"world"}` when the model declares none.
 *
 * @example
 * ```ts
 * import { exampleBody } from "./example_body.ts";
 * console.log(exampleBody({ x: "number", ttl: "number?" })); // {"x":1}
 * console.log(exampleBody(undefined)); // {"hello":"world"}
 * ```
 */
export function exampleBody(
  inputs: Record<string, unknown> | undefined,
): string {
  const body: Record<string, unknown> = {};
  let declared = false;
  for (const [name, type] of Object.entries(inputs ?? {})) {
    declared = true;
    if (typeof type === "string" && type.endsWith("?")) continue;
    body[name] = typeof type === "string" && Object.hasOwn(SAMPLES, type)
      ? SAMPLES[type]
      : null;
  }
  return JSON.stringify(declared ? body : { hello: "world" });
}

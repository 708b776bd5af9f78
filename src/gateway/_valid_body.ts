/**
 * A request body checked against its valibot schema, or the 400 that says
 * which field is wrong.
 *
 * @module
 */
import * as v from "valibot";
import { httpError } from "./error_response.ts";

/**
 * `body` as `schema`'s output; else throws a 400 `ValidationError` whose
 * message is `"<action>: <field>: <problem>"` (the first issue only).
 */
export function validBody<
  const S extends v.GenericSchema<unknown, unknown>,
>(schema: S, body: unknown, action: string): v.InferOutput<S> {
  const parsed = v.safeParse(schema, body);
  if (parsed.success) return parsed.output;
  const issue = parsed.issues[0];
  const path = v.getDotPath(issue);
  throw httpError(
    400,
    "ValidationError",
    `${action}: ${path ? `${path}: ` : ""}${issue.message}`,
  );
}

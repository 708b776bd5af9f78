/**
 * The check of `tracing.headers`: names and values fetch takes. One fetch
 * refuses (an invalid name, a value with CR, LF, NUL or a character above
 * U+00FF) fails every POST to the collector, so every span would be dropped
 * while the gateway serves on; they are refused at start instead.
 *
 * @module
 */

/** An HTTP field name: RFC 9110's token. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** What a header name must be, as a message (config errors say it). */
export const HEADER_NAME_RULE =
  "expected header names of letters, digits and !#$%&'*+-.^_`|~ (e.g. x-api-key)";
/** What a header value must be besides having no CR, LF or NUL. */
export const HEADER_VALUE_RULE =
  "expected a header value of Latin-1 characters (an API key is ASCII)";

/** Whether `name` is a header name fetch takes. */
export function headerNameOk(name: string): boolean {
  return HEADER_NAME.test(name);
}

/** Whether `value` is a header value fetch takes (Latin-1, no CR, LF, NUL). */
export function headerValueOk(value: string): boolean {
  // deno-lint-ignore no-control-regex -- NUL is what it refuses.
  return !/[\r\n\0]|[^\x00-\xff]/.test(value);
}

/** The problem of a `tracing.headers` object, or `undefined` when fetch takes it. */
export function traceHeadersProblem(
  headers: Record<string, string>,
): string | undefined {
  for (const [name, value] of Object.entries(headers)) {
    if (!headerNameOk(name)) {
      return `${JSON.stringify(name.slice(0, 100))}: ${HEADER_NAME_RULE}`;
    }
    if (typeof value !== "string" || !headerValueOk(value)) {
      return `${
        JSON.stringify(name)
      }: expected a header value of Latin-1 characters without CR, LF or NUL`;
    }
  }
  return undefined;
}

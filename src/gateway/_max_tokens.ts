/**
 * The most tokens of one kind (`token`, `manageToken`) a gateway accepts at
 * once: rotation needs two or three, a token per client (tenant) many. Kept
 * apart from the security middleware so the config schema checks it without
 * importing the middleware.
 *
 * @module
 */

/**
 * The most tokens of one kind accepted at once: rotation needs two or
 * three, a token per client (tenant, `ModelCall.caller`) as many as there
 * are clients. A request's token is hashed once and looked up, whatever
 * their number.
 *
 * @example
 * ```ts
 * import { MAX_TOKENS } from "./_max_tokens.ts";
 * console.log(MAX_TOKENS); // 1024
 * ```
 */
export const MAX_TOKENS = 1024;

/**
 * The tokens of a gateway app, replaceable while it serves (`serve`'s
 * reload): kept out of the public {@linkcode GatewayApp} type, as the
 * tracing is.
 *
 * @module
 */

/** A gateway app's tokens, as {@linkcode GatewayOptions} takes them. */
export interface GatewayTokens {
  token?: string | readonly string[];
  manageToken?: string | readonly string[];
  /** Of `token`'s, the tenants' (refused the operator's routes). */
  tenantToken?: readonly string[];
}

/**
 * Replaces the tokens of each gateway app: for the requests that arrive
 * next (those in flight were let in already). Throws a `RangeError`, the
 * tokens unchanged, for tokens `createGateway` would refuse, and for
 * turning `token` or `manageToken` on or off (the routes' set-up, the
 * forwarded headers and the OpenAPI document depend on it).
 */
export const SET_TOKENS_OF: WeakMap<object, (tokens: GatewayTokens) => void> =
  new WeakMap();

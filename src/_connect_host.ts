/**
 * The address a client of this machine connects to for a listener bound
 * to a host.
 *
 * @module
 */

/**
 * The address to connect to for a listener bound to `host`: a wildcard
 * (`""`, `0.0.0.0`, `::`), which binds every interface, is no address a
 * client can use, its loopback is; an IPv6 address comes without URL
 * brackets.
 *
 * @example
 * ```ts
 * import { connectHost } from "./_connect_host.ts";
 * console.log(connectHost("0.0.0.0"), connectHost("[::]"), connectHost("[::1]")); // 127.0.0.1 ::1 ::1
 * ```
 */
export function connectHost(host: string): string {
  if (host === "" || host === "0.0.0.0") return "127.0.0.1";
  if (host === "::" || host === "[::]") return "::1";
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/**
 * A tenant's channels: those named by its token's id. A tenant's token
 * (a token file's `<token> tenant` line) subscribes to, and publishes to
 * (`POST /v1/channels/{name}`, an execute's `?publish=`), only channels
 * whose name starts with its {@linkcode tokenId} (`<id>`, `<id>.events`,
 * `<id>:job-42`): before, any tenant who knew or guessed another tenant's
 * channel name read its messages, and could publish into it (`?publish=`).
 * A model serving the tenant names the channel from `host.caller()` (the
 * same id), so no mapping is configured; operators' tokens and gateways
 * without tenants are unchanged. Internal.
 *
 * @module
 */

/**
 * Whether the channel `name` is the tenant's whose token has the id `id`:
 * its name starts with the id (16 hex digits, so that no other id is a
 * prefix of it).
 *
 * @example
 * ```ts
 * import { tenantOwnsChannel } from "./_tenant_channels.ts";
 * console.log(tenantOwnsChannel("4f0a9c2e71d3b8a6", "4f0a9c2e71d3b8a6.progress")); // true
 * console.log(tenantOwnsChannel("4f0a9c2e71d3b8a6", "news")); // false
 * ```
 */
export function tenantOwnsChannel(id: string, name: string): boolean {
  return name.startsWith(id);
}

/**
 * Why a tenant's token is refused a channel (its 403's message after
 * `Cannot <action> channel "<name>": `): its own id, which it can compute
 * from its token, and the rule; nothing of the channel (whether it exists,
 * who follows it).
 */
export function tenantChannelRefusal(id: string): string {
  return `this token is a tenant's (marked "tenant" in the token file), whose channels are those named by its id: ${id}, or starting with it (${id}.events)`;
}

/**
 * The tenant owning the channel `name` among `tenantIds` (its name starts
 * with the tenant's id, 16 hex digits), or `undefined`: a
 * `ChannelHub`'s `tenantOf`, so that a tenant's channels count
 * against its own bounds, whoever publishes to them (a model from
 * `host.caller()`, an operator).
 *
 * @example
 * ```ts
 * import { channelTenant } from "./_tenant_channels.ts";
 * const ids = new Set(["4f0a9c2e71d3b8a6"]);
 * console.log(channelTenant(ids, "4f0a9c2e71d3b8a6.progress")); // "4f0a9c2e71d3b8a6"
 * console.log(channelTenant(ids, "news")); // undefined
 * ```
 */
export function channelTenant(
  tenantIds: ReadonlySet<string>,
  name: string,
): string | undefined {
  const id = name.slice(0, 16);
  return tenantIds.has(id) ? id : undefined;
}

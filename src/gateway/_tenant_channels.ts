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

const TOKEN_ID = /^[0-9a-f]{16}/;

/**
 * The owner of the channel `name` for the hub's shares
 * (`ChannelHubOptions.ownerOf`): the token id its name starts with (16
 * lowercase hex digits: a tenant's channels, and any named so), else none.
 * One tenant then keeps at most its share of the hub's channels and
 * history: before, a tenant's thousand publishes to names of its own (a
 * quarter of a second) made the hub forget every other tenant's channel
 * without subscribers, their history with them, and its 1000 subscriptions
 * kept any other channel from being made.
 *
 * @example
 * ```ts
 * import { channelOwner } from "./_tenant_channels.ts";
 * console.log(channelOwner("4f0a9c2e71d3b8a6.progress")); // "4f0a9c2e71d3b8a6"
 * console.log(channelOwner("news")); // undefined
 * ```
 */
export function channelOwner(name: string): string | undefined {
  return TOKEN_ID.test(name) ? name.slice(0, 16) : undefined;
}

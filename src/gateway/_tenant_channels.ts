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

/**
 * Why a model's `host.publish` to `channel` is refused for the call its
 * `callers` made (`undefined`: it may, and `bounded` tells whether the
 * channel's tenant's bounds hold it). Without `tenantOfCaller` (no
 * tenants) any channel. A call of no tenant's (the operator's, or of no
 * caller) publishes anywhere, unbounded by a tenant's share. A tenant's
 * call publishes only to the channels of its tenant, as its token does; a
 * batch serving several callers, to those of its tenants, and to a
 * channel of no one's only when an operator's call is among them. A
 * command of no call (a server of before): no tenant's channel; of a call
 * that has ended (`callEnded`: code it left running, maybe a tenant's):
 * no channel at all.
 *
 * @example
 * ```ts
 * import { modelPublishRefusal } from "./_tenant_channels.ts";
 * const hub = {
 *   tenantOf: (name: string) => name.slice(0, 1),
 *   tenantOfCaller: (caller: string) => caller,
 * };
 * console.log(modelPublishRefusal(hub, "a.events", ["a"]).refusal); // undefined
 * console.log(modelPublishRefusal(hub, "b.events", ["a"]).refusal !== undefined); // true
 * ```
 */
export function modelPublishRefusal(
  hub: {
    tenantOf: ((channel: string) => string | undefined) | undefined;
    tenantOfCaller: ((caller: string) => string | undefined) | undefined;
  },
  channel: string,
  callers: readonly (string | null)[] | undefined,
  callEnded = false,
): { refusal?: string; bounded: boolean } {
  const tenantOfCaller = hub.tenantOfCaller;
  if (tenantOfCaller === undefined) return { bounded: true };
  const owner = hub.tenantOf?.(channel);
  if (callers === undefined && callEnded) {
    // Code a call left running (a thread it started): its caller may have
    // been a tenant, whose call itself may publish to no channel of no
    // one's (before chaos55, such a thread of a tenant's call did).
    return {
      refusal:
        "the call that sent it has ended (code it left running, a thread it started), and its caller may have been a tenant: publish within the call",
      bounded: true,
    };
  }
  if (callers === undefined) {
    return owner === undefined ? { bounded: true } : {
      refusal:
        "a tenant's channel, and the call that sent it is unknown (a server that does not send a host command's call: protocol §7)",
      bounded: true,
    };
  }
  const tenants = new Set<string>();
  let operator = false;
  for (const caller of callers) {
    const tenant = caller === null ? undefined : tenantOfCaller(caller);
    if (tenant === undefined) operator = true;
    else tenants.add(tenant);
  }
  if (tenants.size === 0) return { bounded: false };
  if (owner !== undefined ? tenants.has(owner) : operator) {
    return { bounded: true };
  }
  const ids = [...tenants];
  return {
    refusal:
      `the call is a tenant's (its token marked "tenant"), whose model publishes only to the channels named by its id: ${
        ids[0]
      }, or starting with it (${ids[0]}.events)${
        ids.length > 1 ? ` (this batch: ${ids.slice(1).join(", ")} too)` : ""
      }`,
    bounded: true,
  };
}

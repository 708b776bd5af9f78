/**
 * The plugin that lets Python models publish to gateway channels with
 * `host.publish(channel, msg)` (protocol §7: the `publish` host command).
 *
 * @module
 */
import type { Plugin } from "../plugin.ts";
import type { ChannelHub } from "./channels.ts";
import { stringifyJson } from "../_exact_json.ts";
import { ChannelAccessError } from "../errors.ts";
import { modelPublishRefusal } from "./_tenant_channels.ts";

/**
 * Options for {@linkcode channelsPlugin}.
 *
 * @example
 * ```ts
 * import { ChannelHub } from "@pyproxy/pyproxy";
 * import { channelsPlugin } from "@pyproxy/pyproxy";
 * const plugin = channelsPlugin({ hub: new ChannelHub(), maxMessageBytes: 64 * 1024 });
 * console.log(plugin.name);
 * ```
 */
export interface ChannelsPluginOptions {
  /** The hub messages are published to. */
  hub: ChannelHub;
  /**
   * Largest message accepted from Python, in bytes of JSON.
   * @default {1048576}
   */
  maxMessageBytes?: number;
}

/**
 * Registers the `publish` host handler: `{channel, msg}` → `{channel, seq, delivered}`.
 * With the hub's `tenantOfCaller` set (a gateway with tenants' tokens), a
 * model's publish in a tenant's call reaches only that tenant's channels
 * (`ChannelAccessError` otherwise), within its bounds; in an operator's
 * call, any channel, held to no tenant's bounds.
 *
 * @example
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * import { ChannelHub, channelsPlugin } from "@pyproxy/pyproxy";
 * const hub = new ChannelHub();
 * await using pool = await Pool.start({ workers: 1, modelsDir: "./examples/models", plugins: [channelsPlugin({ hub })] });
 * ```
 */
export function channelsPlugin(options: ChannelsPluginOptions): Plugin {
  const { hub } = options;
  const maxBytes = options.maxMessageBytes ?? 1024 * 1024;
  return {
    name: "channels",
    handlers: {
      publish(
        args: unknown,
        call,
      ): { channel: string; seq: number; epoch: string; delivered: number } {
        if (typeof args !== "object" || args === null) {
          throw new TypeError("Cannot publish: expected {channel, msg}");
        }
        const { channel, msg } = args as { channel?: unknown; msg?: unknown };
        if (typeof channel !== "string") {
          throw new TypeError("Cannot publish: channel must be a string");
        }
        const size = stringifyJson(msg ?? null)!.length;
        if (size > maxBytes) {
          throw new RangeError(
            `Cannot publish: message of ${size} bytes is over the limit of ${maxBytes}`,
          );
        }
        // A tenant's call: its own channels only (a model naming the
        // channel from its input would otherwise write into another
        // tenant's, which the tenant's token itself may not).
        const { refusal, bounded } = modelPublishRefusal(
          hub,
          channel,
          call.callers,
          call.callEnded === true,
        );
        if (refusal !== undefined) {
          throw new ChannelAccessError(
            `Cannot publish to channel ${JSON.stringify(channel)}: ${refusal}`,
            { details: { channel } },
          );
        }
        const { message, delivered } = hub.publish(channel, msg ?? null, {
          tenantBounds: bounded,
        });
        // The epoch as the HTTP publish answers it: a model that keeps the
        // seq to tell subscribers where to resume needs its numbering too.
        return { channel, seq: message.seq, epoch: message.epoch, delivered };
      },
    },
  };
}

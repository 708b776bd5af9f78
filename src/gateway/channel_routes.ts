/**
 * Channel routes: publish, list, and subscribe over Server-Sent Events or a
 * WebSocket.
 *
 * @module
 */
import { Hono } from "hono";
import { ChannelHub, type Subscription } from "./channels.ts";
import { httpError } from "./error_response.ts";
import { readJsonBody } from "./read_json_body.ts";
import { bearerToken, webSocketOffer } from "./security.ts";
import type { RouteContext } from "./route_context.ts";
import { type SseEvent, sseHead, sseResponse } from "./sse.ts";
import { stringifyJson } from "../_exact_json.ts";
import { pumpWebSocket } from "./_channel_web_socket.ts";
import type { HoldEnd } from "./_token_holders.ts";

function checkChannel(name: string): void {
  if (!ChannelHub.isValidName(name)) {
    throw httpError(
      400,
      "InvalidRequestError",
      `Cannot use channel ${
        JSON.stringify(name)
      }: expected 1-128 characters of A-Z a-z 0-9 _ . : -`,
    );
  }
}

/**
 * A subscription's events. `epochIds`: the client asked for epochs (it sent
 * one): each `id` is `<epoch>:<seq>` (what its `Last-Event-ID` then sends
 * back), and a resume across a restart starts with a `restart` event.
 */
async function* sseEvents(
  hub: ChannelHub,
  sub: Subscription,
  epochIds: boolean,
): AsyncGenerator<SseEvent> {
  if (epochIds && sub.restarted) {
    // Its id `<epoch>:0`, the new numbering's start: an EventSource sends
    // that back, not the old numbering's id, if it reconnects before a
    // message (without, it got the marker again at each reconnect).
    yield {
      event: "restart",
      id: `${sub.epoch}:0`,
      data: { channel: sub.channel, epoch: sub.epoch },
    };
  }
  for await (const ev of sub) {
    if (ev.type === "dropped") {
      yield { event: "dropped", data: { reason: ev.reason } };
      return;
    }
    // As JSON, a string too: `"hi"`, not `hi` (encodeSse writes a string as
    // it is), so subscribers parse every message the same way.
    yield {
      event: "message",
      id: epochIds ? `${ev.message.epoch}:${ev.message.seq}` : ev.message.seq,
      data: stringifyJson(hub.wireData(ev.message) ?? null)!,
    };
  }
}

/**
 * The token a channel subscription presented, as the auth middleware read
 * it on this path: the bearer header, else a WebSocket's token subprotocol.
 */
function presentedToken(request: Request): string | undefined {
  return bearerToken(request.headers.get("authorization") ?? "") ??
    webSocketOffer(request.headers.get("sec-websocket-protocol")).token;
}

/**
 * A count or sequence number as clients send it: plain decimal digits (no
 * sign, exponent, hex, spaces or fraction), at most 15 of them.
 */
function decimal(text: string): number | undefined {
  return /^\d{1,15}$/.test(text) ? Number(text) : undefined;
}

/** An epoch as a client sends it back (the gateway makes 8 hex digits). */
const EPOCH = /^[A-Za-z0-9_-]{1,32}$/;

/**
 * A resume point as a client sends it (`Last-Event-ID`, `?lastEventId=`):
 * `<seq>`, or `<epoch>:<seq>` (the ids of a subscription that asked for
 * epochs); `null` when it is neither.
 */
function resumePoint(
  text: string,
): { seq: number; epoch?: string } | null {
  const colon = text.lastIndexOf(":");
  const seq = decimal(colon < 0 ? text : text.slice(colon + 1));
  if (seq === undefined) return null;
  if (colon < 0) return { seq };
  const epoch = text.slice(0, colon);
  return EPOCH.test(epoch) ? { seq, epoch } : null;
}

/**
 * The channel routes under `/v1/channels`.
 *
 * @example
 * ```ts ignore
 * app.route("/", channelRoutes(ctx));
 * ```
 */
export function channelRoutes(ctx: RouteContext): Hono {
  /**
   * Holds a subscription to `channel` for a reload that retires its
   * `token`, or makes it a tenant's whose channel this is not.
   */
  const hold = (
    token: string | undefined,
    channel: string,
    end: (why: HoldEnd) => void,
  ): () => void =>
    token === undefined || ctx.tokenHolders === undefined
      ? () => {}
      : ctx.tokenHolders.hold(token, end, "subscription", false, channel);
  const { hub } = ctx;
  const app = new Hono();

  app.get("/v1/channels", (c) => {
    const param = c.req.query("history");
    const keep = param === undefined ? 10 : decimal(param);
    if (keep === undefined) {
      throw httpError(
        400,
        "InvalidRequestError",
        "Cannot list channels: history must be an integer >= 0",
      );
    }
    // stringifyJson: a message may hold a BigInt (the gateway keeps integers exact).
    return c.body(
      stringifyJson({
        channels: hub.list().map((ch) => ({
          ...ch,
          history: keep === 0 ? [] : ch.history.slice(-keep).map((m) => ({
            ...m,
            data: hub.wireData(m),
          })),
        })),
      })!,
      200,
      { "content-type": "application/json" },
    );
  });

  app.post("/v1/channels/:name", async (c) => {
    const name = c.req.param("name");
    checkChannel(name);
    // A tenant's token: its own channels only (before its body is read).
    ctx.channelAccess?.(c.req.raw, name, "publish to");
    const body = await readJsonBody(
      c.req.raw,
      ctx.bodyLimit,
      ctx.bodyReads,
      ctx.runtime,
      ctx.maxIntegerDigits,
      ctx.maxJsonDepth,
    );
    if (body === undefined) {
      throw httpError(
        400,
        "InvalidRequestError",
        "Cannot publish: expected a JSON body",
      );
    }
    // The operator's publish is not held to a tenant's bounds.
    const { message, delivered } = hub.publish(name, body, {
      tenantBounds: ctx.isTenant(c.req.raw),
    });
    return c.json({
      channel: name,
      seq: message.seq,
      epoch: message.epoch,
      delivered,
    });
  });

  app.get("/v1/channels/:name", (c) => {
    const name = c.req.param("name");
    checkChannel(name);
    // A tenant's token: its own channels only (HEAD and WebSocket too).
    ctx.channelAccess?.(c.req.raw, name, "subscribe to");
    const last = c.req.header("last-event-id") ?? c.req.query("lastEventId");
    const point = last === undefined || last === ""
      ? undefined
      : resumePoint(last);
    if (point === null) {
      throw httpError(
        400,
        "InvalidRequestError",
        "Cannot subscribe: Last-Event-ID must be a message sequence number, or <epoch>:<seq>",
      );
    }
    // ?epoch=: the epoch of the client's resume point (its Last-Event-ID's
    // wins), or empty: none yet, but it wants them (SSE ids <epoch>:<seq>,
    // a `restart` event). Without either, the ids and events of before.
    const epochParam = c.req.query("epoch");
    if (
      epochParam !== undefined && epochParam !== "" && !EPOCH.test(epochParam)
    ) {
      throw httpError(
        400,
        "InvalidRequestError",
        "Cannot subscribe: epoch must be 1-32 characters of A-Z a-z 0-9 _ -",
      );
    }
    const afterEpoch = point?.epoch ?? (epochParam || undefined);
    const epochs = epochParam !== undefined || point?.epoch !== undefined;
    // HEAD: no subscriber (nothing would ever read or close it).
    if (c.req.method === "HEAD") return sseHead();
    const options = point === undefined
      ? {}
      : afterEpoch === undefined
      ? { afterSeq: point.seq }
      : { afterSeq: point.seq, afterEpoch };
    // Read before the upgrade, which takes the request over.
    const token = ctx.tokenHolders === undefined
      ? undefined
      : presentedToken(c.req.raw);
    if (c.req.header("upgrade")?.toLowerCase() === "websocket") {
      if (!ctx.runtime.upgradeWebSocket) {
        throw httpError(
          501,
          "NotImplemented",
          `Cannot upgrade to WebSocket on ${ctx.runtime.name}: use SSE`,
        );
      }
      // The answer names pyproxy.v1 when offered (a browser that offered
      // subprotocols fails a handshake that selects none), never the token.
      const { protocol } = webSocketOffer(
        c.req.header("sec-websocket-protocol") ?? null,
      );
      // Subscribed before the upgrade: a refusal (a tenant's channels at
      // their bounds: 429; the hub's channels all followed: 400) is the
      // handshake's answer. After it, the handshake hung on Deno, and on Bun
      // the socket opened with nothing behind it, never closed (chaos52).
      const sub = hub.subscribe(name, options);
      let upgraded: ReturnType<typeof ctx.runtime.upgradeWebSocket>;
      try {
        upgraded = ctx.runtime.upgradeWebSocket(
          c.req.raw,
          protocol === undefined ? {} : { protocol },
        );
      } catch (err) {
        sub.close();
        throw err;
      }
      const { socket, response } = upgraded;
      pumpWebSocket(
        hub,
        socket,
        sub,
        epochs,
        hold(token, name, (why) => {
          sub.close();
          // 1008: policy violation, as a refused handshake would be now.
          if (socket.readyState === WebSocket.OPEN) {
            socket.close(
              1008,
              why === "retired"
                ? "token no longer accepted"
                : "not this token's channel",
            );
          }
        }),
      );
      return response;
    }
    const sub = hub.subscribe(name, options);
    ctx.logger.debug("Subscriber joined {channel}", { channel: name });
    // The stream ends (an EventSource reconnects, and gets 401).
    const release = hold(token, name, () => sub.close());
    return sseResponse(sseEvents(hub, sub, epochs), {
      onClose: () => {
        release();
        sub.close();
      },
      // A channel may stay quiet: let the subscriber see its response now.
      open: ctx.runtime.streamHeadersWithBody === true,
    });
  });

  return app;
}

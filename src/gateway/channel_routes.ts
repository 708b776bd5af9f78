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

async function* sseEvents(
  hub: ChannelHub,
  sub: Subscription,
): AsyncGenerator<SseEvent> {
  for await (const ev of sub) {
    if (ev.type === "dropped") {
      yield { event: "dropped", data: { reason: ev.reason } };
      return;
    }
    // As JSON, a string too: `"hi"`, not `hi` (encodeSse writes a string as
    // it is), so subscribers parse every message the same way.
    yield {
      event: "message",
      id: ev.message.seq,
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

/**
 * The channel routes under `/v1/channels`.
 *
 * @example
 * ```ts ignore
 * app.route("/", channelRoutes(ctx));
 * ```
 */
export function channelRoutes(ctx: RouteContext): Hono {
  /** Holds a subscription for a reload that retires its `token`. */
  const hold = (token: string | undefined, end: () => void): () => void =>
    token === undefined || ctx.tokenHolders === undefined
      ? () => {}
      : ctx.tokenHolders.hold(token, end);
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
    const { message, delivered } = hub.publish(name, body);
    return c.json({ channel: name, seq: message.seq, delivered });
  });

  app.get("/v1/channels/:name", (c) => {
    const name = c.req.param("name");
    checkChannel(name);
    const last = c.req.header("last-event-id") ?? c.req.query("lastEventId");
    const afterSeq = last === undefined || last === ""
      ? undefined
      : decimal(last);
    if (last !== undefined && last !== "" && afterSeq === undefined) {
      throw httpError(
        400,
        "InvalidRequestError",
        "Cannot subscribe: Last-Event-ID must be a message sequence number",
      );
    }
    // HEAD: no subscriber (nothing would ever read or close it).
    if (c.req.method === "HEAD") return sseHead();
    const options = afterSeq === undefined ? {} : { afterSeq };
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
      const { socket, response } = ctx.runtime.upgradeWebSocket(
        c.req.raw,
        protocol === undefined ? {} : { protocol },
      );
      const sub = hub.subscribe(name, options);
      pumpWebSocket(
        hub,
        socket,
        sub,
        hold(token, () => {
          sub.close();
          // 1008: policy violation, as a refused handshake would be now.
          if (socket.readyState === WebSocket.OPEN) {
            socket.close(1008, "token no longer accepted");
          }
        }),
      );
      return response;
    }
    const sub = hub.subscribe(name, options);
    ctx.logger.debug("Subscriber joined {channel}", { channel: name });
    // The stream ends (an EventSource reconnects, and gets 401).
    const release = hold(token, () => sub.close());
    return sseResponse(sseEvents(hub, sub), {
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

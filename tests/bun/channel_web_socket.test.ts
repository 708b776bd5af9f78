// A channel's WebSocket subscriber lost on Bun (a client killed, or one that
// never answers a ping): dropped, reported and counted as on Deno
// (tests/channel_web_socket_test.ts). `bun test tests/bun/`.
import { expect, test } from "bun:test";
import net from "node:net";
import { BunWebSocketUpgrades } from "../../src/runtime/bun_websocket.ts";
import { pumpWebSocket } from "../../src/gateway/_channel_web_socket.ts";
import { ChannelHub } from "../../src/gateway/channels.ts";

/**
 * A Bun server whose WebSockets subscribe to `feed`, with `idleTimeout`
 * seconds (Bun's ping timeout); a raw client that completes the handshake,
 * then reads nothing and answers no ping.
 */
async function lostSubscriber(
  idleTimeout: number,
  lose: (client: net.Socket) => void,
) {
  const reports: Array<[string, string]> = [];
  const hub = new ChannelHub({
    onDrop: (channel, reason) => reports.push([channel, reason]),
  });
  const released = Promise.withResolvers<void>();
  const opened = Promise.withResolvers<void>();
  const upgrades = new BunWebSocketUpgrades({ idleTimeout });
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req, srv) {
      const { socket } = upgrades.upgrade(req);
      pumpWebSocket(
        hub,
        socket,
        hub.subscribe("feed"),
        false,
        () => released.resolve(),
      );
      socket.addEventListener("open", () => opened.resolve());
      return upgrades.complete(req, srv) ? undefined : new Response("no");
    },
    websocket: upgrades.handlers,
  });
  const client = net.connect(server.port, "127.0.0.1");
  client.on("error", () => {});
  try {
    client.write(
      "GET /v1/channels/feed HTTP/1.1\r\nHost: localhost\r\n" +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    await opened.promise;
    hub.publish("feed", { step: 1 });
    lose(client);
    await released.promise;
    return { dropped: hub.droppedCount, reports, hub };
  } finally {
    client.destroy();
    hub.close();
    server.stop(true);
  }
}

test("pumpWebSocket on Bun counts and reports a subscriber whose client is gone without a close frame (killed) as dropped", async () => {
  // Before: closed (1006) unlogged and uncounted, as Deno's was before it
  // was made to drop it.
  const { dropped, reports, hub } = await lostSubscriber(
    30,
    (client) => client.destroy(),
  );
  expect(dropped).toBe(1);
  expect(reports).toEqual([[
    "feed",
    "subscriber lost: the connection ended without a close frame (1006) (too far behind, or gone without closing)",
  ]]);
  expect(hub.list()[0]!.subscribers).toBe(0);
});

test(
  "pumpWebSocket on Bun counts and reports a subscriber that answers no ping within idleTimeout as dropped",
  async () => {
    // 1 s rather than the 30 the adapter sets: the same failure, sooner.
    const { dropped, reports } = await lostSubscriber(1, () => {});
    expect(dropped).toBe(1);
    expect(reports).toEqual([[
      "feed",
      "subscriber lost: WebSocket timed out from inactivity (too far behind, or gone without closing)",
    ]]);
  },
  20_000,
);

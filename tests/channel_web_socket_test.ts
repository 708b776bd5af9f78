import assert from "node:assert/strict";
import { pumpWebSocket } from "../src/gateway/_channel_web_socket.ts";
import { ChannelHub } from "../src/gateway/channels.ts";

Deno.test("pumpWebSocket counts and reports a subscriber whose connection fails (its ping unanswered) as dropped", async () => {
  const reports: Array<[string, string]> = [];
  const hub = new ChannelHub({
    onDrop: (channel, reason) => reports.push([channel, reason]),
  });
  const { promise: released, resolve: release } = Promise.withResolvers<
    void
  >();
  const { promise: opened, resolve: open } = Promise.withResolvers<void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      // 1 s rather than Deno's default 30: the same failure, sooner.
      const { socket, response } = Deno.upgradeWebSocket(req, {
        idleTimeout: 1,
      });
      pumpWebSocket(hub, socket, hub.subscribe("feed"), false, release);
      socket.addEventListener("open", () => open());
      return response;
    },
  );
  // A client that completes the handshake, then never reads nor answers a
  // ping: a browser tab far behind looks so to the gateway.
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: server.addr.port,
  });
  try {
    await conn.write(
      new TextEncoder().encode(
        "GET /v1/channels/feed HTTP/1.1\r\nHost: localhost\r\n" +
          "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Version: 13\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      ),
    );
    await opened;
    hub.publish("feed", { step: 1 });
    await released;
    assert.equal(hub.droppedCount, 1);
    assert.equal(reports.length, 1);
    assert.equal(reports[0]![0], "feed");
    assert.match(reports[0]![1], /^subscriber lost: .*ping/);
    assert.equal(hub.list()[0]!.subscribers, 0);
  } finally {
    conn.close();
    hub.close();
    await server.shutdown();
  }
});

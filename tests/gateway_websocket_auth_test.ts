// A browser's WebSocket cannot send headers: a gateway with a token takes it
// as a subprotocol on a channel subscription's handshake (docs/gateway.md,
// "Channels"). Real gateway, real Python worker, real sockets.
import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { webSocketOffer } from "../src/gateway/security.ts";
import { webSocketProtocols } from "../src/gateway/web_socket_protocols.ts";
import { startGateway, type TestGateway } from "./_gateway_harness.ts";

const TOKEN = "ws-auth-token-0123456789_abc";
const PAGE = "https://app.example";

function base64url(text: string): string {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)))
    .replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

interface RawResponse {
  status: number;
  head: string;
  body: string;
}

/**
 * Sends a request as raw bytes (any header, Origin included) and reads the
 * answer: the head of a 101, the whole of anything else.
 */
async function raw(
  gw: TestGateway,
  path: string,
  headers: Record<string, string>,
  method = "GET",
): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
  try {
    const lines = Object.entries({ host: `127.0.0.1:${gw.port}`, ...headers })
      .map(([k, v]) => `${k}: ${v}\r\n`).join("");
    await conn.write(
      new TextEncoder().encode(`${method} ${path} HTTP/1.1\r\n${lines}\r\n`),
    );
    const decoder = new TextDecoder();
    let out = "";
    for await (const chunk of conn.readable) {
      out += decoder.decode(chunk, { stream: true });
      const end = out.indexOf("\r\n\r\n");
      if (end < 0) continue;
      const head = out.slice(0, end);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
      const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
      const body = out.slice(end + 4);
      if (status === 101 || new TextEncoder().encode(body).length >= length) {
        return { status, head, body };
      }
    }
    throw new Error(`connection closed before an answer: ${out}`);
  } finally {
    try {
      conn.close();
    } catch {
      // closed by the server
    }
  }
}

/** The headers of a WebSocket handshake offering `protocols`. */
function handshake(
  protocols: string | undefined,
  more: Record<string, string> = {},
): Record<string, string> {
  return {
    upgrade: "websocket",
    connection: "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    ...(protocols === undefined ? {} : { "sec-websocket-protocol": protocols }),
    ...more,
  };
}

function protocolHeader(head: string): string | undefined {
  return /\r\nsec-websocket-protocol: ([^\r]*)/i.exec(head)?.[1];
}

/** Opens a real WebSocket offering `protocols`; resolves once open. */
async function openSocket(
  gw: TestGateway,
  channel: string,
  protocols: string[],
): Promise<{ ws: WebSocket; first: Promise<Record<string, unknown>> }> {
  const ws = new WebSocket(
    `${gw.url.replace("http", "ws")}/v1/channels/${channel}`,
    protocols,
  );
  const first = new Promise<Record<string, unknown>>((resolve, reject) => {
    ws.onmessage = (ev) => resolve(JSON.parse(String(ev.data)));
    ws.onclose = () => reject(new Error("closed before a message"));
  });
  first.catch(() => {});
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("WebSocket failed"));
  });
  return { ws, first };
}

async function closed(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return;
  const done = new Promise((resolve) => ws.addEventListener("close", resolve));
  ws.close();
  await done;
}

/** Waits until `channel` has `n` subscribers. */
async function subscribers(
  gw: TestGateway,
  channel: string,
  n: number,
): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { channels } = await (await gw.fetch("/v1/channels?history=0"))
      .json();
    const ch = channels.find((c: { name: string }) => c.name === channel);
    if ((ch?.subscribers ?? 0) === n) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${channel} never had ${n} subscribers`);
}

Deno.test("webSocketOffer reads pyproxy.v1 and a token entry, raw or base64url, and refuses a token without pyproxy.v1", () => {
  assert.deepEqual(webSocketOffer(null), {});
  assert.deepEqual(webSocketOffer("chat, other"), {});
  assert.deepEqual(webSocketOffer("pyproxy.v1"), { protocol: "pyproxy.v1" });
  assert.deepEqual(webSocketOffer("pyproxy.bearer.abc,pyproxy.v1"), {
    protocol: "pyproxy.v1",
    token: "abc",
  });
  // A token with characters a subprotocol cannot hold travels encoded.
  const odd = "tök/en+with spaces=";
  assert.equal(
    webSocketOffer(`pyproxy.v1, pyproxy.bearer64.${base64url(odd)}`).token,
    odd,
  );
  // Not base64url, or not UTF-8: a token that matches nothing.
  assert.equal(webSocketOffer("pyproxy.v1, pyproxy.bearer64.a+b").token, "");
  assert.equal(webSocketOffer("pyproxy.v1, pyproxy.bearer64._w").token, "");
  const lone = webSocketOffer("pyproxy.bearer.secret-token");
  assert.equal(lone.token, undefined);
  assert.match(lone.problem!, /needs 'pyproxy\.v1'/);
  assert.ok(!lone.problem!.includes("secret-token"));
  const two = webSocketOffer(
    "pyproxy.v1, pyproxy.bearer.a-secret, pyproxy.bearer.b-secret",
  );
  assert.equal(two.token, undefined);
  assert.match(two.problem!, /more than one/);
});

Deno.test("A browser-style WebSocket subscribes with the token as a subprotocol: pyproxy.v1 answered, never the token; a wrong or missing one gets 401", async () => {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { test: (record: LogRecord) => void records.push(record) },
    loggers: [
      { category: ["pyproxy"], lowestLevel: "debug", sinks: ["test"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  try {
    await using gw = await startGateway({
      token: TOKEN,
      debug: true,
      cors: { origins: [PAGE] },
    });
    // Deno's WebSocket, as a page's: subprotocols only, no headers.
    for (
      const [channel, entry] of [
        ["raw", `pyproxy.bearer.${TOKEN}`],
        ["encoded", `pyproxy.bearer64.${base64url(TOKEN)}`],
      ]
    ) {
      const { ws, first } = await openSocket(gw, channel!, [
        "pyproxy.v1",
        entry!,
      ]);
      try {
        assert.equal(ws.protocol, "pyproxy.v1", channel);
        await subscribers(gw, channel!, 1);
        const pub = await gw.fetch(`/v1/channels/${channel}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ hello: channel }),
        });
        assert.equal(pub.status, 200);
        await pub.body?.cancel();
        const msg = await first;
        assert.equal(msg.type, "message");
        assert.deepEqual(msg.data, { hello: channel });
      } finally {
        await closed(ws);
      }
    }
    // The handshake as bytes: the answer names pyproxy.v1 and nothing else,
    // "a,b" (no space) included.
    for (
      const offer of [
        `pyproxy.bearer.${TOKEN}, pyproxy.v1`,
        `pyproxy.v1,pyproxy.bearer.${TOKEN}`,
      ]
    ) {
      const res = await raw(gw, "/v1/channels/bytes", handshake(offer));
      assert.equal(res.status, 101, res.head);
      assert.equal(protocolHeader(res.head), "pyproxy.v1", res.head);
      assert.ok(!res.head.includes(TOKEN), res.head);
    }
    // Refused: a wrong token, no token, the token without pyproxy.v1.
    for (
      const offer of [
        "pyproxy.v1, pyproxy.bearer.wrong-token-000000000",
        `pyproxy.v1, pyproxy.bearer64.${base64url("wrong")}`,
        "pyproxy.v1",
        undefined,
      ]
    ) {
      const res = await raw(gw, "/v1/channels/news", handshake(offer));
      assert.equal(res.status, 401, `${offer}: ${res.head}`);
      assert.match(res.head, /\r\nwww-authenticate: Bearer realm="pyproxy"/i);
      const body = JSON.parse(res.body);
      assert.equal(body.error.type, "Unauthorized");
      assert.match(body.error.message, /'pyproxy\.bearer\.<token>'/);
      assert.ok(!res.body.includes("wrong-token"), res.body);
    }
    const lone = await raw(
      gw,
      "/v1/channels/news",
      handshake(`pyproxy.bearer.${TOKEN}`),
    );
    assert.equal(lone.status, 400, lone.head);
    assert.equal(JSON.parse(lone.body).error.type, "InvalidRequestError");
    assert.ok(!lone.head.includes(TOKEN) && !lone.body.includes(TOKEN));
    // Metrics and every log line: no trace of the token.
    const metrics = await (await gw.fetch("/metrics")).text();
    assert.ok(!metrics.includes(TOKEN));
    assert.ok(!metrics.includes(base64url(TOKEN)));
    assert.ok(records.length > 0, "the request log was recorded");
    for (const record of records) {
      const line = JSON.stringify(record.message) +
        JSON.stringify(
          record.properties,
          (_k, v) => v instanceof Error ? `${v.message} ${v.stack}` : v,
        );
      assert.ok(!line.includes(TOKEN), line);
      assert.ok(!line.includes(base64url(TOKEN)), line);
      assert.ok(!line.includes("wrong-token"), line);
    }
  } finally {
    await reset();
  }
});

Deno.test("The token subprotocol authenticates only a WebSocket handshake to a channel: not a plain GET, not another route", async () => {
  await using gw = await startGateway({ token: TOKEN });
  const offer = `pyproxy.v1, pyproxy.bearer.${TOKEN}`;
  // A plain GET of the channel (SSE) with the header: no auth from it.
  const sse = await raw(gw, "/v1/channels/news", {
    "sec-websocket-protocol": offer,
  });
  assert.equal(sse.status, 401, sse.head);
  assert.match(sse.body, /Authorization: Bearer <token>/);
  // POST (publish), and a handshake to a route that does not upgrade.
  const post = await raw(gw, "/v1/channels/news", {
    "sec-websocket-protocol": offer,
    "content-type": "application/json",
    "content-length": "2",
  }, "POST");
  assert.equal(post.status, 401, post.head);
  for (const path of ["/v1/status", "/v1/channels", "/metrics"]) {
    const res = await raw(gw, path, handshake(offer));
    assert.equal(res.status, 401, `${path}: ${res.head}`);
  }
  // The header still works for a WebSocket client that can send it, and the
  // answer names pyproxy.v1 when offered.
  const header = await raw(
    gw,
    "/v1/channels/news",
    handshake("pyproxy.v1", { authorization: `Bearer ${TOKEN}` }),
  );
  assert.equal(header.status, 101, header.head);
  assert.equal(protocolHeader(header.head), "pyproxy.v1");
  // A client that offered nothing gets no subprotocol.
  const none = await raw(
    gw,
    "/v1/channels/news",
    handshake(undefined, { authorization: `Bearer ${TOKEN}` }),
  );
  assert.equal(none.status, 101, none.head);
  assert.equal(protocolHeader(none.head), undefined);
});

Deno.test("The Origin check still refuses a cross-site page's WebSocket that carries the token subprotocol; a CORS-listed origin's is served", async () => {
  await using gw = await startGateway({
    token: TOKEN,
    cors: { origins: [PAGE] },
  });
  const offer = `pyproxy.v1, pyproxy.bearer.${TOKEN}`;
  const evil = await raw(
    gw,
    "/v1/channels/news",
    handshake(offer, { origin: "https://evil.example" }),
  );
  assert.equal(evil.status, 403, evil.head);
  assert.equal(JSON.parse(evil.body).error.type, "ForbiddenOrigin");
  const listed = await raw(
    gw,
    "/v1/channels/news",
    handshake(offer, { origin: PAGE }),
  );
  assert.equal(listed.status, 101, listed.head);
  assert.equal(protocolHeader(listed.head), "pyproxy.v1");
});

Deno.test("webSocketProtocols makes what a subscriber offers: pyproxy.v1 and the token, raw when it can be, base64url when not; the gateway takes both", async () => {
  assert.deepEqual(webSocketProtocols(), ["pyproxy.v1"]);
  assert.deepEqual(webSocketProtocols(TOKEN), [
    "pyproxy.v1",
    `pyproxy.bearer.${TOKEN}`,
  ]);
  // Spaces, slashes, '=' and non-ASCII cannot be in a subprotocol name.
  const odd = "odd token/with=signs and é 0123";
  const offered = webSocketProtocols(odd);
  assert.match(offered[1]!, /^pyproxy\.bearer64\.[A-Za-z0-9_-]+$/);
  assert.deepEqual(webSocketOffer(offered.join(", ")), {
    protocol: "pyproxy.v1",
    token: odd,
  });
  for (const token of [TOKEN, odd]) {
    await using gw = await startGateway({ token });
    const { ws, first } = await openSocket(
      gw,
      "made",
      webSocketProtocols(token),
    );
    try {
      assert.equal(ws.protocol, "pyproxy.v1");
      await subscribers(gw, "made", 1);
      const res = await gw.fetch("/v1/channels/made", {
        method: "POST",
        body: JSON.stringify({ hello: token.length }),
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
      assert.deepEqual((await first).data, { hello: token.length });
    } finally {
      await closed(ws);
    }
  }
});

/**
 * docs/protocol.md §10: the host's `Session` drives a server of another
 * implementation that does only what that section lists — a `hello` with
 * its required fields only, an `auth` reply with `serverMac` and nothing
 * else, replies in any order, a host command of its own, `cancel` answered
 * `UnknownCommandError` — written on `node:net` from the document.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { Buffer } from "node:buffer";
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { Session } from "../mod.ts";
import { frame, hmacHex, type Wire } from "./_wire_client.ts";

/** The minimal server: `doubler`, `greeter` (calls the host) and `never`. */
function minimalServer(secret: string) {
  const seen: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    const nonce = randomBytes(16).toString("hex");
    const send = (m: Wire) => sock.write(frame(m));
    const waiting = new Map<number, (reply: Wire) => void>();
    let nextId = 1;
    let authed = false;
    let buf: Buffer = Buffer.alloc(0);
    send({ event: "hello", version: 1, auth: "hmac-sha256", nonce });
    const handle = async (m: Wire): Promise<void> => {
      seen.push(String(m.cmd ?? "reply"));
      if (typeof m.cmd !== "string") {
        waiting.get(m.id as number)?.(m);
        return;
      }
      const id = m.id as number;
      if (m.cmd === "auth") {
        const want = Buffer.from(hmacHex(secret, nonce));
        const mac = Buffer.from(String(m.mac));
        if (mac.length !== want.length || !timingSafeEqual(mac, want)) {
          send({
            id,
            ok: false,
            error: { type: "AuthenticationError", message: "wrong mac" },
          });
          sock.end();
          return;
        }
        authed = true;
        return void send({
          id,
          ok: true,
          result: {
            serverMac: hmacHex(secret, "server:" + String(m.clientNonce)),
          },
        });
      }
      if (!authed) return void sock.destroy();
      if (m.cmd === "ping") return void send({ id, ok: true, result: "pong" });
      if (m.cmd === "executeModel" && m.name === "doubler") {
        const x = (m.msg as { x: number }).x;
        // Replies in any order: the even ones a little later.
        if (x % 2 === 0) await new Promise((r) => setImmediate(r));
        return void send({ id, ok: true, result: { y: 2 * x } });
      }
      if (m.cmd === "executeModel" && m.name === "greeter") {
        const own = nextId++;
        const reply = new Promise<Wire>((r) => waiting.set(own, r));
        send({ id: own, cmd: "greet", args: { name: m.msg } });
        return void send({ id, ok: true, result: (await reply).result });
      }
      if (m.cmd === "executeModel" && m.name === "never") return;
      send({
        id,
        ok: false,
        error: { type: "UnknownCommandError", message: `no ${m.cmd}` },
      });
    };
    sock.on("data", (data: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, data]) : data;
      while (buf.length >= 25) {
        const length = buf.readUInt32BE(21);
        if (buf.length < 41 + length) break;
        const payload = buf.subarray(25, 25 + length);
        const sum = createHash("md5").update(payload).digest();
        if (!sum.equals(buf.subarray(5, 21))) return void sock.destroy();
        buf = buf.subarray(41 + length);
        void handle(JSON.parse(payload.toString("utf8")));
      }
    });
  });
  const listening = new Promise<number>((resolve) =>
    server.listen(
      0,
      "127.0.0.1",
      () => resolve((server.address() as net.AddressInfo).port),
    )
  );
  return {
    listening,
    seen,
    async [Symbol.asyncDispose]() {
      for (const sock of sockets) sock.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

Deno.test("Session drives a minimal server of another implementation (protocol §10)", async () => {
  const secret = randomBytes(32).toString("hex");
  await using server = minimalServer(secret);
  const port = await server.listening;
  await using session = await Session.connect({
    port,
    secret,
    handlers: { greet: (args) => `hello ${(args as { name: string }).name}` },
  });
  assert.equal(await session.ping(), "pong");
  const results = await Promise.all(
    Array.from({ length: 64 }, (_, x) => session.execute("doubler", { x })),
  );
  assert.deepEqual(
    results,
    Array.from({ length: 64 }, (_, x) => ({ y: 2 * x })),
  );
  assert.equal(await session.execute("greeter", "ana"), "hello ana");
  // A timeout sends cancel, which this server does not know: no harm done.
  await assert.rejects(
    session.execute("never", 1, { timeout: 100 }),
    { name: "TimeoutError" },
  );
  assert.equal(await session.ping(), "pong");
  await assert.rejects(
    session.request("frobnicate"),
    { name: "UnknownCommandError" },
  );
  assert.ok(server.seen.includes("reply"), "the host answered greet");
  await assert.rejects(
    Session.connect({ port, secret: "wrong" }),
    { name: "AuthenticationError" },
  );
});

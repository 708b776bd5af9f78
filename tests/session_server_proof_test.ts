/**
 * The host's side of mutual authentication (protocol §4): the server proves
 * it knows the secret too (`serverMac` in its `auth` reply), so whoever
 * listens in its place without the secret is refused.
 */
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { AuthenticationError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { Session } from "../src/session.ts";
import { decodedMessages, encodeFrame, startServer } from "./_harness.ts";

/**
 * An impostor: says hello with a nonce and accepts any `auth`, answering
 * `serverMac` as `answer` makes it (or none). Records what it was sent.
 */
function impostor(
  answer: (clientNonce: string) => unknown,
  hello: Record<string, unknown> = {
    auth: "hmac-sha256",
    nonce: "00112233445566778899aabbccddeeff",
  },
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received: Array<Record<string, unknown>> = [];
  const tasks: Promise<void>[] = [];
  const serve = async (conn: Deno.Conn) => {
    const writer = conn.writable.getWriter();
    await writer.write(encodeFrame({
      event: "hello",
      version: 1,
      serverId: "w1",
      pid: 1,
      ...hello,
    }));
    try {
      for await (const batch of decodedMessages(conn.readable)) {
        for (const msg of batch as Array<Record<string, unknown>>) {
          received.push(msg);
          if (msg.cmd !== "auth") continue;
          const serverMac = answer(String(msg.clientNonce));
          await writer.write(encodeFrame({
            id: msg.id,
            ok: true,
            result: {
              connection: "c1",
              serverId: "w1",
              pid: 1,
              maxFrameSize: 1 << 20,
              ...(serverMac === undefined ? {} : { serverMac }),
            },
          }));
        }
      }
    } catch {
      // the session closed the connection
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) tasks.push(serve(conn));
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    received,
    async [Symbol.asyncDispose]() {
      listener.close();
      await accepting;
      await Promise.all(tasks);
    },
  };
}

Deno.test("Session refuses a server that cannot prove it knows the secret, before sending it anything else", async () => {
  for (
    const [what, answer] of [
      ["no serverMac", () => undefined],
      ["a wrong one", () => "ab".repeat(32)],
      // A MAC over the nonce with another secret.
      [
        "another secret's",
        (n: string) =>
          createHmac("sha256", "other").update(`server:${n}`).digest("hex"),
      ],
      // Compared in constant time (security24): a MAC of another length,
      // another case or not a string is refused, never thrown over.
      [
        "the right one cut short",
        (n: string) =>
          createHmac("sha256", "s3cret").update(`server:${n}`).digest("hex")
            .slice(0, 62),
      ],
      [
        "the right one in capitals",
        (n: string) =>
          createHmac("sha256", "s3cret").update(`server:${n}`).digest("hex")
            .toUpperCase(),
      ],
      ["a number", () => 42],
      ["an array", () => ["ab".repeat(32)]],
    ] as const
  ) {
    await using fake = impostor(answer);
    await assert.rejects(
      // Closed at once if it connects (the check failed): no hang then.
      Session.connect({
        port: fake.port,
        secret: "s3cret",
        connectTimeout: 5000,
      }).then(async (session) => {
        await session.close();
        return session;
      }),
      (err: Error) => {
        assert.ok(err instanceof AuthenticationError, what);
        assert.match(err.message, /did not prove that it knows the secret/);
        return true;
      },
    );
    // Only the auth, with a fresh nonce of ours: no model, message or call.
    assert.deepEqual(fake.received.map((m) => m.cmd), ["auth"], what);
    assert.match(String(fake.received[0]!.clientNonce), /^[0-9a-f]{32}$/);
  }
});

Deno.test("Session given a secret refuses a server that says it needs no authentication, before sending it anything", async () => {
  // An impostor's way around the proof: a hello with auth "none" (what an
  // --insecure-no-auth server says) skipped the handshake's check, and the
  // session went on to send it models, options and calls.
  for (const bytes of [false, true]) {
    await using fake = impostor(() => undefined, { auth: "none", bytes });
    await assert.rejects(
      Session.connect({
        port: fake.port,
        secret: "s3cret",
        connectTimeout: 5000,
      }).then(async (session) => {
        await session.close();
        return session;
      }),
      (err: Error) => {
        assert.ok(err instanceof AuthenticationError, String(err));
        assert.match(
          err.message,
          /the server asks for no authentication, but this session was given a secret/,
        );
        return true;
      },
    );
    assert.deepEqual(fake.received, []);
  }
});

Deno.test("A pool whose serverArgs start its workers with --insecure-no-auth still connects to them", async () => {
  // Asked for by the caller's own args: not an impostor's hello.
  const pool = await Pool.start({
    workers: 1,
    serverArgs: ["--insecure-no-auth"],
  });
  try {
    await pool.addModel("echo", {
      source: "class Echo:\n    def execute(self, msg):\n        return msg\n",
    });
    assert.deepEqual(await pool.execute("echo", { a: 1 }), { a: 1 });
    assert.equal(pool.status().workers[0]!.state, "ready");
  } finally {
    await pool.close();
  }
});

Deno.test("Session with serverProof: false connects to a server that does not answer clientNonce", async () => {
  await using fake = impostor(() => undefined);
  await using session = await Session.connect({
    port: fake.port,
    secret: "s3cret",
    serverProof: false,
  });
  assert.equal(fake.received[0]!.clientNonce, undefined);
  assert.equal(session.serverInfo.serverId, "w1");
});

Deno.test("The Python server proves it knows the secret; the proof is not kept in serverInfo", async () => {
  await using server = await startServer();
  await using session = await server.connect();
  assert.equal(await session.ping(), "pong");
  assert.equal(
    (session.serverInfo as Record<string, unknown>).serverMac,
    undefined,
  );
});

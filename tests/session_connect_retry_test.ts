/**
 * `Session.connect` under a flood of the server's socket (security25): a
 * connect refused by a full accept queue, and a handshake the server cut
 * (it closes one of the connections waiting for their auth when it keeps
 * too many), are tried again within `connectTimeout`; other failures are
 * not. Real Python servers, real sockets.
 */
import assert from "node:assert/strict";
import { ConnectionLostError } from "../src/errors.ts";
import { Session } from "../src/session.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Connection, Runtime } from "../src/runtime/types.ts";
import { startServer } from "./_harness.ts";

/** The default runtime, whose connect runs `before` for the first `n` tries. */
function firstConnects(
  n: number,
  before: (target: Parameters<Runtime["connect"]>[0]) => Promise<void>,
): { runtime: Runtime; tries: () => number } {
  const base = defaultRuntime();
  let tries = 0;
  return {
    runtime: {
      ...base,
      async connect(target): Promise<Connection> {
        tries++;
        if (tries <= n) await before(target);
        return await base.connect(target);
      },
    },
    tries: () => tries,
  };
}

Deno.test("Session.connect tries again a connect refused by a full accept queue (EAGAIN), and not one refused otherwise", async () => {
  await using server = await startServer({ unix: true });
  // A Unix socket's connect to a full queue fails at once with EAGAIN
  // (Deno: WouldBlock): the host gave up at its first, and a flood of the
  // worker's socket kept the queue full (177 of 200 host connects refused
  // so, with the default cap).
  const full = () =>
    Promise.reject(
      Object.assign(new Error("Resource temporarily unavailable"), {
        name: "WouldBlock",
        code: "EAGAIN",
      }),
    );
  const { runtime, tries } = firstConnects(5, full);
  await using session = await server.connect({ runtime });
  assert.equal(await session.ping(), "pong");
  assert.equal(tries(), 6);
  // A server gone (no socket) fails at once, as before.
  const gone = firstConnects(0, () => Promise.resolve());
  await assert.rejects(
    Session.connect({
      path: `${server.dir}/none.sock`,
      runtime: gone.runtime,
      connectTimeout: 5000,
    }),
    ConnectionLostError,
  );
  assert.equal(gone.tries(), 1);
});

Deno.test("Session.connect tries again a handshake the server cut: another connection came while it kept --max-unauthenticated 1", async () => {
  await using server = await startServer({
    unix: true,
    args: ["--max-unauthenticated", "1"],
  });
  // The session's connection is queued first; another one, accepted after
  // it and said hello to, closes it (the room holds one) before its auth
  // can be sent: the session sees its handshake end unanswered. That
  // failed its connect, and a flooded worker's start with it (security25).
  const base = defaultRuntime();
  const others: Connection[] = [];
  let tries = 0;
  const runtime: Runtime = {
    ...base,
    async connect(target): Promise<Connection> {
      const conn = await base.connect(target);
      if (++tries === 1) {
        const other = await base.connect(target);
        others.push(other);
        // Its hello: it was accepted, after the session's.
        const hello = new Uint8Array(4096);
        assert.ok((await other.read!(hello) ?? 0) > 0);
      }
      return conn;
    },
  };
  try {
    await using session = await server.connect({ runtime });
    assert.equal(await session.ping(), "pong");
    assert.equal(tries, 2);
  } finally {
    for (const other of others) other.close();
  }
});

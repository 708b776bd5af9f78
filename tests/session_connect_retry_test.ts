/**
 * `Session.connect` under a flood of the server's socket (security25): a
 * connect refused by a full accept queue, and a handshake the server cut
 * (it closes one of the connections waiting for their auth when it keeps
 * too many), are tried again within `connectTimeout`; other failures are
 * not; over TCP a connect that has not completed (its SYN dropped by a full
 * queue) is raced by fresh ones (flood26). Real Python servers, real
 * sockets.
 */
import assert from "node:assert/strict";
import { type AddressInfo, createServer } from "node:net";
import { ConnectionLostError } from "../src/errors.ts";
import { Session } from "../src/session.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Connection, Runtime } from "../src/runtime/types.ts";
import { startServer, waitFor } from "./_harness.ts";

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

Deno.test("Session.connect over TCP races a connect that has not completed by a fresh one, and closes it when it completes late", async () => {
  await using server = await startServer();
  // A full accept queue drops a TCP connect's SYN and the kernel sends it
  // again after 1 s, then 3 s: a churn flood of a TCP worker (connects
  // closed at once) kept the queue full, and the host's connects, waiting
  // on their one SYN, failed their 3 s connectTimeout (0 of 4 at the
  // default cap). Here the first connect is held as a dropped SYN would.
  const base = defaultRuntime();
  let release: () => void = () => {};
  const late = new Promise<Connection>((resolve, reject) => {
    release = () => base.connect(target).then(resolve, reject);
  });
  const target = { hostname: "127.0.0.1", port: server.port! };
  let tries = 0;
  const runtime: Runtime = {
    ...base,
    connect(to): Promise<Connection> {
      return ++tries === 1 ? late : base.connect(to);
    },
  };
  await using session = await server.connect({
    runtime,
    connectTimeout: 2000,
  });
  assert.equal(await session.ping(), "pong");
  assert.equal(tries, 2);
  // The held connect completes after all: closed, not kept.
  release();
  await late;
  await waitFor(async () => (await session.status()).connections === 1, {
    message: "the late connection was not closed",
  });
});

Deno.test("Session.connect over TCP tries again a connection reset as it was made (a tcp_abort_on_overflow kernel's answer to a full accept queue)", async () => {
  await using server = await startServer();
  // With net.ipv4.tcp_abort_on_overflow=1 a full accept queue answers the
  // connect's last ACK with a reset: Deno's connect then failed at once
  // ("Connection reset by peer"), where Bun's completed and its handshake,
  // cut, was tried again (security27). Here the first connects reach a
  // listener that resets each connection it accepts.
  const resetting = createServer((socket) => socket.resetAndDestroy());
  await new Promise<void>((resolve) =>
    resetting.listen(0, "127.0.0.1", resolve)
  );
  try {
    const resetPort = (resetting.address() as AddressInfo).port;
    const { runtime, tries } = (() => {
      const base = defaultRuntime();
      let tries = 0;
      return {
        runtime: {
          ...base,
          connect(to): Promise<Connection> {
            return ++tries <= 3
              ? base.connect({ hostname: "127.0.0.1", port: resetPort })
              : base.connect(to);
          },
        } as Runtime,
        tries: () => tries,
      };
    })();
    await using session = await server.connect({
      runtime,
      connectTimeout: 5000,
    });
    assert.equal(await session.ping(), "pong");
    assert.equal(tries(), 4);
    // A listener that resets every connection: given up after the tries a
    // cut handshake gets, well within connectTimeout, saying why.
    const always: Runtime = {
      ...defaultRuntime(),
      connect: () =>
        defaultRuntime().connect({ hostname: "127.0.0.1", port: resetPort }),
    };
    await assert.rejects(
      server.connect({ runtime: always, connectTimeout: 60_000 }),
      (err: unknown) =>
        err instanceof ConnectionLostError &&
        /reset|closed|ended/i.test(err.message),
    );
  } finally {
    await new Promise<void>((resolve) => resetting.close(() => resolve()));
  }
});

Deno.test("Session.connect over TCP fails at once when its only connect is refused (no listener)", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const base = defaultRuntime();
  let tries = 0;
  const runtime: Runtime = {
    ...base,
    connect(to): Promise<Connection> {
      tries++;
      return base.connect(to);
    },
  };
  await assert.rejects(
    Session.connect({ port, runtime, secret: "00", connectTimeout: 5000 }),
    ConnectionLostError,
  );
  // Not tried again until connectTimeout: a worker gone is said so at once.
  assert.equal(tries, 1);
});

Deno.test("Session.connect over TCP gives up the raced connects still under way once one completes", async () => {
  await using server = await startServer();
  // Each would otherwise wait on its own SYNs, up to a minute or two, for a
  // connection only to be closed.
  const base = defaultRuntime();
  let given: unknown;
  let tries = 0;
  const runtime: Runtime = {
    ...base,
    connect(to): Promise<Connection> {
      if (++tries > 1) return base.connect(to);
      // Under way until given up, as a connect whose SYN was dropped.
      return new Promise((_, reject) => {
        to.signal?.addEventListener("abort", () => {
          given = to.signal?.reason;
          reject(to.signal?.reason);
        });
      });
    },
  };
  await using session = await server.connect({
    runtime,
    connectTimeout: 2000,
  });
  assert.equal(await session.ping(), "pong");
  assert.equal(tries, 2);
  assert.ok(given instanceof DOMException && given.name === "AbortError");
});

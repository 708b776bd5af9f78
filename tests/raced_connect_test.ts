// racedConnect: fresh connects race one whose SYN a full accept queue
// dropped; none of them may outlive the caller's wait.
import assert from "node:assert/strict";
import { racedConnect } from "../src/_raced_connect.ts";
import { Session } from "../src/session.ts";
import { TimeoutError } from "../src/errors.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Connection, ConnectTarget } from "../src/runtime/types.ts";

/**
 * A connect that never completes (a dropped SYN): it fails only when its
 * signal is aborted. `started` resolves once `count` connects started.
 */
function hangingConnects(count: number) {
  const signals: AbortSignal[] = [];
  const { promise: started, resolve } = Promise.withResolvers<void>();
  const connect = (target: ConnectTarget): Promise<Connection> => {
    const signal = target.signal;
    assert.ok(signal !== undefined, "every raced connect can be given up");
    signals.push(signal);
    if (signals.length === count) resolve();
    return new Promise<Connection>((_, reject) => {
      if (signal.aborted) reject(signal.reason);
      signal.addEventListener("abort", () => reject(signal.reason), {
        once: true,
      });
    });
  };
  return { connect, signals, started };
}

/** A connection whose `close` is counted. */
function fakeConnection(closed: { count: number }): Connection {
  return {
    close() {
      closed.count++;
    },
  } as unknown as Connection;
}

Deno.test("racedConnect: the caller's signal gives up every connect under way", async () => {
  const { connect, signals, started } = hangingConnects(3);
  const caller = new AbortController();
  const connecting = racedConnect(connect, {
    hostname: "127.0.0.1",
    port: 9,
    signal: caller.signal,
  }, Date.now() + 10_000);
  await started;
  caller.abort(new Error("time is out"));
  await assert.rejects(connecting, /time is out/);
  assert.ok(signals.every((s) => s.aborted), "no connect is left waiting");
  // And none starts after it (the next would have started within 40 ms:
  // there is no event for a connect that is not started).
  const before = signals.length;
  await new Promise((resolve) => setTimeout(resolve, 150));
  assert.equal(signals.length, before);
});

Deno.test("racedConnect: a signal already aborted starts no connect", async () => {
  const { connect, signals } = hangingConnects(1);
  await assert.rejects(
    racedConnect(connect, {
      hostname: "127.0.0.1",
      port: 9,
      signal: AbortSignal.abort(new Error("gone")),
    }, Date.now() + 10_000),
    /gone/,
  );
  assert.equal(signals.length, 0);
});

Deno.test("racedConnect: the first connect to complete wins, the others are given up", async () => {
  const signals: AbortSignal[] = [];
  const givenUp: number[] = [];
  const closed = { count: 0 };
  const { promise: third, resolve: thirdStarted } = Promise.withResolvers<
    (conn: Connection) => void
  >();
  const connect = (target: ConnectTarget): Promise<Connection> => {
    const signal = target.signal!;
    const index = signals.push(signal) - 1;
    return new Promise<Connection>((resolve, reject) => {
      signal.addEventListener("abort", () => {
        givenUp.push(index);
        reject(signal.reason);
      }, { once: true });
      if (signals.length === 3) thirdStarted(resolve);
    });
  };
  const connecting = racedConnect(connect, {
    hostname: "127.0.0.1",
    port: 9,
  }, Date.now() + 10_000);
  const complete = await third;
  const conn = fakeConnection(closed);
  complete(conn);
  assert.equal(await connecting, conn);
  // One signal for all: the winner's abort comes after it completed.
  assert.deepEqual(givenUp.filter((i) => i !== 2), [0, 1]);
  assert.equal(closed.count, 0);
});

Deno.test("racedConnect: a refused connect, the only one under way, fails at once", async () => {
  let calls = 0;
  const refused = Object.assign(new Error("refused"), {
    code: "ECONNREFUSED",
  });
  await assert.rejects(
    racedConnect(
      () => {
        calls++;
        return Promise.reject(refused);
      },
      { hostname: "127.0.0.1", port: 9 },
      Date.now() + 10_000,
    ),
    (err) => err === refused,
  );
  assert.equal(calls, 1);
});

Deno.test("racedConnect: a Unix socket is one connect", async () => {
  const closed = { count: 0 };
  const conn = fakeConnection(closed);
  let calls = 0;
  const got = await racedConnect(
    (target) => {
      calls++;
      assert.equal(target.path, "/tmp/x.sock");
      return Promise.resolve(conn);
    },
    { path: "/tmp/x.sock" },
    Date.now() + 10_000,
  );
  assert.equal(got, conn);
  assert.equal(calls, 1);
});

Deno.test("Session.connect: a connect that timed out leaves no connect under way", async () => {
  const { connect, signals, started } = hangingConnects(2);
  const connecting = Session.connect({
    port: 9,
    connectTimeout: 300,
    runtime: { ...defaultRuntime(), connect },
  });
  await started;
  await assert.rejects(connecting, (err) => {
    assert.ok(err instanceof TimeoutError, String(err));
    return true;
  });
  assert.ok(signals.length >= 2);
  assert.ok(
    signals.every((s) => s.aborted),
    `${
      signals.filter((s) => !s.aborted).length
    } of ${signals.length} connects left waiting on their SYNs`,
  );
});

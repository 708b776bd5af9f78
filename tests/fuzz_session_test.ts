/**
 * Fuzz tests of `Session` (the host side) against peers on real sockets: a
 * scripted fake server (to send what a correct server never would: duplicate
 * replies, replies for unknown ids, late replies, stray events, corrupted
 * frames, or protocol messages our Python server does not use) and a real
 * Python server (random requests with random timeouts and
 * aborts). Every request settles exactly once, the session never crashes,
 * and `inFlight` returns to 0.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CancelledError,
  ConnectionLostError,
  OverloadedError,
  PyProxyError,
} from "../src/errors.ts";
import { Session } from "../src/session.ts";
import {
  decodedMessages,
  encodeFrame,
  SLEEPER,
  startServer,
} from "./_harness.ts";

const SEED = 424242;
type Msg = Record<string, unknown>;

/** What a fake server does with each message it receives; `send` writes frames. */
type Script = (msg: Msg, send: (...frames: Uint8Array[]) => void) => void;

/** A TCP server on 127.0.0.1 that says hello (`auth: "none"`) and runs `script` per message. */
function fakeServer(script: Script): {
  port: number;
  connections: () => number;
  [Symbol.asyncDispose](): Promise<void>;
} {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const serveOne = async (conn: Deno.Conn): Promise<void> => {
    conns.add(conn);
    const writer = conn.writable.getWriter();
    const send = (...frames: Uint8Array[]): void => {
      for (const f of frames) writer.write(f).catch(() => {});
    };
    send(encodeFrame({
      event: "hello",
      version: 1,
      serverId: "fake",
      pid: 1,
      auth: "none",
    }));
    try {
      for await (const batch of decodedMessages(conn.readable)) {
        for (const msg of batch) {
          if (!(msg instanceof Error)) script(msg, send);
        }
      }
    } catch {
      // the session closed the connection
    } finally {
      conns.delete(conn);
      try {
        conn.close();
      } catch {
        // already closed
      }
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) tasks.push(serveOne(conn));
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    connections: () => conns.size,
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch {
          // already closed
        }
      }
      await accepting;
      await Promise.all(tasks);
    },
  };
}

/** Settles `promise` into a record, failing the test if it settles twice (it cannot) or with an untyped error. */
async function outcome(
  promise: Promise<unknown>,
): Promise<{ ok: true; value: unknown } | { ok: false; error: Error }> {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    assert.ok(error instanceof Error, `untyped rejection ${error}`);
    return { ok: false, error };
  }
}

/** One reply script per request: how many replies, whether they succeed, what junk comes around them. */
const replyPlan = fc.record({
  copies: fc.integer({ min: 0, max: 3 }),
  ok: fc.boolean(),
  strayBefore: fc.array(
    fc.oneof(
      fc.record({
        id: fc.integer({ min: 1_000_000, max: 2_000_000 }),
        ok: fc.boolean(),
        result: fc.jsonValue({ maxDepth: 1 }),
      }),
      fc.record({
        event: fc.string({ maxLength: 5 }),
        id: fc.oneof(
          fc.integer({ min: 1_000_000 }),
          fc.string(),
          fc.constant(null),
        ),
      }),
      fc.record({ id: fc.string(), ok: fc.constant(true) }),
      fc.record({ unknownShape: fc.jsonValue({ maxDepth: 1 }) }),
    ),
    { maxLength: 3 },
  ),
  timeout: fc.option(fc.constant(1), { freq: 4 }),
});

Deno.test("Session ignores duplicate, unknown, late and stray replies and settles each request once", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(replyPlan, { minLength: 1, maxLength: 12 }),
      async (plans) => {
        const byValue = new Map<number, (typeof plans)[number]>();
        const replies = (id: number, plan: (typeof plans)[number]) =>
          Array.from({ length: plan.copies }, (_, n) =>
            encodeFrame(
              plan.ok ? { id, ok: true, result: { id, n } } : {
                id,
                ok: false,
                error: { type: "PythonError", message: `m${n}` },
              },
            ));
        await using server = fakeServer((msg, send) => {
          const id = msg.id as number;
          if (msg.cmd === "ping") {
            send(encodeFrame({ id, ok: true, result: "pong" }));
            return;
          }
          if (msg.cmd === "cancel") {
            // The late reply of a timed-out request arrives after its cancel.
            const target = msg.target as number;
            const plan = byValue.get(target);
            if (plan) send(...replies(target, { ...plan, copies: 1 }));
            send(encodeFrame({ id, ok: true, result: { cancelled: false } }));
            return;
          }
          const plan = plans[msg.n as number]!;
          byValue.set(id, plan);
          send(...plan.strayBefore.map((m) => encodeFrame(m)));
          if (plan.timeout === null) send(...replies(id, plan));
        });
        await using session = await Session.connect({ port: server.port });
        const promises = plans.map((plan, n) =>
          session.request("work", { n }, {
            ...(plan.timeout === null ? {} : { timeout: plan.timeout }),
          })
        );
        // Requests without a reply would wait forever: time them out through a ping barrier.
        const results = await Promise.all(
          promises.map((p, n) =>
            plans[n]!.copies === 0 && plans[n]!.timeout === null
              ? outcome(Promise.race([p, session.ping().then(() => "noreply")]))
              : outcome(p)
          ),
        );
        results.forEach((r, n) => {
          const plan = plans[n]!;
          if (plan.timeout !== null) {
            assert.ok(!r.ok && r.error.name === "TimeoutError", String(r));
          } else if (plan.copies === 0) {
            assert.ok(r.ok && r.value === "noreply");
          } else if (plan.ok) {
            // The first reply wins; duplicates never overwrite it.
            assert.ok(r.ok);
            assert.equal((r.value as { n: number }).n, 0);
          } else {
            assert.ok(!r.ok && r.error instanceof PyProxyError);
            assert.ok(r.error.message.endsWith("m0"), r.error.message);
          }
        });
        assert.equal(await session.ping(), "pong");
        assert.equal(session.isClosed, false);
        // The unanswered ones are still pending; closing settles them, then nothing is left.
        await session.close();
        assert.equal(session.inFlight, 0);
      },
    ),
    { seed: SEED, numRuns: 40 },
  );
});

Deno.test("Session closes cleanly on any corrupted frame from the server and settles every pending request", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ minLength: 1, maxLength: 80 }),
        fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(
          ([at, xor]) => {
            const frame = encodeFrame({ id: 1, ok: true, result: "x" });
            frame[at % frame.length]! ^= xor;
            return frame;
          },
        ),
        fc.constantFrom("[1]", "7", "nope", "").map((s) => encodeFrame(s)),
      ),
      fc.integer({ min: 1, max: 5 }),
      async (junk, count) => {
        await using server = fakeServer((msg, send) => {
          if (msg.cmd === "trigger") send(junk);
        });
        await using session = await Session.connect({ port: server.port });
        const waiting = Array.from(
          { length: count },
          () => outcome(session.request("hang")),
        );
        // A mutated length may announce a frame that never completes: the timeout ends the wait.
        const trigger = await outcome(
          session.request("trigger", {}, { timeout: 200 }),
        );
        if (!session.isClosed) {
          assert.ok(!trigger.ok && trigger.error.name === "TimeoutError");
          await session.close();
        }
        const all = [...await Promise.all(waiting), trigger];
        for (const r of all) {
          if (!r.ok) {
            assert.ok(
              r.error instanceof ConnectionLostError ||
                r.error.name === "TimeoutError" ||
                r.error instanceof PyProxyError,
              String(r.error),
            );
          }
        }
        await session.close();
        assert.equal(session.inFlight, 0);
        // The peer is still there for a fresh connection.
        await using again = await Session.connect({ port: server.port });
        assert.equal(again.isClosed, false);
      },
    ),
    { seed: SEED, numRuns: 30 },
  );
});

Deno.test("Session resolves a reply nested 100,000 deep or rejects it with a typed error", async () => {
  const depth = 100_000;
  await using server = fakeServer((msg, send) => {
    const id = msg.id as number;
    if (msg.cmd === "deep") {
      send(
        encodeFrame(
          `{"id":${id},"ok":true,"result":${"[".repeat(depth)}${
            "]".repeat(depth)
          }}`,
        ),
      );
    } else send(encodeFrame({ id, ok: true, result: "pong" }));
  });
  await using session = await Session.connect({ port: server.port });
  const r = await outcome(session.request("deep"));
  if (r.ok) {
    let v = r.value as unknown[];
    let n = 0;
    while (Array.isArray(v) && v.length > 0) {
      v = v[0] as unknown[];
      n++;
    }
    assert.equal(n, depth - 1);
    assert.equal(await session.ping(), "pong");
  } else assert.ok(r.error instanceof PyProxyError, String(r.error));
  assert.equal(session.inFlight, 0);
});

Deno.test("Session with integers 'number' fails a result holding an integer beyond 2^53, and passes an error reply or an event on with it rounded", async () => {
  const big = "123456789012345678901";
  await using server = fakeServer((msg, send) => {
    const id = msg.id as number;
    if (msg.cmd === "result") {
      send(encodeFrame(`{"id":${id},"ok":true,"result":{"id":${big}}}`));
    } else if (msg.cmd === "error") {
      send(
        encodeFrame(
          `{"event":"log","level":"info","text":"x","n":${big}}`,
        ),
        encodeFrame(
          `{"id":${id},"ok":false,"error":{"type":"ValueError","message":"bad id","id":${big}}}`,
        ),
      );
    } else send(encodeFrame({ id, ok: true, result: "pong" }));
  });
  await using session = await Session.connect({ port: server.port });
  const events: Msg[] = [];
  session.onEvent((ev) => void events.push(ev));
  await assert.rejects(
    session.request("result"),
    (err: Error) => err.name === "UnsafeIntegerError",
  );
  // The error is what the caller gets, not an UnsafeIntegerError in its place.
  await assert.rejects(session.request("error"), (err: Error) => {
    assert.equal(err.name, "ValueError");
    assert.equal(err.message, "bad id");
    assert.equal(
      (err as PyProxyError & { details: Msg }).details.id,
      Number(big),
    );
    return true;
  });
  assert.equal(events.length, 1);
  assert.equal(events[0]!.n, Number(big));
  assert.equal(await session.ping(), "pong");
  assert.equal(session.inFlight, 0);
});

Deno.test("Session rejects requests beyond maxPending at once with OverloadedError", async () => {
  const held: Array<() => void> = [];
  const allHeld = Promise.withResolvers<void>();
  await using server = fakeServer((msg, send) => {
    const reply = () =>
      send(encodeFrame({ id: msg.id, ok: true, result: msg.cmd }));
    if (msg.cmd !== "hold") return reply();
    held.push(reply);
    if (held.length === 4) allHeld.resolve();
  });
  await using session = await Session.connect({
    port: server.port,
    maxPending: 4,
  });
  const first = Array.from({ length: 4 }, () => session.request("hold"));
  await assert.rejects(session.request("ping"), OverloadedError);
  assert.equal(session.inFlight, 4);
  await allHeld.promise;
  for (const reply of held) reply();
  assert.deepEqual(await Promise.all(first), [
    "hold",
    "hold",
    "hold",
    "hold",
  ]);
  assert.equal(session.inFlight, 0);
  assert.equal(await session.request("ping"), "ping");
});

Deno.test("Session against a real server: random requests, timeouts and aborts all settle and nothing leaks", async () => {
  await using server = await startServer({ files: { "sleeper.py": SLEEPER } });
  await using control = await server.connect();
  await control.addModel("sleeper", { file: "sleeper.py" });
  const baseline = (await control.status()).connections;
  const step = fc.record({
    kind: fc.constantFrom("ping", "sleep", "unknown", "eval", "badArgs"),
    timeout: fc.option(fc.integer({ min: 1, max: 30 }), { freq: 2 }),
    abortAfter: fc.option(fc.integer({ min: 0, max: 20 }), { freq: 3 }),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.array(step, { minLength: 1, maxLength: 25 }),
      async (steps) => {
        const session = await server.connect();
        // Cleared once the calls settle: an abort due after its call ended
        // would otherwise outlive the test (Deno's op sanitizer).
        const aborts: ReturnType<typeof setTimeout>[] = [];
        const calls = steps.map((s) => {
          const controller = new AbortController();
          if (s.abortAfter !== null) {
            aborts.push(setTimeout(() => controller.abort(), s.abortAfter));
          }
          const options = {
            signal: controller.signal,
            ...(s.timeout === null ? {} : { timeout: s.timeout }),
          };
          switch (s.kind) {
            case "ping":
              return outcome(session.ping(options));
            case "sleep":
              return outcome(
                session.execute("sleeper", { seconds: 0.05 }, options),
              );
            case "unknown":
              return outcome(session.request("noSuchCommand", {}, options));
            case "eval":
              return outcome(
                session.request("eval", { code: "print('x' * 70000)\n1" }, {
                  ...options,
                  onEvent: () => {},
                }),
              );
            default:
              return outcome(
                session.request("executeModel", { name: 5, msg: [] }, options),
              );
          }
        });
        const results = await Promise.all(calls);
        for (const timer of aborts) clearTimeout(timer);
        for (const r of results) {
          if (!r.ok) {
            assert.ok(r.error instanceof PyProxyError, String(r.error));
          }
        }
        assert.equal(session.inFlight, 0);
        assert.equal(await session.ping(), "pong");
        await session.close();
      },
    ),
    { seed: SEED, numRuns: 15 },
  );
  // The server forgets every closed connection and every cancelled call.
  for (let i = 0;; i++) {
    const status = await control.status();
    if (status.connections === baseline && status.inFlight === 0) break;
    assert.ok(i < 500, `server still holds ${JSON.stringify(status)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(await control.ping(), "pong");
});

Deno.test("Session: a server cancels its own host command (protocol §7), and a cancel of nothing says so", async () => {
  // Our Python server never sends this: a scripted peer does, over a real socket.
  const replies = new Map<number, Msg>();
  // Resolved once replies 8 and 9 (the cancels) and then 7 are in.
  const cancels = Promise.withResolvers<void>();
  const command = Promise.withResolvers<void>();
  await using server = fakeServer((msg, send) => {
    if (msg.cmd === "go") {
      // Host command 7, then its cancel (id 8), then a cancel of an unknown id (9).
      send(encodeFrame({ id: 7, cmd: "wait", args: {} }));
      send(encodeFrame({ id: 8, cmd: "cancel", target: 7 }));
      send(encodeFrame({ id: 9, cmd: "cancel", target: 12345 }));
      send(encodeFrame({ id: msg.id, ok: true, result: null }));
    } else if (typeof msg.id === "number" && "ok" in msg) {
      replies.set(msg.id, msg);
      if (replies.has(8) && replies.has(9)) cancels.resolve();
      if (msg.id === 7) command.resolve();
    }
  });
  let aborted: unknown;
  await using session = await Session.connect({
    port: server.port,
    handlers: {
      wait: (_args, call) =>
        new Promise((_resolve, reject) =>
          call.signal.addEventListener("abort", () => {
            aborted = call.signal.reason;
            reject(call.signal.reason);
          })
        ),
    },
  });
  await session.request("go");
  await cancels.promise;
  assert.deepEqual(replies.get(8), {
    id: 8,
    ok: true,
    result: { cancelled: true },
  });
  assert.deepEqual(replies.get(9), {
    id: 9,
    ok: true,
    result: { cancelled: false },
  });
  assert.ok(aborted instanceof CancelledError, String(aborted));
  // The cancelled command still gets its (error) reply.
  await command.promise;
  assert.equal(replies.get(7)?.ok, false);
});

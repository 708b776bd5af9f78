import assert from "node:assert/strict";
import {
  AuthenticationError,
  CancelledError,
  ChecksumError,
  ConfigError,
  ConnectionLostError,
  PluginError,
  PythonError,
  RemoteError,
  SerializationError,
  TimeoutError,
} from "../src/errors.ts";
import { HEADER_SIZE } from "../src/protocol/mod.ts";
import { VERSION } from "../src/protocol/frame.ts";
import { denoRuntime } from "../src/runtime/deno.ts";
import type { Connection, Runtime } from "../src/runtime/types.ts";
import { Session, type SessionMessage } from "../src/session.ts";
import { wasUnsent } from "../src/_unsent.ts";
import {
  DOUBLER,
  encodeFrame,
  HOST_CALLER,
  RAISER,
  recordingLogger,
  SLEEPER,
  startServer,
  type TestServer,
  waitFor,
} from "./_harness.ts";

/** A real Deno runtime whose connections count (and may alter) the chunks crossing the socket. */
function tappedRuntime(taps: {
  write?: (chunk: Uint8Array, index: number) => Uint8Array;
  read?: (chunk: Uint8Array, index: number) => Uint8Array;
} = {}): { runtime: Runtime; writes: number[] } {
  const base = denoRuntime();
  const writes: number[] = [];
  const runtime: Runtime = {
    ...base,
    async connect(target): Promise<Connection> {
      const conn = await base.connect(target);
      let reads = 0;
      const out = new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, controller) {
          const index = writes.push(chunk.length) - 1;
          controller.enqueue(taps.write ? taps.write(chunk, index) : chunk);
        },
      });
      out.readable.pipeTo(conn.writable).catch(() => {});
      const readable = conn.readable.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            controller.enqueue(taps.read ? taps.read(chunk, reads++) : chunk);
          },
        }),
      );
      return { readable, writable: out.writable, close: () => conn.close() };
    },
  };
  return { runtime, writes };
}

/** Settles a promise into a value/error record so tests can count settlements. */
function track<T>(
  promise: Promise<T>,
  log: Array<{ ok: boolean; value: unknown }>,
): void {
  promise.then(
    (value) => log.push({ ok: true, value }),
    (value) => log.push({ ok: false, value }),
  );
}

// Steps on one Python server started as `startServer()`: each of these tests
// started its own (a Python server) and needs no fresh one.
Deno.test("Session on one Python server (each step its own sessions)", async (t) => {
  await using server = await startServer();
  await t.step(
    "Session connects, authenticates and answers ping",
    () => sessionConnectsAuthenticatesAndAnswers(server),
  );
  await t.step(
    "Session.connect rejects a wrong or missing secret with AuthenticationError",
    () => sessionConnectRejectsWrongOr(server),
  );
  await t.step(
    "Session times out a request, cancels it on the server and stays usable",
    () => sessionTimesOutRequestCancels(server),
  );
  await t.step(
    "Session onDone: at the reply, or for a request given up on when the server answers its cancel, or at close",
    () => sessionOndoneAtReplyOr(server),
  );
  await t.step(
    "Session rejects an aborted request with CancelledError and cancels it on the server",
    () => sessionRejectsAbortedRequestWith(server),
  );
  await t.step(
    "Session routes events with a pending id to onEvent and others to listeners",
    () => sessionRoutesEventsWithPending(server),
  );
  await t.step(
    "Session serves Python → host commands with its handlers",
    () => sessionServesPythonHostCommands(server),
  );
  await t.step(
    "Session gets a model's uncaught HostError with the model's traceback, and the worker logs it",
    () => sessionGetsModelUncaughtHosterror(server),
  );
  await t.step(
    "Session sends the cancel of a request that timed out or was aborted in async outgoing middleware after the request, so the server does not run it",
    () => sessionSendsCancelRequestThat(server),
  );
  await t.step(
    "Session runs middleware in order and fails only the request whose middleware throws",
    () => sessionRunsMiddlewareInOrder(server),
  );
  await t.step(
    "Session keeps replies in order behind an async incoming hook, and fails only the reply whose hook rejects",
    () => sessionKeepsRepliesInOrder(server),
  );
  await t.step(
    "Session.close rejects pending requests and later ones with ConnectionLostError",
    () => sessionCloseRejectsPendingRequests(server),
  );
  await t.step(
    "Session.request validates timeout and signal; timeout 0 times out at once, Infinity never",
    () => sessionRequestValidatesTimeoutAnd(server),
  );
  await t.step(
    "Session aborts the signal of running host handlers when it closes",
    () => sessionAbortsSignalRunningHost(server),
  );
  await t.step(
    "Session.lastActivity counts the time its own read loop waits for an incoming middleware (the peer's next bytes wait unread)",
    () => sessionLastactivityCountsTimeIts(server),
  );
});

/** A step of "Session on one Python server (each step its own sessions)": Session connects, authenticates and answers ping */
async function sessionConnectsAuthenticatesAndAnswers(
  server: TestServer,
): Promise<void> {
  await using session = await server.connect();
  assert.equal(await session.ping(), "pong");
  assert.equal(session.serverInfo.serverId, server.id);
  assert.equal(session.serverInfo.pid, server.pid);
  assert.equal(session.serverInfo.auth, "hmac-sha256");
  assert.equal(typeof session.connectionId, "string");
  assert.equal(session.serverInfo.nonce, undefined, "the nonce is not kept");
  assert.equal(session.isClosed, false);
  assert.equal(session.inFlight, 0);
}

Deno.test("Session loads models from a file and from source and executes them", async () => {
  await using server = await startServer({
    files: { "models/doubler.py": DOUBLER },
  });
  await using session = await server.connect();
  const described = await session.addModel("triple", {
    file: "models/doubler.py",
    options: { k: 3 },
  });
  assert.equal(described.name, "triple");
  assert.equal(described.class, "Doubler");
  assert.equal(described.version, 1);
  assert.deepEqual(described.inputs, { x: "number" });
  assert.deepEqual(await session.execute("triple", { x: 5 }), { y: 15 });

  await session.addModel("fromSource", { source: DOUBLER });
  assert.deepEqual(await session.execute("fromSource", { x: 4 }), { y: 8 });
  const updated = await session.updateModel("fromSource", {
    source: DOUBLER,
    options: { k: 10 },
  });
  assert.equal(updated.version, 2);
  assert.deepEqual(await session.execute("fromSource", { x: 4 }), { y: 40 });

  await session.addModel("raiser", { source: RAISER });
  await assert.rejects(
    session.execute("raiser", { text: "bad x" }),
    (err: unknown) => {
      assert.ok(err instanceof PythonError);
      assert.equal(err.type, "ValueError");
      assert.match(err.message, /bad x/);
      assert.match(err.traceback, /Traceback/);
      return true;
    },
  );
  assert.deepEqual(await session.removeModel("raiser"), {
    name: "raiser",
    removed: true,
  });
  await assert.rejects(session.execute("raiser", {}), (err: unknown) => {
    assert.ok(err instanceof RemoteError);
    assert.equal(err.remoteType, "ModelNotFoundError");
    return true;
  });
  await assert.rejects(
    session.addModel("escape", { file: "../outside.py" }),
    (err: unknown) =>
      err instanceof RemoteError && err.remoteType === "PathError",
  );
  const status = await session.status();
  assert.equal(status.id, server.id);
  assert.ok(status.requestsServed > 0);
});

Deno.test("Session pipelines 1000 requests in one write and matches every reply to its request", async () => {
  const { runtime, writes } = tappedRuntime();
  await using server = await startServer({ runtime });
  await using session = await server.connect();
  await session.addModel("doubler", { source: DOUBLER });
  const before = writes.length;
  const calls = Array.from(
    { length: 1000 },
    (_, i) => session.execute("doubler", { x: i }),
  );
  assert.equal(session.inFlight, 1000);
  const results = await Promise.all(calls);
  assert.deepEqual(
    results,
    Array.from({ length: 1000 }, (_, i) => ({ y: 2 * i })),
  );
  assert.equal(
    writes.length - before,
    1,
    "1000 requests sent in one microtask go out in one write",
  );
  assert.equal(session.inFlight, 0);
});

Deno.test("Session connects over a Unix socket", async () => {
  await using server = await startServer({ unix: true, port: 0 });
  assert.ok(server.unixPath?.endsWith("server.sock"));
  await using session = await Session.connect({
    path: server.unixPath!,
    secret: server.secret,
  });
  assert.equal(await session.ping(), "pong");
  await using tcp = await server.connect({ transport: "tcp" });
  assert.equal(await tcp.ping(), "pong");
});

/** A step of "Session on one Python server (each step its own sessions)": Session.connect rejects a wrong or missing secret with AuthenticationError */
async function sessionConnectRejectsWrongOr(server: TestServer): Promise<void> {
  await assert.rejects(
    Session.connect({ port: server.port, secret: "0".repeat(64) }),
    (err: unknown) =>
      err instanceof AuthenticationError && /bad mac/.test(err.message),
  );
  await assert.rejects(
    Session.connect({ port: server.port }),
    AuthenticationError,
  );
  // The server is unaffected.
  await using session = await server.connect();
  assert.equal(await session.ping(), "pong");
}

Deno.test("Session.connect works with a server started without authentication", async () => {
  await using server = await startServer({ args: ["--insecure-no-auth"] });
  await using session = await Session.connect({ port: server.port });
  assert.equal(session.serverInfo.auth, "none");
  assert.equal(await session.ping(), "pong");
});

Deno.test("Session.connect rejects with ConnectionLostError when nothing listens", async () => {
  await using server = await startServer();
  const port = server.port;
  await server.kill("SIGKILL");
  await assert.rejects(
    Session.connect({ port, secret: server.secret }),
    ConnectionLostError,
  );
});

/** A step of "Session on one Python server (each step its own sessions)": Session times out a request, cancels it on the server and stays usable */
async function sessionTimesOutRequestCancels(
  server: TestServer,
): Promise<void> {
  await using session = await server.connect();
  await session.addModel("sleeper", { source: SLEEPER });
  await assert.rejects(
    session.execute("sleeper", { seconds: 30 }, { timeout: 100 }),
    (err: unknown) =>
      err instanceof TimeoutError && /timed out after 100 ms/.test(err.message),
  );
  assert.equal(session.inFlight, 0);
  assert.equal(await session.ping(), "pong");
  // Without the cancel the sleeper would keep running for 30 s.
  await waitFor(async () => (await session.status()).inFlight === 0, {
    message: "the server cancels the call",
  });
}

/** A step of "Session on one Python server (each step its own sessions)": Session onDone: at the reply, or for a request given up on when the server answers its cancel, or at close */
async function sessionOndoneAtReplyOr(server: TestServer): Promise<void> {
  const session = await server.connect();
  try {
    await session.addModel("sleeper", { source: SLEEPER });
    const done: string[] = [];
    const mark = (what: string) => () => done.push(what);
    await session.ping({ onDone: mark("ping") });
    assert.deepEqual(done, ["ping"]);
    // Refused before it was sent: at once.
    await assert.rejects(session.ping({ timeout: 0, onDone: mark("refused") }));
    assert.deepEqual(done, ["ping", "refused"]);
    // Timed out here: not done until the server answered the cancel.
    await assert.rejects(
      session.execute("sleeper", { seconds: 30 }, {
        timeout: 50,
        onDone: mark("timed out"),
      }),
      TimeoutError,
    );
    assert.deepEqual(done, ["ping", "refused"]);
    await waitFor(() => done.length === 3, {
      message: "the server answers the cancel",
    });
    assert.deepEqual(done, ["ping", "refused", "timed out"]);
    // Given up on and never answered before the session closes: at close.
    const stuck = new AbortController();
    const call = assert.rejects(
      session.execute("sleeper", { seconds: 30 }, {
        signal: stuck.signal,
        onDone: mark("closed"),
      }),
      CancelledError,
    );
    stuck.abort();
    assert.equal(done.length, 3);
    await session.close();
    await call;
    assert.deepEqual(done, ["ping", "refused", "timed out", "closed"]);
  } finally {
    await session.close();
  }
}

/** A step of "Session on one Python server (each step its own sessions)": Session rejects an aborted request with CancelledError and cancels it on the server */
async function sessionRejectsAbortedRequestWith(
  server: TestServer,
): Promise<void> {
  await using session = await server.connect();
  await session.addModel("sleeper", { source: SLEEPER });
  const controller = new AbortController();
  const call = session.execute("sleeper", { seconds: 30 }, {
    signal: controller.signal,
  });
  await waitFor(async () => (await session.status()).inFlight === 1, {
    message: "the call starts",
  });
  controller.abort(new Error("user clicked stop"));
  await assert.rejects(
    call,
    (err: unknown) =>
      err instanceof CancelledError &&
      (err.cause as Error).message === "user clicked stop",
  );
  await waitFor(async () => (await session.status()).inFlight === 0, {
    message: "the server cancels the call",
  });
  await assert.rejects(
    session.ping({ signal: AbortSignal.abort() }),
    CancelledError,
  );
  assert.equal(session.inFlight, 0);
}

Deno.test("Session settles every pending request once with ConnectionLostError when the server is SIGKILLed", async () => {
  await using server = await startServer();
  const session = await server.connect();
  try {
    await session.addModel("sleeper", { source: SLEEPER });
    const log: Array<{ ok: boolean; value: unknown }> = [];
    for (let i = 0; i < 20; i++) {
      track(
        session.execute("sleeper", { seconds: 30 }, { timeout: 60_000 }),
        log,
      );
    }
    // The server answers ping after reading every request sent before it: all 20 are in flight there.
    assert.equal(await session.ping(), "pong");
    assert.equal(session.inFlight, 20);
    await server.kill("SIGKILL");
    await session.closed;
    assert.equal(session.isClosed, true);
    await waitFor(() => log.length === 20);
    assert.ok(
      log.every((r) => !r.ok && r.value instanceof ConnectionLostError),
      JSON.stringify(log),
    );
    // Settled exactly once: nothing else arrives later (timers were cleared, so 60 s timeouts cannot fire).
    assert.equal(session.inFlight, 0);
    await assert.rejects(session.ping(), ConnectionLostError);
    assert.equal(log.length, 20);
  } finally {
    await session.close();
  }
});

/** A step of "Session on one Python server (each step its own sessions)": Session routes events with a pending id to onEvent and others to listeners */
async function sessionRoutesEventsWithPending(
  server: TestServer,
): Promise<void> {
  await using session = await server.connect();
  const mine: SessionMessage[] = [];
  const others: SessionMessage[] = [];
  const off = session.onEvent((event) => others.push(event));
  const result = await session.request<{ value: unknown }>(
    "eval",
    { code: "print('hello')\n40 + 2" },
    { onEvent: (event) => mine.push(event) },
  );
  assert.equal(result.value, 42);
  assert.ok(
    mine.some((e) => e.event === "output" && String(e.data).includes("hello")),
    JSON.stringify(mine),
  );
  assert.ok(mine.every((e) => e.id !== undefined));
  // Without onEvent the events of a request reach the listeners.
  await session.request("eval", { code: "print('to listeners')" });
  assert.ok(
    others.some((e) =>
      e.event === "output" && String(e.data).includes("to listeners")
    ),
  );
  off();
  const count = others.length;
  await session.request("eval", { code: "print('nobody')" });
  assert.equal(others.length, count);
}

/** A step of "Session on one Python server (each step its own sessions)": Session serves Python → host commands with its handlers */
async function sessionServesPythonHostCommands(
  server: TestServer,
): Promise<void> {
  const seen: Array<{ args: unknown; id: number }> = [];
  const { logger, entries } = recordingLogger();
  await using session = await server.connect({
    handlers: {
      add: (args, call) => {
        seen.push({ args, id: call.id });
        const { a, b } = args as { a: number; b: number };
        return a + b;
      },
      slowEcho: async (args) => await Promise.resolve(args),
      // An awaitable that is not a Promise (a query builder's): its value,
      // not the object (it sent {}).
      thenable: (args) => ({
        then(resolve: (v: unknown) => void) {
          setTimeout(() => resolve({ rows: args }), 1);
        },
      }),
      fail: () => {
        throw new Error("handler exploded");
      },
      rejectTyped: () => Promise.reject(new ConfigError("no such table")),
    },
    logger,
  });
  await session.addModel("caller", { source: HOST_CALLER });
  assert.deepEqual(
    await session.execute("caller", { cmd: "add", args: { a: 2, b: 3 } }),
    { result: 5 },
  );
  assert.equal(seen.length, 1);
  assert.equal(typeof seen[0]!.id, "number");
  assert.deepEqual(
    await session.execute("caller", { cmd: "slowEcho", args: [1, "two"] }),
    { result: [1, "two"] },
  );
  assert.deepEqual(
    await session.execute("caller", { cmd: "thenable", args: 3 }),
    { result: { rows: 3 } },
  );
  // A handler's bug: Python's message names the command, the host logs it
  // with the error (Python sees only the message).
  await assert.rejects(
    session.execute("caller", { cmd: "fail" }),
    /HostError: Cannot run host command fail: handler exploded \(Error in the host's handler\)/,
  );
  const hostFailures = () =>
    entries.filter(([level, m]) =>
      level === "warn" && m.startsWith("Host command")
    );
  const logged = hostFailures();
  assert.equal(logged.length, 1);
  assert.equal(logged[0]![2]?.cmd, "fail");
  assert.match(
    String((logged[0]![2]?.error as Error).stack),
    /handler exploded/,
  );
  // A typed error is the handler's answer: as it is, not logged.
  await assert.rejects(
    session.execute("caller", { cmd: "rejectTyped" }),
    /Host replied ConfigError: no such table/,
  );
  assert.equal(
    hostFailures().length,
    1,
  );
  await assert.rejects(
    session.execute("caller", { cmd: "nope" }),
    /Cannot run nope: no such host command \(register it in a plugin's handlers, passed to Pool\.start or serve: docs\/plugins\.md\)/,
  );
  session.setHandler("nope", () => "now there");
  assert.deepEqual(await session.execute("caller", { cmd: "nope" }), {
    result: "now there",
  });
  session.setHandler("nope", undefined);
  await assert.rejects(
    session.execute("caller", { cmd: "nope" }),
    /no such host command/,
  );
}

/** The text of every log file of the server whose `--path` is `dir`. */
async function logText(dir: string): Promise<string> {
  let text = "";
  for await (const entry of Deno.readDir(`${dir}/logs`)) {
    if (entry.name.endsWith(".log")) {
      text += await Deno.readTextFile(`${dir}/logs/${entry.name}`);
    }
  }
  return text;
}

/** A step of "Session on one Python server (each step its own sessions)": Session gets a model's uncaught HostError with the model's traceback, and the worker logs it */
async function sessionGetsModelUncaughtHosterror(
  server: TestServer,
): Promise<void> {
  await using session = await server.connect({
    handlers: {
      fail: () => {
        throw new ConfigError("no such table");
      },
    },
  });
  await session.addModel("caller", { source: HOST_CALLER });
  for (const cmd of ["fail", "nope"]) {
    const error = await session.execute("caller", { cmd }).then(
      () => assert.fail("expected a HostError"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof RemoteError, String(error));
    assert.equal(error.remoteType, "HostError");
    // The model's frame, where it called the host, and the exception line.
    const traceback = String(error.details.traceback);
    assert.match(traceback, /in execute\n\s+return \{"result": host\.call\(/);
    assert.match(traceback, /HostError: Host replied /);
  }
  await waitFor(async () =>
    (await logText(server.dir)).includes("(model caller) raised HostError")
  );
}

/** A step of "Session on one Python server (each step its own sessions)": Session sends the cancel of a request that timed out or was aborted in async outgoing middleware after the request, so the server does not run it */
async function sessionSendsCancelRequestThat(
  server: TestServer,
): Promise<void> {
  // Holds executeModel in its outgoing hook (as spill-over does while it
  // writes a large message to a file) and reports the server's cancel replies.
  let gate = Promise.withResolvers<void>();
  let entered = Promise.withResolvers<void>();
  let cancelReply = Promise.withResolvers<unknown>();
  const cancelIds = new Set<unknown>();
  await using session = await server.connect({
    middleware: [{
      name: "gate",
      outgoing: (msg) => {
        if (msg.cmd === "cancel") cancelIds.add(msg.id);
        if (msg.cmd !== "executeModel") return msg;
        entered.resolve();
        return gate.promise.then(() => msg);
      },
      incoming: (msg) => {
        if (cancelIds.has(msg.id)) cancelReply.resolve(msg.result);
        return msg;
      },
    }],
  });
  await session.addModel("sleeper", { source: SLEEPER });
  for (const how of ["abort", "timeout"] as const) {
    gate = Promise.withResolvers<void>();
    entered = Promise.withResolvers<void>();
    cancelReply = Promise.withResolvers<unknown>();
    const controller = new AbortController();
    const call = session.execute(
      "sleeper",
      { seconds: 30 },
      how === "abort" ? { signal: controller.signal } : { timeout: 20 },
    );
    await entered.promise;
    controller.abort();
    await assert.rejects(
      call,
      how === "abort" ? CancelledError : TimeoutError,
    );
    gate.resolve();
    // Sent before its request, the cancel would find nothing to cancel
    // ({cancelled: false}) and the call would then run for 30 s.
    assert.deepEqual(await cancelReply.promise, { cancelled: true }, how);
    await waitFor(async () => (await session.status()).inFlight === 0, {
      message: `the server cancels the call (${how})`,
    });
  }
  assert.equal(session.inFlight, 0);
}

/** A step of "Session on one Python server (each step its own sessions)": Session runs middleware in order and fails only the request whose middleware throws */
async function sessionRunsMiddlewareInOrder(server: TestServer): Promise<void> {
  const order: string[] = [];
  await using session = await server.connect({
    middleware: [
      {
        name: "plusOne",
        outgoing: (msg) => {
          order.push("plusOne");
          if (msg.cmd === "executeModel") {
            return { ...msg, msg: { x: (msg.msg as { x: number }).x + 1 } };
          }
          return msg;
        },
      },
      {
        name: "asyncTagger",
        outgoing: async (msg) => {
          order.push("asyncTagger");
          if (
            msg.cmd === "executeModel" && (msg.msg as { x: number }).x === 100
          ) throw new Error("no hundreds");
          return await Promise.resolve(msg);
        },
        incoming: (msg) => {
          if (
            msg.ok === true && typeof msg.result === "object" &&
            msg.result !== null && "y" in msg.result
          ) {
            return { ...msg, result: { ...msg.result, tagged: true } };
          }
          return msg;
        },
      },
      {
        name: "replyBreaker",
        incoming: (msg) => {
          if ((msg.result as { y?: number } | undefined)?.y === 14) {
            throw new Error("unlucky");
          }
          return msg;
        },
      },
    ],
  });
  await session.addModel("doubler", { source: DOUBLER });
  order.length = 0;
  assert.deepEqual(await session.execute("doubler", { x: 5 }), {
    y: 12,
    tagged: true,
  });
  assert.deepEqual(order, ["plusOne", "asyncTagger"]);
  await assert.rejects(
    session.execute("doubler", { x: 99 }),
    (err: unknown) =>
      err instanceof PluginError && /'asyncTagger'/.test(err.message) &&
      /no hundreds/.test(err.message),
  );
  await assert.rejects(
    session.execute("doubler", { x: 6 }),
    (err: unknown) =>
      err instanceof PluginError && /'replyBreaker'/.test(err.message),
  );
  assert.equal(session.inFlight, 0);
  assert.equal(await session.ping(), "pong");
}

/** A step of "Session on one Python server (each step its own sessions)": Session keeps replies in order behind an async incoming hook, and fails only the reply whose hook rejects */
async function sessionKeepsRepliesInOrder(server: TestServer): Promise<void> {
  await using session = await server.connect({
    middleware: [{
      name: "slowOnTwo",
      incoming: (msg) => {
        const y = (msg.result as { y?: number } | undefined)?.y;
        // Late for one reply, rejecting for another, synchronous for the rest.
        if (y === 2) {
          return new Promise((resolve) => setTimeout(() => resolve(msg), 20));
        }
        if (y === 6) return Promise.reject(new Error("late failure"));
        return msg;
      },
    }],
  });
  await session.addModel("doubler", { source: DOUBLER });
  const settled: number[] = [];
  const calls = [1, 2, 4, 5].map((x) =>
    session.execute("doubler", { x }).then((r) => {
      settled.push(x);
      return r;
    })
  );
  assert.deepEqual(await Promise.all(calls), [
    { y: 2 },
    { y: 4 },
    { y: 8 },
    { y: 10 },
  ]);
  // The reply held for 20 ms did not let the later ones overtake it.
  assert.deepEqual(settled, [1, 2, 4, 5]);
  await assert.rejects(
    session.execute("doubler", { x: 3 }),
    (err: unknown) =>
      err instanceof PluginError && /'slowOnTwo'/.test(err.message) &&
      /late failure/.test(err.message),
  );
  assert.equal(session.inFlight, 0);
  assert.deepEqual(await session.execute("doubler", { x: 7 }), { y: 14 });
}

Deno.test("Session closes with ConnectionLostError caused by a ChecksumError on a corrupted incoming frame", async () => {
  let armed = false;
  const { runtime } = tappedRuntime({
    read: (chunk) => {
      if (!armed) return chunk;
      armed = false;
      const copy = chunk.slice();
      copy[HEADER_SIZE]! ^= 0x20; // a payload byte: the length stays trusted
      return copy;
    },
  });
  await using server = await startServer({ runtime });
  await using session = await server.connect();
  armed = true;
  await assert.rejects(
    session.ping(),
    (err: unknown) =>
      err instanceof ConnectionLostError && err.cause instanceof ChecksumError,
  );
  await session.closed;
  assert.equal(session.isClosed, true);
});

Deno.test("Session closes with the server's error as cause when the server rejects a frame (id null)", async () => {
  let armed = false;
  const { runtime } = tappedRuntime({
    write: (chunk) => {
      if (!armed) return chunk;
      armed = false;
      const copy = chunk.slice();
      copy[HEADER_SIZE]! ^= 0x20;
      return copy;
    },
  });
  await using server = await startServer({ runtime });
  await using session = await server.connect();
  armed = true;
  await assert.rejects(session.ping(), (err: unknown) => {
    assert.ok(err instanceof ConnectionLostError, String(err));
    assert.ok(err.cause instanceof ChecksumError, `cause: ${err.cause}`);
    return true;
  });
  await session.closed;
});

/** A step of "Session on one Python server (each step its own sessions)": Session.close rejects pending requests and later ones with ConnectionLostError */
async function sessionCloseRejectsPendingRequests(
  server: TestServer,
): Promise<void> {
  const session = await server.connect();
  await session.addModel("sleeper", { source: SLEEPER });
  const log: Array<{ ok: boolean; value: unknown }> = [];
  track(session.execute("sleeper", { seconds: 30 }), log);
  track(session.ping(), log); // queued, not yet written
  await session.close();
  await session.close(); // idempotent
  assert.equal(session.isClosed, true);
  await waitFor(() => log.length === 2);
  assert.ok(log.every((r) => !r.ok && r.value instanceof ConnectionLostError));
  await assert.rejects(session.ping(), ConnectionLostError);
}

Deno.test("Session refuses a message above the server's frame limit and stays usable", async () => {
  await using server = await startServer({ maxFrameSize: 4096 });
  await using session = await server.connect();
  assert.equal(session.serverInfo.maxFrameSize, 4096);
  await session.addModel("doubler", { source: DOUBLER });
  await assert.rejects(
    session.execute("doubler", { x: 1, pad: "é".repeat(3000) }),
    (err) =>
      err instanceof SerializationError && err.code === "SERIALIZATION" &&
      err.details.limit === 4096 && /frame limit of 4096/.test(err.message),
  );
  await assert.rejects(
    session.execute("doubler", { x: 1n }),
    (err) =>
      err instanceof SerializationError &&
      /msg\.x is a BigInt/.test(err.message),
  );
  const cycle: Record<string, unknown> = { a: [1] };
  (cycle.a as unknown[]).push(cycle);
  await assert.rejects(
    session.execute("doubler", { x: 1, cycle }),
    (err) =>
      err instanceof SerializationError &&
      /msg\.cycle\.a\[1\] is circular \(it refers back to msg\.cycle\)/
        .test(err.message),
  );
  assert.deepEqual(
    await session.execute("doubler", { x: 1, pad: "é".repeat(100) }),
    { y: 2 },
  );
});

Deno.test("Session marks the error of a request it wrote nothing of (encoder, outgoing middleware), never one of a request that reached the server", async () => {
  await using server = await startServer({ maxFrameSize: 4096 });
  await using session = await server.connect({
    middleware: [{
      name: "refuser",
      outgoing: async (msg) => {
        const x = (msg.msg as { x?: unknown } | undefined)?.x;
        if (x === 100) throw new Error("no hundreds");
        return await Promise.resolve(msg);
      },
      incoming: (msg) => {
        if ((msg.result as { y?: number } | undefined)?.y === 14) {
          throw new Error("unlucky");
        }
        return msg;
      },
    }],
  });
  await session.addModel("doubler", { source: DOUBLER });
  await session.addModel("raiser", { source: RAISER });
  await session.addModel("unjson", {
    source: "class U:\n    def execute(self, msg):\n        return object()\n",
  });
  const failure = (call: Promise<unknown>) =>
    call.then(() => assert.fail("resolved"), (err: Error) => err);
  const unsent = [
    session.execute("doubler", { x: 1, pad: "é".repeat(3000) }),
    session.execute("doubler", { x: 1n }),
    session.execute("doubler", {
      get x(): never {
        throw new Error("getter boom");
      },
    }),
    session.execute("doubler", { x: 100 }),
  ];
  for (const err of await Promise.all(unsent.map(failure))) {
    assert.equal(wasUnsent(err), true, String(err));
  }
  // Errors of requests the server got: its error replies (a
  // SerializationError among them), and a reply an incoming hook refused.
  const sent = [
    session.execute("raiser", {}),
    session.execute("unjson", {}),
    session.execute("doubler", { x: 7 }),
  ];
  const errors = await Promise.all(sent.map(failure));
  assert.deepEqual(errors.map((e) => e.name), [
    "PythonError",
    "SerializationError",
    "PluginError",
  ]);
  for (const err of errors) assert.equal(wasUnsent(err), false, String(err));
});

/** A step of "Session on one Python server (each step its own sessions)": Session.request validates timeout and signal; timeout 0 times out at once, Infinity never */
async function sessionRequestValidatesTimeoutAnd(
  server: TestServer,
): Promise<void> {
  await using session = await server.connect();
  for (const timeout of [NaN, -5, "10" as unknown as number]) {
    await assert.rejects(
      session.ping({ timeout }),
      (err) =>
        err instanceof ConfigError && err.code === "CONFIG_INVALID" &&
        /Cannot send ping: timeout: expected a number of ms >= 0/.test(
          err.message,
        ),
    );
  }
  await assert.rejects(
    session.ping({ signal: {} as AbortSignal }),
    (err) => err instanceof ConfigError && /signal/.test(err.message),
  );
  await assert.rejects(
    session.ping({ timeout: 0 }),
    (err) => err instanceof TimeoutError && /timeout is 0 ms/.test(err.message),
  );
  assert.equal(session.inFlight, 0);
  assert.equal(await session.ping({ timeout: Infinity }), "pong");
}

/** A step of "Session on one Python server (each step its own sessions)": Session aborts the signal of running host handlers when it closes */
async function sessionAbortsSignalRunningHost(
  server: TestServer,
): Promise<void> {
  const { promise: started, resolve: start } = Promise.withResolvers<
    AbortSignal
  >();
  const session = await server.connect({
    handlers: {
      wait: (_args, call) => {
        start(call.signal);
        return new Promise((_resolve, reject) =>
          call.signal.addEventListener(
            "abort",
            () => reject(call.signal.reason),
          )
        );
      },
    },
  });
  try {
    await session.addModel("caller", { source: HOST_CALLER });
    const call = session.execute("caller", { cmd: "wait" });
    const signal = await started;
    assert.equal(signal.aborted, false);
    // Handled before close() rejects it, while close() waits for the socket.
    const rejected = assert.rejects(call, ConnectionLostError);
    await session.close();
    assert.equal(signal.aborted, true);
    assert.ok(signal.reason instanceof ConnectionLostError);
    await rejected;
  } finally {
    await session.close();
  }
}

/** A step of "Session on one Python server (each step its own sessions)": Session.lastActivity counts the time its own read loop waits for an incoming middleware (the peer's next bytes wait unread) */
async function sessionLastactivityCountsTimeIts(
  server: TestServer,
): Promise<void> {
  const hold = Promise.withResolvers<void>();
  const held = Promise.withResolvers<void>();
  await using session = await server.connect({
    middleware: [{
      name: "slow-reader",
      incoming: (msg) => {
        if (msg.result !== "pong" || !armed) return msg;
        held.resolve();
        return hold.promise.then(() => msg); // as a spilled reply's file being read
      },
    }],
  });
  let armed = false;
  await session.ping(); // a quiet session afterwards
  armed = true;
  const before = session.lastActivity;
  const ping = session.ping();
  await held.promise;
  // Silence from the peer while this side holds its reply proves nothing.
  const at = Date.now();
  await new Promise((r) => setTimeout(r, 30));
  assert.ok(session.lastActivity >= at + 30, "now while the reader waits");
  hold.resolve();
  assert.equal(await ping, "pong");
  // The read loop marks the end of its wait a few microtasks after the
  // reply settled the ping: read the value once they ran.
  await new Promise((r) => setTimeout(r, 0));
  const after = session.lastActivity;
  assert.ok(after >= at + 30 && after >= before);
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(session.lastActivity, after, "not now any more once it is done");
}

Deno.test("Session.connect: connectTimeout bounds the whole handshake, and its TimeoutError names the step (a server that says hello, then never answers auth)", async () => {
  // A real socket whose server sends its hello and then reads, silent.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await conn.write(encodeFrame({
        event: "hello",
        version: VERSION,
        auth: "hmac-sha256",
        nonce: "00".repeat(16),
      }));
      const buf = new Uint8Array(4096);
      while ((await conn.read(buf)) !== null) {
        // never answers
      }
    } finally {
      conn.close();
    }
  })();
  try {
    await assert.rejects(
      Session.connect({ port, secret: "s".repeat(64), connectTimeout: 300 }),
      (err: unknown) => {
        assert.ok(err instanceof TimeoutError, String(err));
        // Before: "Cannot complete auth: timed out after 300 ms", a second
        // connectTimeout after the first one the hello had.
        assert.equal(
          err.message,
          `Cannot authenticate to 127.0.0.1:${port}: no answer to auth within 300 ms of connecting (connectTimeout)`,
        );
        assert.deepEqual(err.details, { phase: "auth", timeoutMs: 300 });
        return true;
      },
    );
  } finally {
    listener.close();
    await served;
  }
});

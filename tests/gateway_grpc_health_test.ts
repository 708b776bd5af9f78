// gRPC's health checking Watch (grpc.health.v1.Health/Watch), by grpc-js
// with protobufjs's messages: on a gRPC server alone (a gateway's health
// that the test sets) and on a real gateway that drains.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import http2 from "node:http2";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { serveGrpc } from "../src/gateway/grpc_server.ts";
import { startGatewayProcess } from "./_gateway_process.ts";
import { callEnded, grpc } from "./_grpc_client.ts";
import { waitFor } from "./_harness.ts";

const root = new protobuf.Root();
root.resolvePath = (_origin, target) =>
  fileURLToPath(new URL(`./fixtures/grpc/${target}`, import.meta.url));
root.loadSync("triton_extensions.proto", { keepCase: true });
const request = root.lookupType("triton.HealthCheckRequest");
const response = root.lookupType("triton.HealthCheckResponse");

/** A Watch call: the statuses it got, and how it ended. */
function watch(client: grpc.Client, service: string) {
  const call = client.makeServerStreamRequest<Uint8Array, Uint8Array>(
    "/grpc.health.v1.Health/Watch",
    (x) => Buffer.from(x),
    (b) => b,
    request.encode(request.create({ service })).finish(),
    new grpc.Metadata(),
    {},
  );
  const statuses: string[] = [];
  let onStatus = () => {};
  let end: grpc.StatusObject | undefined;
  call.on("data", (bytes: Uint8Array) => {
    const m = response.toObject(response.decode(bytes), { enums: String });
    statuses.push(String(m.status));
    onStatus();
  });
  // Once its status came and its messages are all delivered (callEnded).
  const ended = callEnded(call);
  // After `ended` settles: a race of the two sees the end first.
  void ended.then((status) => {
    end = status;
    onStatus();
  });
  return {
    call,
    statuses,
    ended,
    /**
     * Resolves once the `n`th status came; rejects, with its status, if the
     * watch ended before (a watch refused, RESOURCE_EXHAUSTED, had left the
     * test waiting for ever, with nothing to say why).
     */
    got(n: number): Promise<void> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (statuses.length >= n) resolve();
          else if (end !== undefined) {
            reject(
              new Error(
                `the watch ended (${end.code}: ${end.details}) after ${statuses.length} of ${n} statuses: ${statuses}`,
              ),
            );
          }
        };
        onStatus = check;
        check();
      });
    },
  };
}

Deno.test("gRPC health Watch: the status at once, then each change; SERVICE_UNKNOWN for another service; bounded; NOT_SERVING at the drain's start; the close ends the watches", async () => {
  let healthy = true;
  const drain = new AbortController();
  let checks = 0;
  const server = await serveGrpc({
    hostname: "127.0.0.1",
    port: 0,
    // The gateway's /healthz, as the test sets it.
    fetch: (req) => {
      assert.equal(new URL(req.url).pathname, "/healthz");
      checks++;
      const ok = healthy && !drain.signal.aborted;
      return new Response(null, { status: ok ? 200 : 503 });
    },
    httpPort: () => 1,
    bodyLimit: 1 << 20,
    drain: drain.signal,
    maxHealthWatches: 2,
    // A change shows at the next check: every 200 ms here, not every
    // second (each wait of the test for one, and the one for no check after
    // the close, were a second or more).
    healthWatchIntervalMs: 200,
  });
  const client = new grpc.Client(
    `127.0.0.1:${server.port}`,
    grpc.credentials.createInsecure(),
  );
  try {
    const all = watch(client, "");
    await all.got(1);
    assert.deepEqual(all.statuses, ["SERVING"]);
    // A change (a worker lost) is sent at the next check (200 ms here).
    healthy = false;
    await all.got(2);
    healthy = true;
    await all.got(3);
    assert.deepEqual(all.statuses, ["SERVING", "NOT_SERVING", "SERVING"]);

    const other = watch(client, "nope.Service");
    await other.got(1);
    assert.deepEqual(other.statuses, ["SERVICE_UNKNOWN"]);
    // Two open, the most: the third is refused, then taken once one ends.
    const third = await watch(client, "").ended;
    assert.equal(third.code, grpc.status.RESOURCE_EXHAUSTED, third.details);
    other.call.cancel();
    assert.equal((await other.ended).code, grpc.status.CANCELLED);
    // Its slot is free once the server has seen the cancel (a frame that may
    // still be on its way when the client's call has ended).
    await waitFor(() => server.inFlight === 1, {
      message: "the server to see the watch cancelled",
    });
    const inference = watch(client, "inference.GRPCInferenceService");
    await inference.got(1);
    assert.deepEqual(inference.statuses, ["SERVING"]);

    // The drain's start: NOT_SERVING at once, not at the next check.
    const began = performance.now();
    drain.abort();
    await Promise.all([all.got(4), inference.got(2)]);
    assert.ok(
      performance.now() - began < 500,
      `${Math.round(performance.now() - began)} ms`,
    );
    assert.equal(all.statuses[3], "NOT_SERVING");
    assert.deepEqual(inference.statuses, ["SERVING", "NOT_SERVING"]);

    // The close ends them (UNAVAILABLE) rather than wait out its grace.
    const closing = performance.now();
    await server.close(10_000);
    assert.ok(performance.now() - closing < 2000);
    const ended = await all.ended;
    assert.equal(ended.code, grpc.status.UNAVAILABLE, ended.details);
    assert.equal((await inference.ended).code, grpc.status.UNAVAILABLE);
    // No check left running (three intervals without one).
    const after = checks;
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(checks, after);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("gRPC health Watch on a gateway: SERVING without a token, NOT_SERVING as soon as the drain starts (a call still in flight), then UNAVAILABLE", async () => {
  // In a process of its own: a crash of Deno's node:http2 ends it, not the
  // test runner (tests/_gateway_process.ts).
  const gw = await startGatewayProcess({
    grpc: { port: 0 },
    token: "grpc-health-test-token-0123456789",
    limits: { shutdownGrace: 5000 },
  });
  const client = new grpc.Client(
    gw.grpcTarget!,
    grpc.credentials.createInsecure(),
  );
  try {
    const w = watch(client, "");
    await w.got(1);
    assert.deepEqual(w.statuses, ["SERVING"]);
    // A call in flight holds the drain open for 2 s.
    const slow = gw.fetch("/v1/models/slow/execute", {
      method: "POST",
      body: JSON.stringify({ seconds: 2 }),
    });
    for (let i = 0; i < 500; i++) {
      const status = await (await gw.fetch("/v1/status")).json();
      if (status.workers[0].inFlight === 1) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const began = performance.now();
    const stopping = gw.shutdown();
    await w.got(2);
    // At the drain's start, not at the watch's next check (a second).
    const took = performance.now() - began;
    assert.ok(took < 500, `NOT_SERVING after ${Math.round(took)} ms`);
    assert.deepEqual(w.statuses, ["SERVING", "NOT_SERVING"]);
    // Told while the call still runs.
    const res = await slow;
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await stopping;
    assert.equal((await w.ended).code, grpc.status.UNAVAILABLE);
  } finally {
    client.close();
    await gw.shutdown();
    await Deno.remove(gw.dir, { recursive: true });
  }
});

Deno.test("gRPC health Watch: at most 8 per connection, so that one client cannot take every watch; another connection's is taken", async () => {
  const server = await serveGrpc({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => new Response(null, { status: 200 }),
    httpPort: () => 1,
    bodyLimit: 1 << 20,
  });
  // Each its own connection (grpc-js shares them between clients otherwise).
  const options = { "grpc.use_local_subchannel_pool": 1 };
  const greedy = new grpc.Client(
    `127.0.0.1:${server.port}`,
    grpc.credentials.createInsecure(),
    options,
  );
  const other = new grpc.Client(
    `127.0.0.1:${server.port}`,
    grpc.credentials.createInsecure(),
    options,
  );
  try {
    const held = Array.from({ length: 8 }, () => watch(greedy, ""));
    await Promise.all(held.map((w) => w.got(1)));
    const extra = watch(greedy, "");
    const ninth = await Promise.race([extra.ended, extra.got(1)]);
    assert.ok(ninth !== undefined, `a ninth watch: ${extra.statuses}`);
    assert.equal(ninth.code, grpc.status.RESOURCE_EXHAUSTED, ninth.details);
    assert.match(ninth.details, /this connection/);
    // Another client is not refused for it.
    const theirs = watch(other, "");
    await theirs.got(1);
    assert.deepEqual(theirs.statuses, ["SERVING"]);
    // A slot of the connection is taken again once one of its watches ends.
    held[0]!.call.cancel();
    assert.equal((await held[0]!.ended).code, grpc.status.CANCELLED);
    await waitFor(() => server.inFlight === 8, {
      message: "the server to see the watch cancelled",
    });
    const again = watch(greedy, "");
    await again.got(1);
    assert.deepEqual(again.statuses, ["SERVING"]);
  } finally {
    greedy.close();
    other.close();
    await server.close();
  }
});

/** A connection whose client reads nothing (its HTTP/2 windows are 0). */
function deaf(port: number): http2.ClientHttp2Session {
  const session = http2.connect(`http://127.0.0.1:${port}`, {
    settings: { initialWindowSize: 0 },
  });
  session.on("error", () => {});
  return session;
}

/** A raw health call on `session`: its close's RST_STREAM code. */
function rawHealth(
  session: http2.ClientHttp2Session,
  method: "Check" | "Watch",
  headers: Record<string, string> = {},
) {
  const req = session.request({
    ":method": "POST",
    ":path": `/grpc.health.v1.Health/${method}`,
    "content-type": "application/grpc",
    te: "trailers",
    ...headers,
  });
  req.on("error", () => {});
  req.end(new Uint8Array(5));
  const responded = new Promise<void>((resolve) =>
    req.once("response", () => resolve())
  );
  const closed = new Promise<number>((resolve) =>
    req.once("close", () => resolve(req.rstCode ?? 0))
  );
  return { req, responded, closed };
}

/** `promise`, or a rejection naming `what` after `ms`. */
async function within<T>(what: string, ms: number, promise: Promise<T>) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`timed out waiting for ${what}`)),
          ms,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("gRPC health Watch ended (its deadline) while its client reads nothing: the stream is reset, not held half-open with its status unread", async () => {
  const server = await serveGrpc({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => new Response(null, { status: 200 }),
    httpPort: () => 1,
    bodyLimit: 1 << 20,
  });
  const session = deaf(server.port);
  try {
    const w = rawHealth(session, "Watch", { "grpc-timeout": "200m" });
    await w.responded;
    // Its status (SERVING) written and unread; the deadline ends the watch
    // (its slot free), and its trailers cannot pass the status: without
    // the reset the stream stayed open until the connection's end.
    const code = await within("the watch's stream to close", 5000, w.closed);
    assert.equal(code, http2.constants.NGHTTP2_CANCEL);
    assert.equal(server.inFlight, 0);
  } finally {
    session.destroy();
    await server.close();
  }
});

Deno.test("gRPC: a connection closed as idle whose client does not read its last answer is closed outright keepaliveTimeout later, not held by that stream", async () => {
  const server = await serveGrpc({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => new Response(null, { status: 200 }),
    httpPort: () => 1,
    bodyLimit: 1 << 20,
    idleTimeout: 200,
    keepaliveTimeout: 300,
  });
  const session = deaf(server.port);
  try {
    const closed = new Promise<void>((resolve) =>
      session.once("close", () => resolve())
    );
    const goaway = new Promise<void>((resolve) =>
      session.once("goaway", () => resolve())
    );
    // The call is over at once (SERVING written); its answer waits unread.
    const c = rawHealth(session, "Check");
    await c.responded;
    await within("the idle GOAWAY", 5000, goaway);
    // The client answers PINGs: without the bound, the GOAWAY waited for
    // that stream for ever.
    await within("the connection's close", 5000, closed);
    assert.equal(server.inFlight, 0);
  } finally {
    session.destroy();
    await server.close();
  }
});

/** A connection from the local address `from` (a peer of its own). */
function peer(port: number, from: string): http2.ClientHttp2Session {
  const session = http2.connect(
    `http://127.0.0.1:${port}`,
    { localAddress: from } as http2.ClientSessionOptions,
  );
  session.on("error", () => {});
  return session;
}

/**
 * A raw Watch that reads its statuses: resolves once it has one (`"open"`),
 * or with the grpc-status it ended with.
 */
async function rawWatch(session: http2.ClientHttp2Session) {
  const req = session.request({
    ":method": "POST",
    ":path": "/grpc.health.v1.Health/Watch",
    "content-type": "application/grpc",
    te: "trailers",
  });
  req.on("error", () => {});
  let status: string | undefined;
  req.on("response", (h) => status ??= h["grpc-status"] as string | undefined);
  req.on("trailers", (h) => status ??= h["grpc-status"] as string | undefined);
  const ended = new Promise<string | undefined>((resolve) =>
    req.once("close", () => resolve(status))
  );
  const first = new Promise<string>((resolve) =>
    req.once("data", () => resolve("open"))
  );
  req.end(new Uint8Array(5));
  return { req, ended, state: await Promise.race([first, ended]) };
}

Deno.test("gRPC health Watch: when every watch is taken, a watch from another address takes the oldest of the address holding the most (RESOURCE_EXHAUSTED), down to one more than its own; no more", async () => {
  const server = await serveGrpc({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => new Response(null, { status: 200 }),
    httpPort: () => 1,
    bodyLimit: 1 << 20,
    maxHealthWatches: 4,
  });
  const greedy = peer(server.port, "127.0.0.1");
  const other = peer(server.port, "127.0.0.2");
  try {
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await rawWatch(greedy));
    assert.deepEqual(held.map((w) => w.state), [
      "open",
      "open",
      "open",
      "open",
    ]);
    // Full: its own next is refused (it holds the most).
    assert.equal((await rawWatch(greedy)).state, "8");
    // Another address's watch takes the greedy one's oldest.
    const first = await rawWatch(other);
    assert.equal(first.state, "open");
    assert.equal(await held[0]!.ended, "8");
    // Its second too (3 against 1), not its third (2 against 2).
    assert.equal((await rawWatch(other)).state, "open");
    assert.equal(await held[1]!.ended, "8");
    assert.equal((await rawWatch(other)).state, "8");
    assert.equal((await rawWatch(greedy)).state, "8");
    assert.equal(server.inFlight, 4);
  } finally {
    greedy.destroy();
    other.destroy();
    await server.close();
  }
});

Deno.test("gRPC health Watch: when every watch is taken by addresses at their share, a watch from a new address is refused and ends none of theirs (a client reconnecting in a loop cannot end others' watches)", async () => {
  const server = await serveGrpc({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => new Response(null, { status: 200 }),
    httpPort: () => 1,
    bodyLimit: 1 << 20,
    maxHealthWatches: 4,
  });
  const a = peer(server.port, "127.0.0.1");
  const b = peer(server.port, "127.0.0.2");
  const c = peer(server.port, "127.0.0.3");
  try {
    const held = [];
    for (const session of [a, a, b, b]) held.push(await rawWatch(session));
    assert.deepEqual(held.map((w) => w.state), [
      "open",
      "open",
      "open",
      "open",
    ]);
    // Each of a and b holds 2, its share of 4 among three addresses (1.33,
    // rounded up): the newcomer is refused, no watch of theirs ended.
    assert.equal((await rawWatch(c)).state, "8");
    assert.equal(server.inFlight, 4);
    // One ends (the client left): the newcomer takes the free slot.
    held[0]!.req.close();
    await waitFor(() => server.inFlight === 3, {
      message: "the server to see the watch ended",
    });
    assert.equal((await rawWatch(c)).state, "open");
    assert.equal(server.inFlight, 4);
  } finally {
    a.destroy();
    b.destroy();
    c.destroy();
    await server.close();
  }
});

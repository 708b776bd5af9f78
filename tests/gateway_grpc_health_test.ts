// gRPC's health checking Watch (grpc.health.v1.Health/Watch), by grpc-js
// with protobufjs's messages: on a gRPC server alone (a gateway's health
// that the test sets) and on a real gateway that drains.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { fileURLToPath } from "node:url";
import protobuf from "protobufjs";
import { serveGrpc } from "../src/gateway/grpc_server.ts";
import { startGatewayProcess } from "./_gateway_process.ts";
import { grpc } from "./_grpc_client.ts";

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
  call.on("data", (bytes: Uint8Array) => {
    const m = response.toObject(response.decode(bytes), { enums: String });
    statuses.push(String(m.status));
    onStatus();
  });
  const ended = new Promise<grpc.StatusObject>((resolve) => {
    call.on("status", resolve);
    call.on("error", () => {});
  });
  return {
    call,
    statuses,
    ended,
    /** Resolves once the `n`th status came. */
    got(n: number): Promise<void> {
      return new Promise((resolve) => {
        const check = () => {
          if (statuses.length >= n) resolve();
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
  });
  const client = new grpc.Client(
    `127.0.0.1:${server.port}`,
    grpc.credentials.createInsecure(),
  );
  try {
    const all = watch(client, "");
    await all.got(1);
    assert.deepEqual(all.statuses, ["SERVING"]);
    // A change (a worker lost) is sent at the next check (a second).
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
    // No check left running.
    const after = checks;
    await new Promise((r) => setTimeout(r, 1200));
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
    const again = watch(greedy, "");
    await again.got(1);
    assert.deepEqual(again.statuses, ["SERVING"]);
  } finally {
    greedy.close();
    other.close();
    await server.close();
  }
});

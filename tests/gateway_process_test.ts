/**
 * The test helper that runs a gateway in a process of its own
 * (tests/_gateway_process.ts): what a test sees when that process crashes.
 */
import assert from "node:assert/strict";
import { GatewayProcessDied, startGatewayProcess } from "./_gateway_process.ts";
import { statusOf } from "./_gateway_harness.ts";

Deno.test("startGatewayProcess: a gateway process that dies by a signal fails the shutdown with GatewayProcessDied naming it", async () => {
  const gw = await startGatewayProcess({ grpc: { port: 0 } });
  try {
    assert.equal(await statusOf(gw.fetch("/healthz")), 200);
    // As the nghttp2 assertion in Deno's node:http2 ends it (abort()).
    gw.child.kill("SIGABRT");
    const err = await gw.shutdown().then(() => undefined, (e) => e);
    assert.ok(err instanceof GatewayProcessDied, String(err));
    assert.equal(err.code, "GATEWAY_PROCESS_DIED");
    assert.equal(err.status.signal, "SIGABRT");
    assert.match(err.message, /died by SIGABRT/);
    // The same answer at dispose (the test's finally or `await using`).
    await assert.rejects(gw.shutdown(), GatewayProcessDied);
  } finally {
    await Promise.resolve(gw[Symbol.asyncDispose]()).catch(() => {});
  }
});

Deno.test("startGatewayProcess: a shutdown drains the gateway and ends its process", async () => {
  await using gw = await startGatewayProcess({ grpc: { port: 0 } });
  const stopping = gw.shutdown();
  await gw.draining;
  await stopping;
  assert.equal((await gw.child.status).code, 0);
});

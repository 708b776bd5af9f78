import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { reconnect } from "../plugins/reconnect.ts";
import type { PluginContext } from "../src/plugin.ts";
import type { Pool } from "../src/pool.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";

/**
 * A context whose worker never answers pings; `activity` says when it last
 * moved bytes, `idle` whether its event loop is seen waiting for I/O.
 */
function silentWorker(
  activity: () => number | undefined,
  idle = false,
): {
  ctx: PluginContext;
  kills: string[];
  pinged: Promise<void>;
} {
  const kills: string[] = [];
  const pinged = Promise.withResolvers<void>();
  const ctx = {
    pool: undefined as unknown as Pool,
    runtime: defaultRuntime(),
    logger: getLogger(["pyproxy", "test"]),
    closing: false,
    workers: () => [{ id: "w0", pid: 42, state: "ready" }],
    restartWorker: () => false,
    failWorker: () => {},
    killWorker: (id: string) => void kills.push(id),
    ping: () => {
      pinged.resolve();
      return Promise.resolve(false);
    },
    lastActivity: () => activity(),
    waitsForIO: () => Promise.resolve(idle),
  } as unknown as PluginContext;
  return { ctx, kills, pinged: pinged.promise };
}

async function runTimeoutProbe(ctx: PluginContext): Promise<void> {
  const plugin = reconnect({ heartbeatInterval: 0, hangGrace: 1 });
  await plugin.onTimeout!(
    {
      worker: { id: "w0", pid: 42 },
    } as unknown as Parameters<NonNullable<typeof plugin.onTimeout>>[0],
    ctx,
  );
}

Deno.test("reconnect keeps a worker that answers no ping but moved bytes meanwhile", async () => {
  const { ctx, kills, pinged } = silentWorker(() => Date.now());
  await runTimeoutProbe(ctx);
  await pinged;
  // The probe settles right after the ping: let its continuation run.
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(kills, []);
});

Deno.test("reconnect kills a worker that answers no ping and moved no bytes", async () => {
  const { ctx, kills, pinged } = silentWorker(() => Date.now() - 60_000);
  await runTimeoutProbe(ctx);
  await pinged;
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(kills, ["w0"]);
});

Deno.test("reconnect keeps a silent worker whose event loop waits for I/O: its reply is late on the host's side", async () => {
  const { ctx, kills, pinged } = silentWorker(() => Date.now() - 60_000, true);
  await runTimeoutProbe(ctx);
  await pinged;
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(kills, []);
});

Deno.test("reconnect keeps a silent worker whose bytes arrive while its event loop is watched", async () => {
  let calls = 0;
  // Silent when the ping fails; bytes by the time the watch is over.
  const { ctx, kills, pinged } = silentWorker(
    () => calls++ === 0 ? Date.now() - 60_000 : Date.now(),
  );
  await runTimeoutProbe(ctx);
  await pinged;
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(calls, 2);
  assert.deepEqual(kills, []);
});

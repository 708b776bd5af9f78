/**
 * A user plugin: times every model call, and serves a host command that the
 * Python side can call (`host.call("timing.stats", {})`).
 *
 * Run: `deno run -A examples/custom_plugin.ts` (or `bun run examples/custom_plugin.ts`)
 *
 * @module
 */
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";

/** Per-model call counts and total milliseconds. */
interface Timing {
  calls: number;
  totalMs: number;
}

/** A plugin that measures the time between a request and its reply. */
export function timing(): Plugin & { stats(): Record<string, Timing> } {
  // Keyed by session too: request ids are only unique per connection.
  const started = new WeakMap<
    object,
    Map<number, { name: string; at: number }>
  >();
  const stats: Record<string, Timing> = {};
  return {
    name: "timing",
    stats: () => structuredClone(stats),
    onRequest(msg, { session }) {
      if (msg.cmd !== "executeModel" || typeof msg.id !== "number") return;
      let pending = started.get(session);
      if (pending === undefined) started.set(session, pending = new Map());
      pending.set(msg.id, { name: String(msg.name), at: performance.now() });
    },
    onReply(msg, { session }) {
      if (typeof msg.id !== "number" || !("ok" in msg)) return;
      const pending = started.get(session);
      const call = pending?.get(msg.id);
      if (call === undefined) return;
      pending!.delete(msg.id);
      const entry = stats[call.name] ??= { calls: 0, totalMs: 0 };
      entry.calls++;
      entry.totalMs += performance.now() - call.at;
    },
    handlers: {
      "timing.stats": () => structuredClone(stats),
    },
  };
}

if (import.meta.main) {
  const plugin = timing();
  // The servers write their logs under modelsDir, so run from a scratch copy.
  // node: modules, so that the example runs on Bun as on Deno.
  const modelsDir = await mkdtemp(join(tmpdir(), "pyproxy-example-"));
  await copyFile(
    fileURLToPath(new URL("./models/doubler.py", import.meta.url)),
    join(modelsDir, "doubler.py"),
  );
  await using _cleanup = {
    [Symbol.asyncDispose]: () => rm(modelsDir, { recursive: true }),
  };
  await using pool = await Pool.start({
    workers: 2,
    modelsDir,
    plugins: [plugin],
  });
  await pool.addModel("doubler", { file: "doubler.py", options: { k: 3 } });
  for (let x = 0; x < 10; x++) await pool.execute("doubler", { x });
  console.log(plugin.stats()); // { doubler: { calls: 10, totalMs: ... } }
}

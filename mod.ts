/**
 * pyproxy: run Python code and Python models as a service from TypeScript.
 *
 * A {@linkcode Pool} supervises Python server processes and talks to them over
 * a checksummed, framed JSON protocol; `deno run -A mod.ts serve` starts the
 * HTTP gateway.
 *
 * @example Start a pool and execute a model
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * await using pool = await Pool.start({ workers: 2, modelsDir: "./models" });
 * await pool.addModel("doubler", { file: "doubler.py", options: { k: 3 } });
 * console.log(await pool.execute("doubler", { x: 5 })); // { y: 15 }
 * ```
 *
 * @module
 */
export * from "./src/errors.ts";
export * from "./src/runtime/mod.ts";
export * from "./src/protocol/mod.ts";
export * from "./src/session.ts";
export * from "./src/python_server.ts";
export * from "./src/plugin.ts";
export * from "./src/pool.ts";
export * from "./src/atom.ts";
export * from "./src/model_stream.ts";
export * from "./src/execute_each.ts";
export * from "./src/atom_registry.ts";
export * from "./src/eval_session.ts";
export * from "./src/output_buffer.ts";
export * from "./src/replay_budget.ts";
export * from "./src/queue_waits.ts";
export * from "./src/model_metrics.ts";
export * from "./src/gateway/mod.ts";
export * from "./plugins/mod.ts";
/** The logger taken by the `logger` options (a LogTape `Logger` fits). */
export type { Logger } from "./src/logger.ts";

if (import.meta.main) {
  const { main } = await import("./src/cli.ts");
  await main();
}

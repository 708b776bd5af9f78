/**
 * The Python server gives up on a host call (its timeout, or the call's
 * cancel) and says so: the host handler's `signal` aborts (protocol §7).
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";

const WAITER = `
from pyproxy import host
from pyproxy.host import HostError

class Waiter:
    def execute(self, msg):
        try:
            host.call("wait", {}, timeout=msg["timeout"])
        except HostError as exc:
            return {"gaveUp": str(exc)}
        return {"gaveUp": None}
`;

Deno.test("Pool: a host call the Python side gives up on aborts its handler's signal", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-host-cancel-" });
  let aborted!: () => void;
  const abortSeen = new Promise<void>((resolve) => aborted = resolve);
  let started = 0;
  const waiter: Plugin = {
    name: "waiter",
    handlers: {
      wait: (_args, { signal }) =>
        new Promise((resolve) => {
          started++;
          signal.addEventListener("abort", () => {
            aborted();
            resolve("aborted");
          });
        }),
    },
  };
  try {
    await Deno.writeTextFile(`${dir}/waiter.py`, WAITER);
    await using pool = await Pool.start({
      workers: 1,
      modelsDir: dir,
      handleSignals: false,
      plugins: [waiter],
    });
    await pool.addModel("waiter", { file: "waiter.py" });
    const out = await pool.execute<{ gaveUp: string }>("waiter", {
      timeout: 0.2,
    });
    assert.match(out.gaveUp, /no reply within 0.2 s/);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      abortSeen,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("the handler's signal never aborted")),
          10_000,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(started, 1);
    // The connection is fine, and nothing else went astray.
    assert.equal(await pool.request("ping"), "pong");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The Python server gives up on a host call (its timeout, or the call's
 * cancel) and says so: the host handler's `signal` aborts (protocol §7).
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { PythonError } from "../src/errors.ts";

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

/** `p`, or a failure naming `what` after 10 s (the timer is always cleared). */
async function within(p: Promise<void>, what: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(what)), 10_000);
    }),
  ]).finally(() => clearTimeout(timer));
}

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
    await within(abortSeen, "the handler's signal never aborted");
    assert.equal(started, 1);
    // The connection is fine, and nothing else went astray.
    assert.equal(await pool.request("ping"), "pong");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Pool: a model call that times out while its host call waits aborts the handler's signal too", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-host-cancel-" });
  let aborted!: () => void;
  const abortSeen = new Promise<void>((resolve) => aborted = resolve);
  let served = 0;
  const waiter: Plugin = {
    name: "waiter",
    handlers: {
      wait: (_args, { signal }) =>
        new Promise((resolve) => {
          signal.addEventListener("abort", () => {
            aborted();
            resolve("aborted");
          });
        }),
      sideEffect: () => ++served,
    },
  };
  try {
    await Deno.writeTextFile(
      `${dir}/caller.py`,
      `
from pyproxy import host

class Caller:
    def execute(self, msg):
        try:
            host.call("wait", {})
        except BaseException:
            # Cancelled: what it calls afterwards must not reach the host.
            try:
                host.call("sideEffect", {})
            except Exception:
                pass
            raise
`,
    );
    await using pool = await Pool.start({
      workers: 1,
      modelsDir: dir,
      handleSignals: false,
      plugins: [waiter],
    });
    await pool.addModel("caller", { file: "caller.py" });
    await assert.rejects(
      pool.execute("caller", {}, { timeout: 300 }),
      (err: unknown) => err instanceof Error && err.name === "TimeoutError",
    );
    await within(abortSeen, "the handler's signal never aborted");
    assert.equal(await pool.request("ping"), "pong");
    assert.equal(served, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Pool: host.call refuses a timeout that is not seconds > 0 before sending anything", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-host-cancel-" });
  let started = 0;
  const waiter: Plugin = {
    name: "waiter",
    handlers: { wait: () => ++started },
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
    for (const timeout of ["x", 0, -1, true]) {
      await assert.rejects(
        pool.execute("waiter", { timeout }),
        (err: unknown) =>
          err instanceof PythonError && err.type === "ValueError" &&
          /timeout must be a number of seconds > 0 or None/.test(err.message),
        String(timeout),
      );
    }
    assert.equal(started, 0);
    assert.deepEqual(await pool.execute("waiter", { timeout: null }), {
      gaveUp: null,
    });
    assert.equal(started, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

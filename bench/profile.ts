/**
 * Puts one implementation under steady load for profiling:
 *
 *     deno run -A --cpu-prof --cpu-prof-dir=/tmp/prof bench/profile.ts --impl session --window 64 --seconds 5
 *     deno run -A bench/profile.ts --impl floor --python-profile /tmp/floor.pstats
 *
 * `--impl` is one of floor, stdio, session, pool, pool-bare (no default
 * plugins). With `--python-profile`
 * the Python process runs under cProfile (bench/pyprofile.py) and its stats
 * are written to that file. Prints calls/s.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  type CallerFactory,
  floorCaller,
  poolCaller,
  sessionCaller,
  stdioCaller,
} from "./callers.ts";
import { measureWindow, SMALL_MESSAGE } from "./drivers.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      impl: { type: "string", default: "session" },
      window: { type: "string", default: "64" },
      seconds: { type: "string", default: "5" },
      size: { type: "string" },
      "python-profile": { type: "string" },
      unix: { type: "boolean", default: false },
    },
  });
  const out = values["python-profile"];
  const python = out === undefined
    ? undefined
    : new URL("./pyprofile.sh", import.meta.url).pathname;
  if (out !== undefined) Deno.env.set("PYPROFILE_OUT", out);
  const unix = values.unix ?? false;
  const factories: Record<string, () => CallerFactory> = {
    floor: () => floorCaller("echo", { unix, ...(python ? { python } : {}) }),
    stdio: () => stdioCaller("echo", "stdio", python),
    session: () =>
      sessionCaller("echo", {
        ...(unix ? { unix } : {}),
        ...(python ? { python } : {}),
      }),
    pool: () =>
      poolCaller("echo", {
        poolOptions: () => (python ? { python } : {}),
      }),
    // The pool without its default plugins (their cost per call).
    "pool-bare": () =>
      poolCaller("echo", {
        poolOptions: () => ({
          plugins: { defaults: false },
          ...(python ? { python } : {}),
        }),
      }),
  };
  const make = factories[values.impl ?? "session"];
  if (make === undefined) {
    console.error(
      `unknown --impl; one of ${Object.keys(factories).join(", ")}`,
    );
    Deno.exit(2);
  }
  const msg = values.size === undefined
    ? SMALL_MESSAGE
    : { data: "x".repeat(Number(values.size)) };
  const caller = await make().open();
  try {
    const m = await measureWindow(
      caller,
      Number(values.window),
      Number(values.seconds) * 1000,
      msg,
    );
    console.log(JSON.stringify(m));
    if (out !== undefined) {
      for (const pid of caller.pids?.() ?? []) Deno.kill(pid, "SIGUSR1");
      for (let i = 0; i < 100; i++) {
        try {
          if ((await Deno.stat(out)).size > 0) break;
        } catch {
          // not written yet
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } finally {
    await caller.close();
  }
}

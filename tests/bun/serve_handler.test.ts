// A pool called from a Bun.serve handler, as docs/runtimes.md ("A pool inside
// a Bun.serve service") writes it: the request's signal, which Bun aborts
// when the client disconnects, cancels the model's call (KeyboardInterrupt
// in Python, CancelledError in the handler); without it the call runs on.
import { expect, test } from "bun:test";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CancelledError, Pool } from "../../mod.ts";

const LONG = `import time
class Long:
    def execute(self, msg):
        open(msg["started"], "w").write("started")
        try:
            for _ in range(3000):  # 30 s, in steps an interrupt can land between
                time.sleep(0.01)
        except KeyboardInterrupt:
            open(msg["marker"], "w").write("interrupted")
            raise
        return "done"
`;

/** Polls `check` every 20 ms until it holds; fails naming `what` after 10 s. */
async function until(check: () => Promise<boolean>, what: string) {
  const deadline = Date.now() + 10_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const exists = (path: string) =>
  readFile(path, "utf8").then(() => true, () => false);

test(
  "Bun.serve: a client that disconnects cancels the pool call given req.signal",
  async () => {
    const dir = await mkdtemp(join(tmpdir(), "pyproxy-bun-serve-"));
    await using pool = await Pool.start({ workers: 1, handleSignals: false });
    await pool.addModel("long", { source: LONG });
    const ended: Promise<unknown>[] = [];
    const server = Bun.serve({
      port: 0,
      idleTimeout: 0,
      fetch(req) {
        const msg = {
          started: join(dir, "started"),
          marker: join(dir, "marker"),
        };
        const call = pool.execute("long", msg, { signal: req.signal });
        ended.push(call.then(() => "resolved", (e: unknown) => e));
        return call.then((r) => Response.json(r));
      },
    });
    try {
      const client = new AbortController();
      const response = fetch(`http://127.0.0.1:${server.port}/`, {
        signal: client.signal,
      }).catch(() => undefined);
      await until(() => exists(join(dir, "started")), "the model's start");
      client.abort();
      await response;
      await until(() => exists(join(dir, "marker")), "the model's interrupt");
      expect(ended.length).toBe(1);
      expect(await ended[0]).toBeInstanceOf(CancelledError);
      await until(
        () => Promise.resolve(pool.status().workers[0]!.inFlight === 0),
        "the call's slot to go",
      );
    } finally {
      await server.stop(true);
      await rm(dir, { recursive: true, force: true });
    }
  },
  60_000,
);

// Shutdown drains every route's response, over HTTP/1.1 and HTTP/2 (h2c):
// a model load or removal, a resize or an eval in flight when the drain
// starts gets its whole answer within limits.shutdownGrace, not a reset.
import assert from "node:assert/strict";
import {
  SseReader,
  startGateway,
  type TestGateway,
  until,
} from "./_gateway_harness.ts";
import { H2Client, sseOf } from "./_h2_client.ts";

// Loads while `hold` (beside it) is missing at once; while it exists, waits
// for it to go (up to 30 s), after marking that it started (`loading-<n>`).
const GATED = `import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Gated:
    def __init__(self, options=None):
        hold = os.path.join(HERE, "hold")
        if not os.path.exists(hold):
            return
        with open(os.path.join(HERE, "loading-%d-%d" % (os.getpid(), time.monotonic_ns())), "w"):
            pass
        deadline = time.monotonic() + 30
        while os.path.exists(hold) and time.monotonic() < deadline:
            time.sleep(0.01)

    def execute(self, msg):
        return msg
`;

const EVAL = `import os, time
open(os.path.join(DIR, "loading-eval"), "w").close()
deadline = time.monotonic() + 30
while os.path.exists(os.path.join(DIR, "hold")) and time.monotonic() < deadline:
    time.sleep(0.01)
"fin"`;

interface Answer {
  status: number;
  text: string;
}

type Send = (method: string, path: string, body?: unknown) => Promise<Answer>;

async function loading(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith("loading-")) n++;
  }
  return n;
}

interface Case {
  name: string;
  /** Before `hold` is written. */
  setup?: (gw: TestGateway) => Promise<void>;
  /** The request that is in flight when the drain starts. */
  method: string;
  path: string;
  body: (dir: string) => unknown;
  status: number;
  /** Checks the whole answer. */
  check: (text: string) => void;
  /** The grace (default 20 s), and whether `hold` stays past it. */
  grace?: number;
  outlive?: boolean;
}

const CASES: Case[] = [
  {
    name: "PUT /v1/models/{name}",
    method: "PUT",
    path: "/v1/models/gated",
    body: () => ({ file: "_gated.py" }),
    status: 201,
    check: (text) => assert.equal(JSON.parse(text).action, "added"),
  },
  {
    name: "DELETE /v1/models/{name} (behind an update of the name)",
    setup: async (gw) => {
      const res = await gw.fetch("/v1/models/gated", {
        method: "PUT",
        body: JSON.stringify({ file: "_gated.py" }),
      });
      assert.equal(res.status, 201, await res.text());
    },
    method: "DELETE",
    path: "/v1/models/gated",
    body: () => undefined,
    // Its turn comes once the pool closes (the update went first).
    status: 503,
    check: (text) =>
      assert.deepEqual(JSON.parse(text).error, {
        type: "ShuttingDownError",
        message: "Cannot remove model: pool is closing",
      }),
  },
  {
    name: "PUT /v1/workers",
    setup: async (gw) => {
      const res = await gw.fetch("/v1/models/gated", {
        method: "PUT",
        body: JSON.stringify({ file: "_gated.py" }),
      });
      assert.equal(res.status, 201, await res.text());
    },
    method: "PUT",
    path: "/v1/workers",
    body: () => ({ count: 2 }),
    // The pool gives up a resize as it closes (workers started for a pool
    // that stops would be stopped at once): a whole 503, not a reset.
    status: 503,
    check: (text) =>
      assert.deepEqual(JSON.parse(text).error, {
        type: "ShuttingDownError",
        message:
          "Cannot resize pool to 2 workers: the pool closed before it finished",
      }),
  },
  {
    name: "PUT /v1/models/{name} that outlives the grace",
    method: "PUT",
    path: "/v1/models/gated",
    body: () => ({ file: "_gated.py" }),
    grace: 300,
    outlive: true,
    status: 503,
    check: (text) =>
      assert.deepEqual(JSON.parse(text).error, {
        type: "ShuttingDownError",
        message: "Cannot add model 'gated': the pool closed before it finished",
      }),
  },
  {
    name: "POST /v1/eval",
    method: "POST",
    path: "/v1/eval",
    body: (dir) => ({ code: EVAL, locals: { DIR: dir } }),
    status: 200,
    check: (text) => {
      assert.match(text, /^event: result\ndata: \{"value":"fin"\}$/m, text);
    },
  },
];

async function drainWith(
  protocol: "http/1.1" | "h2",
  c: Case,
): Promise<void> {
  await using gw = await startGateway(
    {
      allowManage: true,
      allowEval: true,
      limits: { shutdownGrace: c.grace ?? 20_000 },
    },
    { "_gated.py": GATED },
  );
  const h2 = protocol === "h2" ? new H2Client(gw.port) : undefined;
  try {
    await h2?.ready();
    const send: Send = h2 === undefined
      ? async (method, path, body) => {
        const res = await gw.fetch(path, {
          method,
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        return { status: res.status, text: await res.text() };
      }
      : (method, path, body) =>
        h2.request(method, path, {
          token: gw.token,
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
    await c.setup?.(gw);
    const hold = `${gw.dir}/hold`;
    await Deno.writeTextFile(hold, "");
    let held: Promise<Answer> | undefined;
    if (c.method === "DELETE") {
      // The removal waits behind an update of the name that is loading.
      held = send("PUT", c.path, { file: "_gated.py" });
      await until(async () => await loading(gw.dir) > 0, "the update loading");
    }
    const answer = send(c.method, c.path, c.body(gw.dir));
    if (c.method !== "DELETE") {
      await until(async () => await loading(gw.dir) > 0, "the request running");
    } else {
      // In flight: the update, the removal behind it, and this request.
      await until(async () => {
        const res = await gw.fetch("/v1/status");
        return (await res.json()).gateway.othersInFlight === 3;
      }, "the removal in flight");
    }
    const stopped = gw.shutdown();
    try {
      await until(async () => {
        const res = await fetch(`http://127.0.0.1:${gw.port}/healthz`);
        await res.body?.cancel();
        return res.status === 503;
      }, "the gateway draining");
      if (c.outlive) await gw.pool.close();
    } finally {
      await Deno.remove(hold);
    }
    if (held !== undefined) {
      const update = await held;
      assert.equal(update.status, 200, update.text);
    }
    const { status, text } = await answer;
    assert.equal(status, c.status, text);
    c.check(text);
    await stopped;
  } finally {
    await h2?.close();
  }
}

for (const protocol of ["http/1.1", "h2"] as const) {
  for (const c of CASES) {
    Deno.test(`GatewayServer.shutdown over ${protocol} answers ${c.name} in flight in full`, async () => {
      await drainWith(protocol, c);
    });
  }
}

// Prints `n` lines of 1000 characters, marks that it did, returns "fin".
const PRINTER = `import os
for i in range(N):
    print("%04d" % i + "x" * 995, flush=False)
open(os.path.join(DIR, "printed"), "w").close()
"fin"`;

for (const protocol of ["http/1.1", "h2"] as const) {
  Deno.test(`GatewayServer.shutdown over ${protocol} lets an eval's stream that a slow client still reads end with its result, within the grace`, async () => {
    await using gw = await startGateway({
      allowEval: true,
      limits: { shutdownGrace: 20_000 },
    });
    // 800 kB: within the eval's output window (1 MiB unacknowledged), far
    // past an HTTP/2 stream's (64 KiB).
    const lines = 800;
    const body = JSON.stringify({
      code: PRINTER,
      locals: { DIR: gw.dir, N: lines },
    });
    const h2 = protocol === "h2" ? new H2Client(gw.port) : undefined;
    try {
      let reader: SseReader;
      let resume: () => void;
      if (h2 !== undefined) {
        await h2.ready();
        const stream = h2.open("POST", "/v1/eval", { body, token: gw.token });
        // Not read until the drain started: its window fills, and the
        // server holds the rest of the stream.
        stream.pause();
        reader = sseOf(stream);
        resume = () => stream.resume();
      } else {
        const res = await gw.fetch("/v1/eval", { method: "POST", body });
        assert.equal(res.status, 200);
        reader = new SseReader(res.body!);
        resume = () => {};
      }
      await until(async () => {
        try {
          await Deno.stat(`${gw.dir}/printed`);
          return true;
        } catch {
          return false;
        }
      }, "the eval printing");
      const stopped = gw.shutdown();
      // Read on once the drain is past the pool (the same close, settled):
      // the stream is all that is left in flight, and a server that let go
      // of it shuts down at its next turn, before any read can reach it.
      await gw.pool.close();
      resume();
      let text = "";
      let last: unknown;
      for (;;) {
        const event = await reader.next();
        if (event === undefined) break;
        if (event.event === "output") {
          text += (event.data as { data: string }).data;
        } else if (event.event !== "atom") last = event;
      }
      assert.deepEqual(last, { event: "result", data: { value: "fin" } });
      assert.equal(text.length, lines * 1000);
      await stopped;
    } finally {
      await h2?.close();
    }
  });
}

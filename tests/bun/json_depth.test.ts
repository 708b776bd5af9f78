// Nesting depth under Bun: the gateway's limits.maxJsonDepth on every route
// that reads a body (with a Content-Length, which Bun's adapter reads with
// request.bytes(), and chunked), and a reply nested past the host's exact
// read (1000 levels) failing its call alone on Bun's stream read loop.
import { expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pool, SerializationError } from "../../mod.ts";
import { withGateway } from "./_helpers.ts";

const TOKEN = "bun-depth-token-0123456789";

const ECHO = `class Echo:
    def execute(self, msg):
        return msg
`;

/** `depth` levels of `{"a": ...}` around an integer beyond ±2^53. */
function nested(depth: number): string {
  return '{"a":'.repeat(depth) + "18446744073709551617" + "}".repeat(depth);
}

/** `text` as a chunked body, cut into pieces of `size` bytes. */
function chunked(text: string, size: number): ReadableStream<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(at, at += size));
    },
  });
}

const ROUTES: Array<[string, string]> = [
  ["POST", "/v1/models/echo/execute"],
  ["POST", "/v1/models/echo/stream"],
  ["POST", "/v1/channels/deep"],
  ["POST", "/v1/eval"],
  ["PUT", "/v1/models/echo"],
  ["PUT", "/v1/workers"],
];

test(
  "serve() on Bun refuses a body nested deeper than maxJsonDepth on every route that reads one, declared or chunked, and takes 800 levels",
  async () => {
    await withGateway({ "echo.py": ECHO }, {
      token: TOKEN,
      allowEval: true,
      allowManage: true,
    }, async (server) => {
      const send = (
        method: string,
        path: string,
        body: string | ReadableStream<Uint8Array>,
      ) =>
        fetch(`${server.url}${path}`, {
          method,
          headers: {
            authorization: `Bearer ${TOKEN}`,
            "content-type": "application/json",
          },
          body,
          duplex: "half",
        } as RequestInit);
      for (const depth of [801, 5000]) {
        const text = nested(depth);
        for (const [method, path] of ROUTES) {
          // Declared, and chunked with the nesting cut across chunks.
          for (const body of [text, chunked(text, 997)]) {
            const res = await send(method, path, body);
            const kind = typeof body === "string" ? "declared" : "chunked";
            expect([method, path, kind, res.status]).toEqual([
              method,
              path,
              kind,
              400,
            ]);
            const { error } = await res.json() as {
              error: Record<string, unknown>;
            };
            expect(error).toMatchObject({
              type: "InvalidRequestError",
              message:
                `Cannot read request: the body is nested ${depth} levels deep, over the limit of 800 (the gateway's limits.maxJsonDepth, serve --max-json-depth)`,
              depth,
              limit: 800,
            });
          }
        }
      }
      // At the limit: read, sent to Python and back, exact.
      const text = nested(800);
      for (const body of [text, chunked(text, 997)]) {
        const res = await send("POST", "/v1/models/echo/execute", body);
        expect(res.status).toBe(200);
        expect(await res.text()).toBe(text);
      }
      const res = await send("POST", "/v1/channels/deep", chunked(text, 997));
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ channel: "deep", seq: 1 });
      // Nothing refused reached a worker, nor cost it its life.
      const status = await (await fetch(`${server.url}/v1/status`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      })).json() as { workers: Array<{ restarts: number }> };
      expect(status.workers.map((w) => w.restarts)).toEqual([0]);
    });
  },
  30_000,
);

const DEEP = `
import sys
import time

from pyproxy import host

# Let Python's json go deeper than the host's exact read (1000 levels).
sys.setrecursionlimit(100_000)


def deep(d, leaf):
    v = leaf
    for _ in range(d):
        v = [v]
    return v


class Deep:
    def execute(self, msg):
        leaf = 2**64 if msg["big"] else 1
        if msg.get("call"):
            try:
                host.call("sink", {"v": deep(msg["d"], leaf)})
                return {"called": True}
            except host.HostError as e:
                return {"hostError": str(e)}
        if msg.get("stream"):
            return iter([{"i": 0}, {"v": deep(msg["d"], leaf)}])
        return {"v": deep(msg["d"], leaf)}


class Slow:
    def execute(self, msg):
        time.sleep(0.5)
        return {"slow": True}
`;

function leafOf(value: unknown): unknown {
  let v = (value as { v: unknown }).v;
  while (Array.isArray(v)) v = v[0];
  return v;
}

test(
  "Pool on Bun: a reply nested past 1000 levels holding an integer beyond ±2^53 fails its call alone with SerializationError",
  async () => {
    const path = await mkdtemp(join(tmpdir(), "pyproxy-bun-deep-"));
    try {
      await writeFile(join(path, "deep.py"), DEEP);
      for (const integers of ["number", "bigint"] as const) {
        const sunk: unknown[] = [];
        await using pool = await Pool.start({
          workers: 1,
          modelsDir: path,
          handleSignals: false,
          integers,
          plugins: {
            use: [{
              name: "sink",
              handlers: { sink: (a: unknown) => void sunk.push(a) },
            }],
          },
        });
        await pool.addModel("deep", { file: "deep.py", class: "Deep" });
        await pool.addModel("slow", { file: "deep.py", class: "Slow" });
        const pid = pool.status().workers[0]?.pid;
        // A call in flight on the same connection throughout.
        const slow = pool.execute("slow", {});
        const d = 5000;
        let error: unknown;
        try {
          await pool.execute("deep", { d, big: true });
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(SerializationError);
        expect((error as SerializationError).message).toBe(
          `Cannot complete executeModel: it is nested ${
            d + 2
          } levels deep and holds an integer beyond ±2^53, which the host reads exactly only within 1000 levels`,
        );
        expect((error as SerializationError).details).toEqual({
          depth: d + 2,
          limit: 1000,
        });
        const items: unknown[] = [];
        error = undefined;
        try {
          const stream = pool.executeStream("deep", {
            d,
            big: true,
            stream: true,
          });
          for await (const item of stream) items.push(item);
        } catch (err) {
          error = err;
        }
        expect(error).toBeInstanceOf(SerializationError);
        expect(items).toEqual([{ i: 0 }]);
        // Host command arguments: the model's host call fails, not the model.
        const called = await pool.execute("deep", {
          d,
          big: true,
          call: true,
        }) as { hostError?: string };
        expect(called.hostError).toMatch(
          /nested \d+ levels deep and holds an integer beyond ±2\^53/,
        );
        expect(sunk).toEqual([]);
        // Without such an integer, the depth alone is no problem.
        expect(leafOf(await pool.execute("deep", { d, big: false }))).toBe(1);
        expect(await slow).toEqual({ slow: true });
        expect(pool.status().workers[0]?.pid).toBe(pid);
        expect(pool.status().workers[0]?.restarts).toBe(0);
        // Within 1000 levels: exact with "bigint".
        if (integers === "bigint") {
          expect(leafOf(await pool.execute("deep", { d: 990, big: true })))
            .toBe(2n ** 64n);
        }
      }
    } finally {
      await rm(path, { recursive: true, force: true });
    }
  },
  30_000,
);

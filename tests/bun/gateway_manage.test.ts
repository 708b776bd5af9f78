// The gateway's description and management routes under Bun: GET
// /openapi.json, what plugins report (autoscale) in /v1/status, /metrics and
// the dashboard, and PUT /v1/workers with autoscale bounds (and the log line
// of the bounds it changed).
import { expect, test } from "bun:test";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { withGateway } from "./_helpers.ts";

const TOKEN = "bun-manage-token-0123456789";
const AUTH = { authorization: `Bearer ${TOKEN}` };

const ECHO = `class Echo:
    """Echoes its message."""
    inputs = {"id": "integer"}
    def execute(self, msg):
        return {"msg": msg}
`;

test(
  "serve() on Bun: /openapi.json, autoscale in /v1/status, /metrics and the dashboard, PUT /v1/workers bounds",
  async () => {
    await withGateway({ "echo.py": ECHO }, {
      allowManage: true,
      token: TOKEN,
      plugins: { autoscale: { min: 1, max: 3 } },
    }, async (server) => {
      const get = (path: string) =>
        fetch(`${server.url}${path}`, { headers: AUTH });
      // The document, behind the token like GET /v1/models.
      const anonymous = await fetch(`${server.url}/openapi.json`);
      expect(anonymous.status).toBe(401);
      await anonymous.body?.cancel();
      const res = await get("/openapi.json");
      expect(res.status).toBe(200);
      const doc = await res.json() as {
        openapi: string;
        servers: { url: string }[];
        paths: Record<string, unknown>;
      };
      expect(doc.openapi).toStartWith("3.1");
      expect(doc.servers).toEqual([{ url: server.url }]);
      expect(Object.keys(doc.paths)).toEqual(
        expect.arrayContaining([
          "/openapi.json",
          "/v1/models/echo/execute",
          "/v1/models/echo/stream",
          "/v1/workers",
        ]),
      );

      const status = async () =>
        (await (await get("/v1/status")).json()).pluginStatus.autoscale;
      expect(await status()).toMatchObject({
        min: 1,
        max: 3,
        configured: { min: 1, max: 3 },
      });
      const metrics = await (await get("/metrics")).text();
      expect(metrics).toContain("pyproxy_autoscale_max_workers 3\n");
      expect(metrics).toContain("pyproxy_autoscale_min_workers 1\n");
      const dashboard = await get("/");
      expect(dashboard.status).toBe(200);
      expect(await dashboard.text()).toContain("pluginStatus");

      const put = (body: string) =>
        fetch(`${server.url}/v1/workers`, {
          method: "PUT",
          headers: { ...AUTH, "content-type": "application/json" },
          body,
        });
      const bounds = await put('{"min":1,"max":2}');
      expect(bounds.status).toBe(200);
      expect(await bounds.json()).toEqual({
        count: 1,
        bounds: { autoscale: { min: 1, max: 2 } },
      });
      expect(await status()).toMatchObject({
        min: 1,
        max: 2,
        configured: { min: 1, max: 3 },
      });
      const bad = await put('{"min":3,"max":2}');
      expect(bad.status).toBe(400);
      expect((await bad.json()).error.message).toContain(
        "Cannot set autoscale bounds",
      );
    });
  },
  30_000,
);

test(
  "serve() on Bun refuses unsafe doubles for a declared integer and fails only the call of an overlong integer",
  async () => {
    await withGateway({ "echo.py": ECHO }, {}, async (server) => {
      const post = (body: string | ReadableStream<Uint8Array>) =>
        fetch(`${server.url}/v1/models/echo/execute`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
          duplex: "half",
        } as RequestInit);
      for (const id of ["12345678901234567890.0", "1e20", "1.5"]) {
        const res = await post(`{"id":${id}}`);
        expect(res.status).toBe(400);
        expect((await res.json()).error.message).toContain(
          "id: expected an integer",
        );
      }
      const pid = (await (await fetch(`${server.url}/v1/status`)).json())
        .workers[0].pid;
      const long = `{"id":1,"x":[1${"0".repeat(5000)}]}`;
      // Declared (Content-Length) and chunked: Bun reads both as bytes.
      const chunked = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode(long));
          c.close();
        },
      });
      for (const body of [long, chunked]) {
        const res = await post(body);
        const error = (await res.json()).error;
        expect(res.status).toBe(400);
        expect(error.type).toBe("InvalidRequestError");
        expect(error.message).toContain("an integer of 5001 digits");
      }
      const after = (await (await fetch(`${server.url}/v1/status`)).json())
        .workers[0];
      expect(after).toMatchObject({ pid, restarts: 0 });
      const ok = await post('{"id":18446744073709551617}');
      expect(await ok.text()).toBe('{"msg":{"id":18446744073709551617}}');
    });
  },
  30_000,
);

test(
  "serve() on Bun: the eval replay budget counts a running eval whose client left, and goes back to 0 when it ends",
  async () => {
    const budget = 256 * 1024;
    await withGateway({}, {
      allowEval: true,
      token: TOKEN,
      limits: { evalReplayBudget: budget },
    }, async (server) => {
      const held = async () => {
        const status = await (await fetch(`${server.url}/v1/status`, {
          headers: AUTH,
        })).json() as { evalReplayBytes: number };
        const metrics = await (await fetch(`${server.url}/metrics`, {
          headers: AUTH,
        })).text();
        const gauge = /^pyproxy_eval_replay_bytes (\d+)$/m.exec(metrics);
        return { status: status.evalReplayBytes, gauge: Number(gauge?.[1]) };
      };
      const until = async (test: (bytes: number) => boolean) => {
        const deadline = Date.now() + 10_000;
        for (;;) {
          const got = await held();
          if (test(got.status) && test(got.gauge)) return got;
          if (Date.now() > deadline) {
            throw new Error(`replay bytes still ${JSON.stringify(got)}`);
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      expect(await held()).toEqual({ status: 0, gauge: 0 });
      const ac = new AbortController();
      const res = await fetch(`${server.url}/v1/eval`, {
        method: "POST",
        headers: AUTH,
        body: JSON.stringify({
          code: "while True:\n    print('x' * 1000)",
          timeout: 3000,
        }),
        signal: ac.signal,
      });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      await reader.read();
      ac.abort();
      await reader.cancel().catch(() => {});
      // The eval prints on without its client: what it keeps is counted,
      // within the budget, until its timeout ends it.
      const running = await until((bytes) => bytes > budget / 2);
      expect(running.status).toBeLessThanOrEqual(budget);
      expect(await until((bytes) => bytes === 0)).toEqual({
        status: 0,
        gauge: 0,
      });
    });
  },
  30_000,
);

test(
  'serve() on Bun: PUT /v1/workers logs "Worker bounds set" only for the bounds it changed',
  async () => {
    const records: LogRecord[] = [];
    await configure({
      reset: true,
      sinks: { test: (record: LogRecord) => void records.push(record) },
      loggers: [
        {
          category: ["pyproxy", "gateway"],
          lowestLevel: "info",
          sinks: ["test"],
        },
        { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
      ],
    });
    try {
      await withGateway({ "echo.py": ECHO }, {
        allowManage: true,
        token: TOKEN,
        plugins: {
          autoscale: {
            min: 1,
            max: 2,
            upAfterMs: 600_000,
            downAfterMs: 600_000,
            manualHoldMs: 600_000,
          },
        },
      }, async (server) => {
        const logged = async (body: unknown): Promise<string[]> => {
          records.splice(0);
          const res = await fetch(`${server.url}/v1/workers`, {
            method: "PUT",
            headers: { ...AUTH, "content-type": "application/json" },
            body: JSON.stringify(body),
          });
          expect([body, res.status]).toEqual([body, 200]);
          await res.body?.cancel();
          return records
            .filter((r) => r.rawMessage === "Worker bounds set: {bounds}")
            .map((r) => String(r.properties.bounds));
        };
        // The bounds in force, as they are: nothing changed, nothing logged.
        expect(await logged({ min: 1, max: 2 })).toEqual([]);
        expect(await logged({ min: null, max: null })).toEqual([]);
        // A change is logged once; the same change again is not.
        expect(await logged({ max: 3 })).toEqual(["autoscale 1 to 3"]);
        expect(await logged({ max: 3 })).toEqual([]);
        expect(await logged({ min: null, max: null })).toEqual([
          "autoscale 1 to 2",
        ]);
        // With a count within them: the resize is logged, the bounds are not.
        expect(await logged({ count: 1, min: 1, max: 2 })).toEqual([]);
      });
    } finally {
      await reset();
    }
  },
  30_000,
);

const OPTS = `class Opts:
    """Answers its options."""
    def __init__(self, options=None):
        self.options = options or {}
    def execute(self, msg):
        return {"options": [str(sorted(self.options.items()))]}
`;

test(
  "serve() on Bun: a repository load's config parameter named __proto__ is an option like any other (Bun's __proto__ setter dropped it)",
  async () => {
    await withGateway(
      { "opts.py": OPTS },
      { allowManage: true, token: TOKEN },
      async (server) => {
        const post = (path: string, body: unknown) =>
          fetch(`${server.url}${path}`, {
            method: "POST",
            headers: AUTH,
            body: JSON.stringify(body),
          });
        const config =
          '{"parameters": {"__proto__": {"string_value": "p"}, "b": {"string_value": "q"}}}';
        const load = await post("/v2/repository/models/opts/load", {
          parameters: { config },
        });
        expect(load.status).toBe(200);
        await load.body?.cancel();
        const res = await post("/v2/models/opts/infer", { inputs: [] });
        expect(res.status).toBe(200);
        const body = await res.json() as { outputs: { data: string[] }[] };
        expect(body.outputs[0]!.data[0]).toBe(
          "[('__proto__', 'p'), ('b', 'q')]",
        );
      },
    );
  },
  30_000,
);

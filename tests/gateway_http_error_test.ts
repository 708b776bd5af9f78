// A model's HTTPError through the gateway (its status, body and allowed
// headers; batches; SSE before and after the first item), and the request
// headers the gateway forwards to models (forwardHeaders).
import assert from "node:assert/strict";
import {
  SseReader,
  startGateway,
  type TestGateway,
  withLogs,
} from "./_gateway_harness.ts";
import { createGateway } from "../src/gateway/app.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";

const MODELS: Record<string, string> = {
  "forged.py": `from pyproxy_server.errors import PythonError


class Forged:
    """Raises the wire error itself, its fields made up (what HTTPError checks)."""

    def execute(self, msg):
        raise PythonError("HTTPError", "forged", **msg)
`,
  "answers.py": `from pyproxy import HTTPError, host


class Answers:
    """msg["raise"]: HTTPError(*args, **kwargs); else the headers it sees."""

    def execute(self, msg):
        raised = msg.get("raise")
        if raised is not None:
            raise HTTPError(*raised.get("args", []), **raised.get("kwargs", {}))
        return {"headers": host.headers()}
`,
  "answer_stream.py": `from pyproxy import HTTPError, host


class AnswerStream:
    def execute(self, msg):
        if msg.get("before"):
            raise HTTPError(403, "not yours", detail={"owner": "someone"})
        yield host.headers()
        if msg.get("after"):
            raise HTTPError(409, "changed meanwhile", detail=[{"loc": ["x"], "msg": "stale"}])
`,
  "answer_batch.py": `from pyproxy import HTTPError, host


class AnswerBatch:
    batch_size = 8

    def execute_batch(self, msgs):
        heads = host.message_headers()
        return [
            HTTPError(404, "no item %s" % m["i"], detail={"i": m["i"]}) if m.get("missing")
            else {"i": m["i"], "headers": heads[n]}
            for n, m in enumerate(msgs)
        ]
`,
};

const post = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  body: JSON.stringify(body),
  headers: { "content-type": "application/json", ...headers },
});

const raising = (args: unknown[], kwargs: Record<string, unknown> = {}) =>
  post({ raise: { args, kwargs } });

Deno.test("gateway answers a model's HTTPError with its status, detail and allowed headers", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway({}, MODELS);
    const res = await gw.fetch(
      "/v1/models/answers/execute",
      raising([429, "slow down"], {
        detail: { limit: 10 },
        headers: {
          "Retry-After": "7",
          "Cache-Control": "no-store",
          "X-Quota-Left": "0",
          "Set-Cookie": "session=stolen",
          "Content-Type": "text/html",
          "Access-Control-Allow-Origin": "*",
          "X-Request-Id": "forged",
          "Content-Security-Policy": "none",
          // A proxy's, all of them (docs/gateway.md: X-Forwarded-*).
          "X-Forwarded-Prefix": "/evil",
          "X-Forwarded-Port": "1",
        },
      }),
    );
    const body = await res.json();
    assert.equal(res.status, 429);
    assert.equal(res.headers.get("retry-after"), "7");
    assert.equal(res.headers.get("cache-control"), "no-store");
    assert.equal(res.headers.get("x-quota-left"), "0");
    assert.equal(res.headers.get("set-cookie"), null);
    assert.equal(res.headers.get("content-type"), "application/json");
    assert.equal(res.headers.get("access-control-allow-origin"), null);
    assert.equal(res.headers.get("content-security-policy"), null);
    assert.equal(res.headers.get("x-forwarded-prefix"), null);
    assert.equal(res.headers.get("x-forwarded-port"), null);
    // The gateway's own request id, never the model's.
    const requestId = res.headers.get("x-request-id");
    assert.ok(requestId !== null && requestId !== "forged");
    assert.deepEqual(body, {
      error: {
        type: "HTTPError",
        message: "slow down",
        status: 429,
        detail: { limit: 10 },
        requestId,
      },
    });
    // The refused ones are named in the gateway's log.
    const warned = records.find((r) =>
      r.level === "warning" && String(r.properties.names).includes("Set-Cookie")
    );
    assert.ok(warned, "no warning for the refused headers");
    for (const name of ["Content-Type", "X-Request-Id", "X-Forwarded-Port"]) {
      assert.ok(String(warned.properties.names).includes(name), name);
    }
    assert.ok(!String(warned.properties.names).includes("Retry-After"));
    assert.equal(warned.properties.requestId, requestId);
  }, "info");
});

Deno.test("gateway sends at most 8 KiB of a model's error headers, and warns of refused ones once a minute per model", async () => {
  await withLogs(async (records) => {
    await using gw = await startGateway({}, MODELS);
    // Three of 3000 characters: the third would pass 8 KiB in all (clients
    // refuse larger headers: Node's limit is 16 KiB for all of them).
    const big = "v".repeat(3000);
    const headers = { "X-A": big, "X-B": big, "X-C": big, "Set-Cookie": "a=1" };
    for (let i = 0; i < 3; i++) {
      const res = await gw.fetch(
        "/v1/models/answers/execute",
        raising([400, "too much"], { headers }),
      );
      await res.body?.cancel();
      assert.equal(res.status, 400);
      assert.equal(res.headers.get("x-a"), big);
      assert.equal(res.headers.get("x-b"), big);
      assert.equal(res.headers.get("x-c"), null);
    }
    const warnings = records.filter((r) =>
      r.level === "warning" && String(r.properties.names).includes("X-C")
    );
    assert.equal(warnings.length, 1, "one warning for three calls");
    assert.ok(String(warnings[0]!.properties.names).includes("Set-Cookie"));
  }, "info");
});

// Steps on one gateway started as `startGateway({}, MODELS)`: each of these
// tests started its own (a gateway and its Python worker) and needs no fresh
// one.
Deno.test("gateway answers a model's HTTPError: FastAPI details, 422, a batch's message, a stream, a forged wire error", async (t) => {
  await using gw = await startGateway({}, MODELS);
  await t.step(
    "gateway keeps a FastAPI detail list and a big integer in it exact, 5xx too",
    () => keepsFastapiDetailListAnd(gw),
  );
  await t.step(
    "gateway answers 422 for a status that is no error (the model's ValueError/TypeError)",
    () => answers422ForStatusThat(gw),
  );
  await t.step(
    "gateway fails only the batched message whose result is an HTTPError",
    () => failsOnlyBatchedMessageWhose(gw),
  );
  await t.step(
    "gateway stream: an HTTPError before the first item is the status, after it the error event",
    () => streamHttperrorBeforeFirstItem(gw),
  );
  await t.step(
    "gateway sends no made-up status or unsafe header of an error the model forged on the wire",
    () => sendsNoMadeUpStatus(gw),
  );
});

/** A step of "gateway answers a model's HTTPError: FastAPI details, 422, a batch's message, a stream, a forged wire error": gateway keeps a FastAPI detail list and a big integer in it exact, 5xx too */
async function keepsFastapiDetailListAnd(gw: TestGateway): Promise<void> {
  const detail = [
    { loc: ["body", "age"], msg: "must be >= 0", type: "value_error" },
  ];
  let res = await gw.fetch(
    "/v1/models/answers/execute",
    raising([422, "invalid"], { detail }),
  );
  assert.equal(res.status, 422);
  assert.deepEqual((await res.json()).error.detail, detail);
  // An integer beyond 2^53 (the gateway's pool keeps integers exact): as
  // the model sent it.
  const sent = await gw.fetch("/v1/models/answers/execute", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body:
      '{"raise": {"args": [400], "kwargs": {"detail": {"big": 1180591620717411303424123}}}}',
  });
  assert.equal(sent.status, 400);
  assert.match(await sent.text(), /"big":1180591620717411303424123\b/);
  res = await gw.fetch("/v1/models/answers/execute", raising([503]));
  assert.equal(res.status, 503);
  assert.deepEqual((await res.json()).error.message, "Service Unavailable");
}

/** A step of "gateway answers a model's HTTPError: FastAPI details, 422, a batch's message, a stream, a forged wire error": gateway answers 422 for a status that is no error (the model's ValueError/TypeError) */
async function answers422ForStatusThat(gw: TestGateway): Promise<void> {
  for (
    const [status, exception] of [
      [0, "ValueError"],
      [99, "ValueError"],
      [200, "ValueError"],
      [304, "ValueError"],
      [600, "ValueError"],
      ["404", "TypeError"],
      [true, "TypeError"],
    ] as const
  ) {
    const res = await gw.fetch(
      "/v1/models/answers/execute",
      raising([status]),
    );
    const body = await res.json();
    assert.equal(res.status, 422, String(status));
    assert.equal(body.error.type, "PythonError");
    assert.equal(body.error.exception, exception, String(status));
    assert.match(body.error.message, /HTTPError: status must be/);
  }
  // A header with CR/LF, or too many: refused at the raise.
  for (
    const headers of [
      { "X-A": "v\r\nSet-Cookie: a=1" },
      Object.fromEntries(
        Array.from({ length: 1000 }, (_, i) => [`X-${i}`, "v"]),
      ),
    ]
  ) {
    const res = await gw.fetch(
      "/v1/models/answers/execute",
      raising([400, "bad"], { headers }),
    );
    assert.equal(res.status, 422);
    assert.equal((await res.json()).error.exception, "ValueError");
  }
}

/** A step of "gateway answers a model's HTTPError: FastAPI details, 422, a batch's message, a stream, a forged wire error": gateway fails only the batched message whose result is an HTTPError */
async function failsOnlyBatchedMessageWhose(gw: TestGateway): Promise<void> {
  const [ok, missing] = await Promise.all([
    gw.fetch("/v1/models/answer_batch/execute", post({ i: 1 })),
    gw.fetch(
      "/v1/models/answer_batch/execute",
      post({ i: 2, missing: true }),
    ),
  ]);
  assert.equal(ok.status, 200);
  assert.equal((await ok.json()).i, 1);
  assert.equal(missing.status, 404);
  assert.deepEqual((await missing.json()).error.detail, { i: 2 });
}

/** A step of "gateway answers a model's HTTPError: FastAPI details, 422, a batch's message, a stream, a forged wire error": gateway stream: an HTTPError before the first item is the status, after it the error event */
async function streamHttperrorBeforeFirstItem(gw: TestGateway): Promise<void> {
  const before = await gw.fetch(
    "/v1/models/answer_stream/stream",
    post({ before: true }),
  );
  assert.equal(before.status, 403);
  const body = await before.json();
  assert.equal(body.error.type, "HTTPError");
  assert.deepEqual(body.error.detail, { owner: "someone" });
  const after = await gw.fetch(
    "/v1/models/answer_stream/stream",
    post({ after: true }),
  );
  assert.equal(after.status, 200);
  const events = await new SseReader(after.body!).all();
  assert.deepEqual(events.map((e) => e.event), ["item", "error"]);
  const error = (events[1]!.data as { error: Record<string, unknown> }).error;
  assert.equal(error.type, "HTTPError");
  assert.equal(error.status, 409);
  assert.equal(error.message, "changed meanwhile");
  assert.deepEqual(error.detail, [{ loc: ["x"], msg: "stale" }]);
}

Deno.test("gateway forwards only the headers forwardHeaders lists to host.headers()", async () => {
  const sent = {
    "accept-language": "fr-CH, fr;q=0.9",
    "x-tenant-id": "t-42",
    "x-other": "secret",
    "cookie": "session=1",
  };
  {
    await using gw = await startGateway({
      forwardHeaders: ["Accept-Language", "x-tenant-id", "X-Tenant-Id"],
    }, MODELS);
    const res = await gw.fetch("/v1/models/answers/execute", post({}, sent));
    assert.deepEqual(await res.json(), {
      headers: { "accept-language": "fr-CH, fr;q=0.9", "x-tenant-id": "t-42" },
    });
    // Not sent: absent (Deno's fetch sends accept-language: * itself).
    const none = await gw.fetch("/v1/models/answers/execute", post({}));
    assert.deepEqual(await none.json(), {
      headers: { "accept-language": "*" },
    });
    // A batch: each message with its own.
    const [a, b] = await Promise.all([
      gw.fetch(
        "/v1/models/answer_batch/execute",
        post({ i: 1 }, { "x-tenant-id": "a", "accept-language": "fr" }),
      ),
      gw.fetch(
        "/v1/models/answer_batch/execute",
        post({ i: 2 }, { "accept-language": "en" }),
      ),
    ]);
    assert.deepEqual(await a.json(), {
      i: 1,
      headers: { "x-tenant-id": "a", "accept-language": "fr" },
    });
    assert.deepEqual(await b.json(), {
      i: 2,
      headers: { "accept-language": "en" },
    });
    // A stream.
    const stream = await gw.fetch(
      "/v1/models/answer_stream/stream",
      post({}, sent),
    );
    const events = await new SseReader(stream.body!).all();
    assert.deepEqual(events[0]!.data, {
      "accept-language": "fr-CH, fr;q=0.9",
      "x-tenant-id": "t-42",
    });
    // A value longer than a call takes: 431, not the model's problem.
    const long = await gw.fetch(
      "/v1/models/answers/execute",
      post({}, { "x-tenant-id": "t".repeat(9000) }),
    );
    assert.equal(long.status, 431);
    assert.equal((await long.json()).error.type, "RequestHeaderTooLarge");
  }
  {
    await using gw = await startGateway({}, MODELS);
    const res = await gw.fetch("/v1/models/answers/execute", post({}, sent));
    assert.deepEqual(await res.json(), { headers: {} });
  }
});

Deno.test("createGateway refuses forwardHeaders a model may not get", () => {
  const pool = {} as GatewayPool;
  assert.throws(
    () =>
      createGateway(pool, {
        forwardHeaders: ["Authorization"],
        // A token serve takes: a clearly weak one is refused first.
        token: "4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f",
      }),
    {
      name: "RangeError",
      message:
        `Cannot create gateway: forwardHeaders: "authorization" is never forwarded while the gateway has a token: it holds the gateway's bearer token, which model code would read`,
    },
  );
  assert.throws(() => createGateway(pool, { forwardHeaders: ["Connection"] }), {
    name: "RangeError",
    message:
      `Cannot create gateway: forwardHeaders: "connection" is never forwarded: a hop-by-hop header`,
  });
});

Deno.test("gateway CORS preflight lets a page send the forwarded headers", async () => {
  await using gw = await startGateway({
    forwardHeaders: ["X-Tenant-Id"],
    cors: { origins: ["http://localhost:5173"] },
  }, MODELS);
  const res = await gw.fetch("/v1/models/answers/execute", {
    method: "OPTIONS",
    headers: {
      origin: "http://localhost:5173",
      "access-control-request-method": "POST",
      "access-control-request-headers": "x-tenant-id",
    },
  });
  await res.body?.cancel();
  assert.match(
    res.headers.get("access-control-allow-headers") ?? "",
    /(^|,)\s*x-tenant-id\s*(,|$)/,
  );
});

/** A step of "gateway answers a model's HTTPError: FastAPI details, 422, a batch's message, a stream, a forged wire error": gateway sends no made-up status or unsafe header of an error the model forged on the wire */
async function sendsNoMadeUpStatus(gw: TestGateway): Promise<void> {
  const cases: [Record<string, unknown>, number][] = [
    [{ status: 200 }, 422],
    [{ status: 302, headers: { Location: "https://evil.example" } }, 422],
    [{ status: 404.5 }, 422],
    [{ status: "404" }, 422],
    [{ status: 1000 }, 422],
    [{ status: 418, headers: "Set-Cookie: a=1" }, 418],
    [{ status: 418, headers: ["x-a", "1"] }, 418],
    [{
      status: 418,
      headers: {
        "X-Euro": "\u20ac",
        "X-Break": "a\r\nSet-Cookie: b=2",
        "X-Nul": "a\u0000",
        "Bad Name": "v",
        "X-Num": 7,
        "X-Ok": "fine",
      },
    }, 418],
  ];
  for (const [fields, status] of cases) {
    const res = await gw.fetch("/v1/models/forged/execute", post(fields));
    const body = await res.json();
    assert.equal(res.status, status, JSON.stringify(fields));
    assert.equal(res.headers.get("set-cookie"), null);
    assert.equal(res.headers.get("location"), null);
    for (const name of ["x-euro", "x-break", "x-nul", "x-num"]) {
      assert.equal(res.headers.get(name), null, name);
    }
    if (status === 418) {
      assert.equal(body.error.type, "HTTPError");
    } else assert.equal(body.error.type, "PythonError");
  }
  const res = await gw.fetch(
    "/v1/models/forged/execute",
    post({ status: 418, headers: { "X-Ok": "fine", "X-Euro": "\u20ac" } }),
  );
  await res.body?.cancel();
  assert.equal(res.headers.get("x-ok"), "fine");
}

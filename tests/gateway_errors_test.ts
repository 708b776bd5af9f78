import assert from "node:assert/strict";
import { PythonError } from "../src/errors.ts";
import { GatewayMetrics } from "../src/gateway/metrics.ts";
import {
  partialRequest,
  type RawResponse,
  startGateway,
  type TestGateway,
  until,
} from "./_gateway_harness.ts";

const post = (body: string): RequestInit => ({ method: "POST", body });

/**
 * The body of an error response without its `requestId`, which the errors
 * of a model call and of the eval routes have (made up: a UUID, also its
 * X-Request-Id header) and other routes' errors have not.
 */
function withoutCallId(res: RawResponse, what: string): unknown {
  const { error } = res.body as { error: Record<string, unknown> };
  const { requestId, ...rest } = error;
  if (what.includes("execute") || what.includes("/v1/eval")) {
    assert.match(String(requestId), /^[0-9a-f-]{36}$/, what);
    assert.equal(res.headers.get("x-request-id"), requestId, what);
  } else {
    assert.equal(requestId, undefined, what);
  }
  return { error: rest };
}

// Steps on one gateway started as `startGateway({ debug: false })`: each of
// these tests started its own (a gateway and its Python worker) and needs no
// fresh one.
Deno.test("createGateway answers a model's errors as the execute table says (debug off)", async (t) => {
  await using gw = await startGateway({ debug: false });
  await t.step(
    "createGateway answers a model's uncaught HostError and an unencodable result like the execute table says",
    () => creategatewayAnswersModelUncaughtHosterror(gw),
  );
  await t.step(
    "createGateway answers a model's MemoryError with 507 (the server's lack, not the request's), the worker serving on",
    () => creategatewayAnswersModelMemoryerrorWith(gw),
  );
  await t.step(
    "PythonError of an exception without a message is its type alone, as Python's traceback shows it",
    () => pythonerrorExceptionWithoutMessageIs(gw),
  );
});

/** A step of "createGateway answers a model's errors as the execute table says (debug off)": createGateway answers a model's uncaught HostError and an unencodable result like the execute table says */
async function creategatewayAnswersModelUncaughtHosterror(
  gw: TestGateway,
): Promise<void> {
  await Deno.writeTextFile(
    `${gw.dir}/odd.py`,
    `class Odd:
    def execute(self, msg):
        return float("nan") if msg.get("nan") else {1, 2}
`,
  );
  await gw.pool.addModel("odd", { file: "odd.py" });
  const res = await gw.fetch(
    "/v1/models/publisher/execute",
    post('{"channel":"bad name!"}'),
  );
  assert.equal(res.status, 422);
  const { error } = await res.json();
  assert.equal(error.type, "PythonError");
  assert.equal(error.exception, "HostError");
  assert.equal(error.traceback, undefined);
  for (const body of ['{"nan":true}', "{}"]) {
    const r = await gw.fetch("/v1/models/odd/execute", post(body));
    assert.equal(r.status, 422, body);
    assert.equal((await r.json()).error.type, "SerializationError");
  }
}

/** A step of "createGateway answers a model's errors as the execute table says (debug off)": createGateway answers a model's MemoryError with 507 (the server's lack, not the request's), the worker serving on */
async function creategatewayAnswersModelMemoryerrorWith(
  gw: TestGateway,
): Promise<void> {
  await Deno.writeTextFile(
    `${gw.dir}/hungry.py`,
    `class Hungry:
    def execute(self, msg):
        if msg.get("huge"):
            # A real allocation failure: far more than any address space.
            return len(bytearray(1 << 62))
        return "fed"
`,
  );
  await gw.pool.addModel("hungry", { file: "hungry.py" });
  const res = await gw.fetch(
    "/v1/models/hungry/execute",
    post('{"huge": true}'),
  );
  assert.equal(res.status, 507);
  const { error } = await res.json();
  assert.equal(error.type, "PythonError");
  assert.equal(error.exception, "MemoryError");
  // What it means and what to do, not "MemoryError" alone.
  assert.equal(
    error.message,
    "MemoryError: the model's worker could not allocate the memory it asked " +
      "for (a limit of the workers: a ulimit of serve --python's wrapper, the " +
      "container's; or one allocation beyond any); /metrics has each " +
      "worker's pyproxy_worker_resident_memory_bytes, and a PUT of the model " +
      "loads it again, freeing what its instance held (docs/reliability.md, " +
      "Runbook)",
  );
  // The worker serves on.
  const ok = await gw.fetch("/v1/models/hungry/execute", post("{}"));
  assert.equal(ok.status, 200);
  assert.equal(await ok.json(), "fed");
}

/** A step of "createGateway answers a model's errors as the execute table says (debug off)": PythonError of an exception without a message is its type alone, as Python's traceback shows it */
async function pythonerrorExceptionWithoutMessageIs(
  gw: TestGateway,
): Promise<void> {
  await Deno.writeTextFile(
    `${gw.dir}/bare.py`,
    `import sys
class Bare:
    def execute(self, msg):
        if msg.get("exit"):
            sys.exit()
        raise ValueError(msg.get("text", ""))
`,
  );
  await gw.pool.addModel("bare", { file: "bare.py" });
  for (
    const [body, exception, message] of [
      ["{}", "ValueError", "ValueError"],
      ['{"exit":true}', "SystemExit", "SystemExit"],
      ['{"text":"bad x"}', "ValueError", "ValueError: bad x"],
    ] as const
  ) {
    const res = await gw.fetch("/v1/models/bare/execute", post(body));
    assert.equal(res.status, 422, body);
    const { error } = await res.json();
    assert.deepEqual([error.exception, error.message], [exception, message]);
    const err = await gw.pool.execute("bare", JSON.parse(body)).then(
      () => assert.fail("no error"),
      (e: unknown) => e as PythonError,
    );
    assert.ok(err instanceof PythonError);
    assert.deepEqual([err.type, err.message], [exception, message]);
  }
}

Deno.test("createGateway shows a model's uncaught HostError with the model's traceback under debug", async () => {
  await using gw = await startGateway({ debug: true });
  const res = await gw.fetch(
    "/v1/models/publisher/execute",
    post('{"channel":"bad name!"}'),
  );
  assert.equal(res.status, 422);
  const { error } = await res.json();
  assert.equal(error.exception, "HostError");
  assert.match(error.traceback, /in execute\n/);
  assert.match(error.traceback, /HostError: /);
});

// Steps on one gateway started as `startGateway()`: each of these tests started
// its own (a gateway and its Python worker) and needs no fresh one.
Deno.test("createGateway's refusals and hints to a client that asks wrong (a default gateway)", async (t) => {
  await using gw = await startGateway();
  await t.step(
    "createGateway refuses a body that is not a JSON object for a model with declared inputs",
    () => creategatewayRefusesBodyThatIs(gw),
  );
  await t.step(
    "createGateway's 405 allows only the methods this configuration serves: PUT/DELETE of a model and PUT /v1/workers only with --allow-manage, eval only with --allow-eval",
    () => creategateway405AllowsOnlyMethods(gw),
  );
  await t.step(
    "createGateway hints at /execute and /v1 when a path misses them",
    () => creategatewayHintsAtExecuteAnd(gw),
  );
  await t.step(
    "createGateway names its own route when a migrated client asks TorchServe's, KServe V1's or a sidecar's",
    () => creategatewayNamesItsOwnRoute(gw),
  );
  await t.step(
    "createGateway tells a client that posts text as it is (TorchServe's way) that such bodies are JSON, and how to send text or bytes",
    () => creategatewayTellsClientThatPosts(gw),
  );
});

/** A step of "createGateway's refusals and hints to a client that asks wrong (a default gateway)": createGateway refuses a body that is not a JSON object for a model with declared inputs */
async function creategatewayRefusesBodyThatIs(gw: TestGateway): Promise<void> {
  for (const body of ["[1]", '"x"', "3", "null"]) {
    const res = await gw.fetch("/v1/models/scorer/execute", post(body));
    assert.equal(res.status, 400, body);
    const { error } = await res.json();
    assert.equal(error.type, "ValidationError");
    assert.equal(
      error.message,
      "Cannot execute model 'scorer': expected a JSON object",
      body,
    );
  }
}

Deno.test("createGateway answers a missing model file with 404 and no server path", async () => {
  await using gw = await startGateway({ allowManage: true });
  for (const file of ["..%2Foutside.py", "nope.py", "sub/nope.py"]) {
    const res = await gw.fetch(
      "/v1/models/t1",
      { method: "PUT", body: JSON.stringify({ file }) },
    );
    assert.equal(res.status, 404, file);
    const { error } = await res.json();
    assert.equal(error.type, "ModelFileNotFound");
    assert.ok(!error.message.includes(gw.dir), error.message);
  }
  // A file that loads badly: the message names it relative to the directory.
  await Deno.writeTextFile(
    `${gw.dir}/reads.py`,
    `open(__file__ + ".missing")\n`,
  );
  const res = await gw.fetch(
    "/v1/models/reads",
    { method: "PUT", body: JSON.stringify({ file: "reads.py" }) },
  );
  assert.equal(res.status, 422);
  const { error } = await res.json();
  assert.equal(error.type, "ModelLoadError");
  assert.ok(!error.message.includes(gw.dir), error.message);
  assert.match(error.message, /reads\.py\.missing/);
});

Deno.test("GatewayMetrics counts calls of unknown models under one label", async () => {
  const metrics = new GatewayMetrics({ maxModels: 3 });
  for (let i = 0; i < 10; i++) metrics.start(`made-up-${i}`)(404);
  metrics.start("echo")(200);
  metrics.start("echo")(404, true); // the model's own 404 keeps its series
  metrics.start("later")(200);
  const models = metrics.toJSON().models;
  assert.deepEqual(Object.keys(models).sort(), ["_unknown", "echo", "later"]);
  assert.deepEqual(models._unknown?.requests, { "404": 10 });
  assert.deepEqual(models.echo?.requests, { "200": 1, "404": 1 });

  await using gw = await startGateway();
  for (let i = 0; i < 5; i++) {
    const res = await gw.fetch(`/v1/models/nope${i}/execute`, post("{}"));
    assert.equal(res.status, 404);
    await res.body?.cancel();
  }
  const text = await (await gw.fetch("/metrics")).text();
  assert.match(
    text,
    /pyproxy_requests_total\{model="_unknown",status="404"\} 5/,
  );
  assert.doesNotMatch(text, /nope\d/);
});

Deno.test("GatewayMetrics counts concurrent calls of unknown models under one label", async () => {
  // Ten calls of one made-up name in flight at once, and a name too long
  // for any model: each one is an "_unknown" 404, and no series is left.
  const metrics = new GatewayMetrics();
  const ends = Array.from({ length: 10 }, () => metrics.start("made-up"));
  for (const end of ends) end(404);
  const models = metrics.toJSON().models;
  assert.deepEqual(Object.keys(models), ["_unknown"]);
  assert.deepEqual(models._unknown?.requests, { "404": 10 });
  // A histogram appears with its first observation, not with a call in
  // flight that may yet turn out to be an "_unknown" 404.
  const pending = metrics.start("pending");
  assert.doesNotMatch(metrics.render({ workers: [] }), /model="pending",le=/);
  pending(404);
  assert.doesNotMatch(metrics.render({ workers: [] }), /pending/);

  await using gw = await startGateway();
  const responses = await Promise.all([
    ...Array.from(
      { length: 8 },
      (_, i) => gw.fetch(`/v1/models/nope${i % 2}/execute`, post("{}")),
    ),
    gw.fetch(`/v1/models/${"x".repeat(200)}/execute`, post("{}")),
  ]);
  for (const res of responses) {
    assert.equal(res.status, 404);
    await res.body?.cancel();
  }
  const text = await (await gw.fetch("/metrics")).text();
  assert.match(
    text,
    /pyproxy_requests_total\{model="_unknown",status="404"\} 9\n/,
  );
  assert.doesNotMatch(text, /nope\d|xxxx/);
  assert.match(
    text,
    /pyproxy_http_responses_total\{route="\/v1\/models\/\{name\}\/execute",status="404"\} 9\n/,
  );
});

Deno.test("createGateway bounds model names and checks ?history=", async () => {
  await using gw = await startGateway({ allowManage: true });
  const long = "a".repeat(5000);
  const exec = await gw.fetch(`/v1/models/${long}/execute`, post("{}"));
  assert.equal(exec.status, 404);
  const execError = (await exec.json()).error;
  assert.ok(execError.message.length < 300, execError.message);
  const put = await gw.fetch(`/v1/models/${long}`, {
    method: "PUT",
    body: JSON.stringify({ file: "echo.py" }),
  });
  assert.equal(put.status, 400);
  assert.ok((await put.json()).error.message.length < 300);
  // The metrics' labels for calls of no single model are not model names.
  for (const name of ["_unknown", "_other"]) {
    const res = await gw.fetch(`/v1/models/${name}`, {
      method: "PUT",
      body: JSON.stringify({ file: "echo.py" }),
    });
    assert.equal(res.status, 400, name);
    assert.match((await res.json()).error.message, /reserved for the metrics/);
  }
  for (const history of ["abc", "-1", "1.5", "", "1e1", "0x1", "%201"]) {
    const res = await gw.fetch(`/v1/channels?history=${history}`);
    assert.equal(res.status, 400, history);
    assert.equal((await res.json()).error.type, "InvalidRequestError");
  }
  // Last-Event-ID is a plain sequence number too.
  for (const last of ["1e0", "0x1", "-5", "1.0", "abc", "+1"]) {
    const res = await gw.fetch("/v1/channels/news", {
      headers: { "last-event-id": last },
    });
    assert.equal(res.status, 400, JSON.stringify(last));
    assert.match(
      (await res.json()).error.message,
      /Last-Event-ID must be a message sequence number/,
    );
  }
  const ok = await gw.fetch("/v1/channels?history=0");
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
});

Deno.test("createGateway answers a known path with the wrong method with 405 and Allow", async () => {
  await using gw = await startGateway({ allowManage: true });
  const cases: Array<[string, string, string]> = [
    ["GET", "/v1/models/echo/execute", "POST"],
    ["PATCH", "/v1/models/echo", "GET, HEAD, PUT, DELETE"],
    ["POST", "/healthz", "GET, HEAD"],
    ["DELETE", "/v1/status", "GET, HEAD"],
  ];
  for (const [method, path, allow] of cases) {
    const res = await gw.fetch(path, { method });
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(
      [...res.headers.get("allow")!.split(", ")].sort().join(", "),
      allow.split(", ").sort().join(", "),
    );
    const { error } = await res.json();
    assert.equal(error.type, "MethodNotAllowed");
    assert.equal(
      error.message,
      `Cannot ${method} ${path}: allowed: ${res.headers.get("allow")}`,
    );
  }
  const missing = await gw.fetch("/v1/nothing/here", { method: "POST" });
  assert.equal(missing.status, 404);
  assert.deepEqual((await missing.json()).error, {
    type: "NotFound",
    message: "Cannot find route POST /v1/nothing/here",
  });
});

/** A step of "createGateway's refusals and hints to a client that asks wrong (a default gateway)": createGateway's 405 allows only the methods this configuration serves: PUT/DELETE of a model and PUT /v1/workers only with --allow-manage, eval only with --allow-eval */
async function creategateway405AllowsOnlyMethods(
  gw: TestGateway,
): Promise<void> {
  const cases: Array<[string, string, string, string]> = [
    [
      "PATCH",
      "/v1/models/echo",
      "GET, HEAD",
      "allowed: GET, HEAD; PUT, DELETE with --allow-manage",
    ],
    ["GET", "/v1/workers", "", "allowed: none; PUT with --allow-manage"],
    ["GET", "/v1/eval", "", "allowed: none; POST with --allow-eval"],
    [
      "POST",
      "/v1/eval/a1/events",
      "",
      "allowed: none; GET, HEAD with --allow-eval",
    ],
    // TF Serving's :predict with its colon encoded: the hint says to send it as it is.
    ["POST", "/v1/models/echo%3Apredict", "GET, HEAD", "allowed: GET, HEAD ("],
    // A version's management, and the repository extension's.
    [
      "PATCH",
      "/v1/models/echo/versions/1",
      "GET, HEAD",
      "allowed: GET, HEAD; PUT, DELETE with --allow-manage",
    ],
    [
      "GET",
      "/v1/models/echo/default",
      "",
      "allowed: none; PUT with --allow-manage",
    ],
    [
      "GET",
      "/v2/repository/index",
      "",
      "allowed: none; POST with --allow-manage",
    ],
    [
      "GET",
      "/v2/repository/models/echo/load",
      "",
      "allowed: none; POST with --allow-manage",
    ],
  ];
  for (const [method, path, allow, message] of cases) {
    const res = await gw.fetch(path, {
      method,
      ...(method === "POST" ? { body: "{}" } : {}),
    });
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.get("allow"), allow, `${method} ${path}`);
    const { error } = await res.json();
    // /v2's errors are {"error": "message"}.
    const text = typeof error === "string" ? error : error.message;
    assert.ok(text.startsWith(`Cannot ${method} ${path}: ${message}`), text);
  }
  // Turned on, they are allowed.
  await using managed = await startGateway({
    allowManage: true,
    allowEval: true,
  });
  for (
    const [method, path, allow] of [
      ["POST", "/v1/models/echo%3Apredict", "GET, HEAD, PUT, DELETE"],
      ["GET", "/v1/workers", "PUT"],
      ["GET", "/v1/eval", "POST"],
      ["PATCH", "/v1/models/echo/versions/1", "GET, HEAD, PUT, DELETE"],
      ["GET", "/v2/repository/models/echo/unload", "POST"],
    ] as const
  ) {
    const res = await managed.fetch(path, {
      method,
      ...(method === "POST" ? { body: "{}" } : {}),
    });
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.get("allow"), allow, `${method} ${path}`);
    const { error } = await res.json();
    assert.doesNotMatch(error.message ?? error, /with --allow-/);
  }
}

/** A step of "createGateway's refusals and hints to a client that asks wrong (a default gateway)": createGateway hints at /execute and /v1 when a path misses them */
async function creategatewayHintsAtExecuteAnd(gw: TestGateway): Promise<void> {
  const noExecute = await gw.fetch("/v1/models/echo", post("{}"));
  assert.equal(noExecute.status, 405);
  assert.match(
    (await noExecute.json()).error.message,
    /^Cannot POST \/v1\/models\/echo: allowed: .* \(to run the model: POST \/v1\/models\/echo\/execute\)$/,
  );
  const noV1 = await gw.fetch("/models/echo/execute", post("{}"));
  assert.equal(noV1.status, 404);
  assert.deepEqual((await noV1.json()).error, {
    type: "NotFound",
    message:
      "Cannot find route POST /models/echo/execute (did you mean /v1/models/echo/execute?)",
  });
}

/** A step of "createGateway's refusals and hints to a client that asks wrong (a default gateway)": createGateway names its own route when a migrated client asks TorchServe's, KServe V1's or a sidecar's */
async function creategatewayNamesItsOwnRoute(gw: TestGateway): Promise<void> {
  for (
    const [method, path, hint] of [
      [
        "POST",
        "/predictions/echo",
        "(to run a model: POST /v1/models/echo/execute; docs/migrating.md)",
      ],
      [
        "POST",
        "/predictions/echo/2.0",
        "(to run a model: POST /v1/models/echo/execute; docs/migrating.md)",
      ],
      // A long name is in the path already: not twice.
      [
        "POST",
        `/predictions/${"m".repeat(100)}`,
        "(to run a model: POST /v1/models/{name}/execute; docs/migrating.md)",
      ],
      ["GET", "/ping", "(the health check is GET /healthz; docs/migrating.md)"],
      [
        "GET",
        "/health",
        "(the health check is GET /healthz; docs/migrating.md)",
      ],
      // A FastAPI sidecar's Swagger UI and ReDoc (a bare 404 before).
      ...["/docs", "/redoc"].map((path) =>
        [
          "GET",
          path,
          "(no Swagger UI here: the API is described by GET /openapi.json, which Swagger UI or ReDoc can load, and the dashboard is GET /; docs/migrating.md)",
        ] as const
      ),
    ] as const
  ) {
    const res = await gw.fetch(path, {
      method,
      ...(method === "POST" ? { body: "{}" } : {}),
    });
    assert.equal(res.status, 404, path);
    assert.deepEqual((await res.json()).error, {
      type: "NotFound",
      message: `Cannot find route ${method} ${path} ${hint}`,
    });
  }
  // TF Serving's :predict (served: gateway_predict_test.ts) with its colon
  // percent-encoded reads as a model name to the router: a 405 with the
  // hint, not "POST /v1/models/echo%3Apredict/execute"; in :predict's
  // {"error": message} shape.
  for (
    const [model, named] of [["echo", "echo"], ["m".repeat(100), "{name}"]]
  ) {
    const path = `/v1/models/${model}%3Apredict`;
    const res = await gw.fetch(path, post('{"instances": [1]}'));
    assert.equal(res.status, 405);
    assert.equal(
      (await res.json()).error,
      `Cannot POST ${path}: allowed: ${
        res.headers.get("allow")
      } (write the colon before predict as it is, not percent-encoded: POST /v1/models/${named}:predict)`,
    );
  }
  // Anything else stays a bare 404.
  const other = await gw.fetch("/predict", post("{}"));
  assert.equal(
    (await other.json()).error.message,
    "Cannot find route POST /predict",
  );
}

/** A step of "createGateway's refusals and hints to a client that asks wrong (a default gateway)": createGateway tells a client that posts text as it is (TorchServe's way) that such bodies are JSON, and how to send text or bytes */
async function creategatewayTellsClientThatPosts(
  gw: TestGateway,
): Promise<void> {
  const note = (type: string) =>
    ` (the gateway reads JSON bodies only, not ${type}: send text as a JSON string, or in an object such as {"text": "..."}; a model's execute and stream routes pass a body of another Content-Type (application/octet-stream, image/png...) to the model as bytes)`;
  for (
    const [path, body, type] of [
      ["/v1/models/echo/execute", "great movie", "text/plain"], // the app's direct path
      ["/v1/models/echo/execute?key=k", "great movie", "text/plain"], // the router's
      ["/v1/models/echo/stream", "great movie", "text/plain"],
      // An image/png body goes to the model as bytes: gateway_bytes_test.ts.
    ] as const
  ) {
    const res = await gw.fetch(path, {
      method: "POST",
      body,
      headers: { "content-type": type },
    });
    assert.equal(res.status, 400, `${path} ${type}`);
    const { error } = await res.json();
    assert.equal(error.type, "InvalidJson");
    assert.match(error.message, /^Cannot parse request body as JSON: /);
    assert.ok(error.message.endsWith(note(type)), error.message);
  }
}

Deno.test("createGateway answers 408 to a request whose body does not arrive within the request timeout, on every route that reads one, and frees its slot", async () => {
  const timeout = 1000;
  await using gw = await startGateway({
    allowEval: true,
    allowManage: true,
    limits: { requestTimeout: timeout },
  });
  const inFlight = async () =>
    (await (await gw.fetch("/v1/status")).json()).gateway.inFlight;
  const started = performance.now();
  // Headers, then 5 of the 100 bytes promised, then nothing (slowloris).
  const stalled = [
    ["POST", "/v1/models/echo/execute"], // the app's direct path
    ["POST", "/v1/models/echo/execute?key=k"], // the router's
    ["PUT", "/v1/models/late"],
    ["POST", "/v1/eval"],
    ["POST", "/v1/channels/news"],
  ] as const;
  const requests = await Promise.all(
    stalled.map(([method, path]) =>
      partialRequest(gw, method, path, '{"a":', { contentLength: 100 })
    ),
  );
  // A chunked body that stalls after its first chunk: the gateway's own reader.
  requests.push(
    await partialRequest(gw, "POST", "/v1/models/echo/execute", '{"a":'),
  );
  try {
    // Both execute calls of echo hold a slot while the bodies are awaited.
    await until(async () => await inFlight() === 3, "3 calls in flight");
    for (const [i, req] of requests.entries()) {
      const res = await req.response;
      const what = stalled[i]?.join(" ") ?? "chunked execute";
      assert.equal(res.status, 408, what);
      assert.deepEqual(withoutCallId(res, what), {
        error: {
          type: "RequestTimeout",
          message:
            `Cannot read request: the body did not arrive within ${timeout} ms`,
          timeout,
        },
      }, what);
      // Deno adds its own "close" while its reader still holds the body.
      assert.match(
        res.headers.get("connection") ?? "",
        /^close(, close)?$/,
        what,
      );
    }
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= timeout * 0.9, `answered after ${elapsed} ms`);
    assert.equal(await inFlight(), 0);
    const metrics = await (await gw.fetch("/metrics")).text();
    assert.match(metrics, /^pyproxy_in_flight_requests\{model="echo"\} 0$/m);
    // Over the routes that read a body.
    const timedOut = [
      ...metrics.matchAll(
        /^pyproxy_http_responses_total\{route="[^"]*",status="408"\} (\d+)$/gm,
      ),
    ].reduce((n, m) => n + Number(m[1]), 0);
    assert.equal(timedOut, 6);
    // The gateway goes on serving.
    const ok = await gw.fetch("/v1/models/echo/execute", post('{"a":1}'));
    assert.deepEqual(await ok.json(), { a: 1 });
  } finally {
    for (const req of requests) await req[Symbol.asyncDispose]();
  }
});

Deno.test("createGateway answers 404 to a call of a model there is not before its body, never the slow body's 408, and lets the body go (Connection: close)", async () => {
  // A request timeout shorter than the wait of the responses below: without
  // the check before the body, the execute and stream calls got its 408.
  const timeout = 1000;
  await using gw = await startGateway({
    allowManage: true,
    limits: { requestTimeout: timeout },
  });
  const calls = [
    ["POST", "/v1/models/nope/execute"], // the app's direct path
    ["POST", "/v1/models/nope/execute?key=k"], // the router's
    ["POST", "/v1/models/nope/stream"],
    ["POST", "/v1/models/nope:predict"],
    ["POST", "/v2/models/nope/infer"],
  ] as const;
  const requests = [];
  try {
    for (const [method, path] of calls) {
      // Headers, then 5 of the 100 bytes promised, then nothing; and a
      // chunked body that stalls after its first chunk.
      requests.push(
        await partialRequest(gw, method, path, '{"a":', {
          contentLength: 100,
          waitMs: 10_000,
        }),
        await partialRequest(gw, method, path, '{"a":', { waitMs: 10_000 }),
      );
    }
    for (const [i, req] of requests.entries()) {
      const [method, path] = calls[Math.floor(i / 2)]!;
      const what = `${method} ${path} ${i % 2 ? "chunked" : "Content-Length"}`;
      const res = await req.response;
      assert.equal(res.status, 404, what);
      // :predict's and /v2's errors are their protocols' (a string).
      const { error } = res.body as { error: string | { message: string } };
      const message = typeof error === "string" ? error : error.message;
      assert.match(message, /^Cannot find model .*nope/, what);
      // The body is not read: the client is told to open a new connection.
      assert.match(res.headers.get("connection") ?? "", /close/, what);
    }
    // The 404 says what a worker's says: the model meant, or those loaded.
    for (
      const path of ["/v1/models/echoo/execute", "/v1/models/echoo/stream"]
    ) {
      const typo = await gw.fetch(path, post("{}"));
      assert.equal(typo.status, 404, path);
      assert.equal(
        (await typo.json()).error.message,
        "Cannot find model 'echoo': not loaded (did you mean 'echo'?)",
        path,
      );
    }
    // A model that is there still waits for its body (its 408): the check
    // refuses only the names the pool does not have.
    await using known = await partialRequest(
      gw,
      "POST",
      "/v1/models/echo/execute",
      '{"a":',
      { contentLength: 100 },
    );
    assert.equal((await known.response).status, 408);
    const ok = await gw.fetch("/v1/models/echo/execute", post('{"a":1}'));
    assert.deepEqual(await ok.json(), { a: 1 });
  } finally {
    for (const req of requests) await req[Symbol.asyncDispose]();
  }
});

Deno.test("createGateway answers 400 IncompleteBody, not a 500, to a body cut short by the client, on every route that reads one", async () => {
  await using gw = await startGateway({ allowEval: true, allowManage: true });
  const routes = [
    ["POST", "/v1/models/echo/execute"], // the app's direct path
    ["POST", "/v1/models/echo/execute?key=k"], // the router's
    ["PUT", "/v1/models/late"],
    ["POST", "/v1/eval"],
    ["POST", "/v1/channels/news"],
  ] as const;
  // 5 of the 100 bytes declared (the runtime's JSON reader), or a first chunk
  // and no last one (the gateway's own reader); then the client stops sending.
  const cases: { method: string; path: string; contentLength?: number }[] = [
    ...routes.map(([method, path]) => ({ method, path, contentLength: 100 })),
    ...routes.map(([method, path]) => ({ method, path })),
  ];
  for (const { method, path, contentLength } of cases) {
    const what = `${method} ${path} ${contentLength ?? "chunked"}`;
    await using req = await partialRequest(
      gw,
      method,
      path,
      '{"a":',
      contentLength === undefined
        ? { halfClose: true }
        : { contentLength, halfClose: true },
    );
    const res = await req.response;
    assert.equal(res.status, 400, what);
    assert.deepEqual(withoutCallId(res, what), {
      error: {
        type: "IncompleteBody",
        message: "Cannot read request: the body ended before it was complete",
      },
    }, what);
    assert.match(
      res.headers.get("connection") ?? "",
      /^close(, close)?$/,
      what,
    );
  }
  const metrics = await (await gw.fetch("/metrics")).text();
  assert.doesNotMatch(metrics, /status="500"/);
  assert.match(metrics, /^pyproxy_in_flight_requests\{model="echo"\} 0$/m);
});

// Steps on one gateway started as `startGateway({ allowEval: true })`: each of
// these tests started its own (a gateway and its Python worker) and needs no
// fresh one.
Deno.test("POST /v1/eval tells a client what its body must be", async (t) => {
  await using gw = await startGateway({ allowEval: true });
  await t.step(
    "POST /v1/eval tells a client that sends plain code or no code what the body is",
    () => postV1EvalTellsClient(gw),
  );
  await t.step(
    "POST /v1/eval refuses locals that are not an object (an array is not turned into one)",
    () => postV1EvalRefusesLocals(gw),
  );
});

/** A step of "POST /v1/eval tells a client what its body must be": POST /v1/eval tells a client that sends plain code or no code what the body is */
async function postV1EvalTellsClient(gw: TestGateway): Promise<void> {
  const plain = await gw.fetch("/v1/eval", post("print(1)"));
  assert.equal(plain.status, 400);
  const { error } = await plain.json();
  assert.equal(error.type, "InvalidJson");
  assert.match(
    error.message,
    /^Cannot parse request body as JSON: .* \(send \{"code": "<Python code>"\}\)$/,
  );
  // Its own hint only, not the general one for text and images.
  assert.doesNotMatch(error.message, /JSON bodies only/);
  const typo = await gw.fetch("/v1/eval", post('{"cod": "1"}'));
  assert.equal(typo.status, 400);
  const body = await typo.json();
  // Every error of the eval routes has a request id (made up without one).
  assert.match(body.error.requestId, /^[0-9a-f-]{36}$/);
  delete body.error.requestId;
  assert.deepEqual(body, {
    error: {
      type: "ValidationError",
      message: "Cannot eval: code: is required",
    },
  });
}

/** A step of "POST /v1/eval tells a client what its body must be": POST /v1/eval refuses locals that are not an object (an array is not turned into one) */
async function postV1EvalRefusesLocals(gw: TestGateway): Promise<void> {
  for (
    const [body, message] of [
      [{ code: "1", locals: [7] }, "locals: expected an object"],
      [{ code: "1", locals: null }, "locals: expected an object"],
      [{ code: "1", args: null }, "args: expected an array or an object"],
    ] as const
  ) {
    const res = await gw.fetch("/v1/eval", post(JSON.stringify(body)));
    assert.equal(res.status, 400, JSON.stringify(body));
    const { error: { requestId, ...error } } = await res.json();
    assert.equal(res.headers.get("x-request-id"), requestId);
    assert.deepEqual(error, {
      type: "ValidationError",
      message: `Cannot eval: ${message}`,
    });
  }
}

Deno.test("Gateway's 502 for a worker that died names the calls it was running, by model", async () => {
  const crasher =
    "import os\n\nclass Crasher:\n    def execute(self, msg):\n        os._exit(3)\n";
  await using gw = await startGateway({}, { "crasher.py": crasher });
  const started = `${gw.dir}/started`;
  const waiting = gw.fetch(
    "/v1/models/waiter/execute",
    post(JSON.stringify({ started, cancelled: `${gw.dir}/cancelled` })),
  );
  await until(
    () => Deno.stat(started).then(() => true, () => false),
    "the waiter's call to start",
  );
  const res = await gw.fetch("/v1/models/crasher/execute", post("{}"));
  assert.equal(res.status, 502);
  const { error } = await res.json();
  assert.equal(error.type, "WorkerCrashedError");
  assert.match(
    error.message,
    /^Cannot run model 'crasher': worker w1 \(pid \d+\) died: exited with code 3 while running: waiter \(1 call\), crasher \(1\)$/,
  );
  assert.equal(error.worker, "w1");
  assert.equal(error.call, "crasher");
  assert.deepEqual(error.inFlight, { waiter: 1, crasher: 1 });
  assert.equal(error.inFlightCalls, 2);
  assert.equal(error.traceback, undefined);
  const victim = await waiting;
  assert.equal(victim.status, 502);
  const lost = (await victim.json()).error;
  assert.equal(lost.call, "waiter");
  assert.deepEqual(lost.inFlight, { waiter: 1, crasher: 1 });
  // /v1/status keeps it in the worker's lastExit.
  const status = await (await gw.fetch("/v1/status")).json();
  assert.deepEqual(status.workers[0].lastExit.inFlight, {
    byName: { waiter: 1, crasher: 1 },
    calls: 2,
  });
});

Deno.test("createGateway shows --debug details only to the management token when one is set", async () => {
  const manageToken = "manage-token-0123456789abcdef";
  await using gw = await startGateway({
    debug: true,
    token: "inference-token-0123456789",
    manageToken,
  });
  const manage = { authorization: `Bearer ${manageToken}` };
  // A model's traceback: not for the inference token's clients.
  const call = (headers: HeadersInit = {}) =>
    gw.fetch(
      "/v1/models/publisher/execute",
      { ...post('{"channel":"bad name!"}'), headers },
    );
  const hidden = await (await call()).json();
  assert.equal(hidden.error.exception, "HostError");
  assert.equal(hidden.error.traceback, undefined);
  const shown = await (await call(manage)).json();
  assert.match(shown.error.traceback, /HostError: /);
  // Workers' stderr: the same.
  const status = async (headers: HeadersInit = {}) =>
    (await (await gw.fetch("/v1/status", { headers })).json()).workers;
  assert.ok(
    (await status()).every((w: object) => !("stderrTail" in w)),
    "no stderrTail for the inference token",
  );
  assert.ok(
    (await status(manage)).every((w: object) => "stderrTail" in w),
    "stderrTail for the management token",
  );
});

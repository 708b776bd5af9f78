// GET /openapi.json: the document is valid OpenAPI 3.1 (the official JSON
// Schema, and every schema in it compiles as JSON Schema 2020-12), follows
// the gateway's configuration and models, and its examples run for real.
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020 } from "ajv/dist/2020.js";
import { createGateway } from "../src/gateway/app.ts";
import type { GatewayPool } from "../src/gateway/gateway_pool.ts";
import { openApiDocument } from "../src/gateway/openapi.ts";
import { PYTHON_MANIFEST } from "../src/runtime/python_manifest.ts";
import { SseReader, startGateway } from "./_gateway_harness.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** A model declaring one input of each type (and an optional one). */
const TYPED = `class Typed:
    """Returns its declared inputs."""

    inputs = {
        "n": "number",
        "i": "integer",
        "s": "string",
        "b": "boolean",
        "a": "array",
        "o": "object",
        "x": "any",
        "ttl": "number?",
    }
    outputs = {
        "n": "number",
        "i": "integer",
        "s": "string",
        "b": "boolean",
        "a": "array",
        "o": "object",
        "x": "any",
    }

    def execute(self, msg):
        return {k: msg[k] for k in self.outputs}
`;

/** A streaming model. */
const TOKENS = `class Tokens:
    """Yields the words of text."""

    inputs = {"text": "string"}
    outputs = {"token": "string"}

    def execute(self, msg):
        for word in msg["text"].split():
            yield {"token": word}
`;

const MODELS = { "typed.py": TYPED, "tokens.py": TOKENS };

/** Checks `doc` against the official OpenAPI 3.1 schema; returns its errors. */
async function openApiErrors(doc: Json): Promise<string | undefined> {
  const result = await new Validator().validate(doc);
  return result.valid ? undefined : JSON.stringify(result.errors, null, 1);
}

/** `schema` with its `#/components/schemas/...` references replaced by their targets. */
function inlined(doc: Json, schema: Json): Json {
  if (Array.isArray(schema)) return schema.map((s) => inlined(doc, s));
  if (typeof schema !== "object" || schema === null) return schema;
  const ref = schema.$ref;
  if (typeof ref === "string" && ref.startsWith("#/components/schemas/")) {
    return inlined(doc, doc.components.schemas[ref.split("/").pop()!]);
  }
  return Object.fromEntries(
    Object.entries(schema).map(([k, v]) => [k, inlined(doc, v)]),
  );
}

/** A validator of the document's JSON Schemas (2020-12, strict: unknown keywords fail). */
function schemaCompiler(
  doc: Json,
): (schema: Json) => (value: unknown) => string | undefined {
  const ajv = new Ajv2020({
    strict: true,
    allErrors: true,
    allowUnionTypes: true,
  });
  return (schema) => {
    const validate = ajv.compile(inlined(doc, schema));
    return (value) =>
      validate(value) ? undefined : ajv.errorsText(validate.errors);
  };
}

/** Every JSON Schema of the document: components, parameters, bodies, responses, SSE events. */
function everySchema(doc: Json): Array<[string, Json]> {
  const out: Array<[string, Json]> = [];
  for (const [name, s] of Object.entries(doc.components.schemas)) {
    out.push([`components.schemas.${name}`, s]);
  }
  const media = (where: string, content: Json) => {
    for (
      const [type, m] of Object.entries(content ?? {}) as Array<[string, Json]>
    ) {
      out.push([`${where} ${type}`, m.schema]);
      for (const [ev, s] of Object.entries(m["x-sse-events"] ?? {})) {
        out.push([`${where} ${type} event ${ev}`, s]);
      }
    }
  };
  // A `$ref` to a component: checked once, with the components.
  const target = (x: Json): Json =>
    typeof x.$ref === "string"
      ? doc.components[x.$ref.split("/")[2]][x.$ref.split("/")[3]]
      : x;
  for (const [name, p] of Object.entries(doc.components.parameters ?? {})) {
    out.push([`components.parameters.${name}`, (p as Json).schema]);
  }
  for (const [name, r] of Object.entries(doc.components.responses ?? {})) {
    media(`components.responses.${name}`, (r as Json).content);
  }
  for (
    const [path, item] of Object.entries(doc.paths) as Array<[string, Json]>
  ) {
    for (const [method, op] of Object.entries(item) as Array<[string, Json]>) {
      if (method === "parameters") continue;
      const where = `${method.toUpperCase()} ${path}`;
      for (const p of [...(item.parameters ?? []), ...(op.parameters ?? [])]) {
        assert.ok(target(p), `${where}: ${p.$ref}`);
        if (p.$ref === undefined) {
          out.push([`${where} parameter ${p.name}`, p.schema]);
        }
      }
      media(`${where} body`, op.requestBody?.content);
      for (
        const [status, r] of Object.entries(op.responses) as Array<
          [string, Json]
        >
      ) {
        assert.ok(target(r), `${where} ${status}: ${r.$ref}`);
        media(`${where} ${status}`, r.content);
      }
    }
  }
  return out;
}

/** The operations of a document, as "METHOD path". */
function operations(doc: Json): string[] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.keys(item as object).filter((k) => k !== "parameters").map((m) =>
      `${m.toUpperCase()} ${path}`
    )
  );
}

const BASE = {
  version: "9.9.9",
  serverUrl: "http://127.0.0.1:8000",
  token: false,
  allowEval: false,
  allowManage: false,
  streams: true,
  bodyLimit: 1024,
  requestTimeout: 30_000,
  models: [],
};

Deno.test("openApiDocument maps each declared input type to its JSON Schema", async () => {
  const doc: Json = openApiDocument({
    ...BASE,
    models: [
      {
        name: "typed",
        inputs: {
          n: "number",
          i: "integer",
          s: "string",
          b: "boolean",
          a: "array",
          o: "object",
          x: "any",
          u: "tensor",
          ttl: "number?",
          anyOpt: "any?",
        },
      },
      { name: "free" },
      { name: "empty", inputs: {} },
    ],
  });
  assert.equal(await openApiErrors(doc), undefined);
  const body = (name: string) =>
    doc.paths[`/v1/models/${name}/execute`].post.requestBody;
  const typed = body("typed").content["application/json"].schema;
  assert.deepEqual(typed.properties, {
    n: { type: "number" },
    i: { type: "integer" },
    s: { type: "string" },
    b: { type: "boolean" },
    a: { type: "array" },
    o: { type: "object" },
    x: {},
    u: {},
    ttl: { type: "number" },
    anyOpt: {},
  });
  assert.deepEqual(typed.required, ["n", "i", "s", "b", "a", "o", "x", "u"]);
  assert.equal(typed.additionalProperties, true);
  assert.equal(body("typed").required, true);
  const compile = schemaCompiler(doc);
  const check = compile(typed);
  const example = body("typed").content["application/json"].example;
  assert.equal(check(example), undefined);
  // What the gateway refuses, the schema refuses.
  assert.notEqual(check({ ...example, ttl: null }), undefined);
  assert.notEqual(check({ ...example, i: 1.5 }), undefined);
  assert.notEqual(check([]), undefined);
  // No declarations: any JSON value reaches the model.
  const free = body("free");
  assert.equal(free.required, false);
  assert.equal(free.content["application/json"].schema.type, undefined);
  assert.equal(
    compile(free.content["application/json"].schema)([1]),
    undefined,
  );
  // Declared as none: any object.
  assert.equal(body("empty").content["application/json"].schema.type, "object");
  assert.equal(body("empty").required, false);
});

Deno.test("openApiDocument lists eval and management routes only when enabled, and the bearer scheme with a token", async () => {
  const off: Json = openApiDocument(BASE);
  const on: Json = openApiDocument({
    ...BASE,
    token: true,
    allowEval: true,
    allowManage: true,
    streams: false,
    models: [{ name: "echo" }],
  });
  for (const doc of [off, on]) {
    assert.equal(await openApiErrors(doc), undefined);
  }
  const gated = [
    "POST /v1/eval",
    "GET /v1/eval/{id}/events",
    "PUT /v1/models/{name}",
    "DELETE /v1/models/{name}",
    "PUT /v1/workers",
  ];
  for (const op of gated) {
    assert.ok(!operations(off).includes(op), op);
    assert.ok(operations(on).includes(op), op);
  }
  assert.equal(off.security, undefined);
  assert.equal(off.components.securitySchemes, undefined);
  assert.equal(off.paths["/v1/status"].get.responses["401"], undefined);
  assert.deepEqual(on.security, [{ bearer: [] }]);
  assert.equal(on.components.securitySchemes.bearer.scheme, "bearer");
  assert.deepEqual(on.paths["/healthz"].get.security, []);
  assert.equal(on.paths["/healthz"].get.responses["401"], undefined);
  assert.ok(on.paths["/v1/status"].get.responses["401"]);
  assert.ok(on.paths["/v1/models/echo/execute"].post.responses["401"]);
  // A pool that cannot stream has no stream paths.
  assert.equal(on.paths["/v1/models/echo/stream"], undefined);
  // The eval routes take X-Request-Id, and their errors give one back.
  for (
    const op of [
      on.paths["/v1/eval"].post,
      on.paths["/v1/eval/{id}/events"].get,
    ]
  ) {
    assert.ok(
      op.parameters.some((p: Json) =>
        p.name === "X-Request-Id" && p.in === "header"
      ),
    );
    assert.ok(op.responses["400"].headers["X-Request-Id"]);
  }
  const compile = schemaCompiler(on); // one Ajv (its setup is the costly part)
  for (const [where, schema] of everySchema(on)) {
    assert.doesNotThrow(() => compile(schema), where);
  }
});

Deno.test("openApiDocument lists the forwarded request headers as header parameters of execute and stream", async () => {
  const doc: Json = openApiDocument({
    ...BASE,
    forwardHeaders: ["x-tenant-id", "accept-language"],
    models: [{ name: "echo" }],
  });
  assert.equal(await openApiErrors(doc), undefined);
  for (const path of ["execute", "stream"]) {
    const headers = doc.paths[`/v1/models/echo/${path}`].post.parameters
      .map((p: Json) => p.$ref.split("/").at(-1))
      .map((key: string) => doc.components.parameters[key])
      .filter((p: Json) => p.in === "header")
      .map((p: Json) => p.name);
    assert.deepEqual(headers, [
      "X-Request-Id",
      "x-tenant-id",
      "accept-language",
    ]);
  }
  // None listed: none described.
  const none: Json = openApiDocument({ ...BASE, models: [{ name: "echo" }] });
  assert.deepEqual(
    Object.keys(none.components.parameters).filter((k) =>
      k.startsWith("forward")
    ),
    [],
  );
});

Deno.test("GET /openapi.json lists the gateway's forwardHeaders", async () => {
  await using gw = await startGateway({
    workers: 1,
    forwardHeaders: ["X-Tenant-Id"],
  }, MODELS);
  const doc: Json = await (await gw.fetch("/openapi.json")).json();
  assert.deepEqual(doc.components.parameters.forward0.name, "x-tenant-id");
  assert.ok(
    doc.paths["/v1/models/echo/execute"].post.parameters.some((p: Json) =>
      p.$ref === "#/components/parameters/forward0"
    ),
  );
});

Deno.test("GET /openapi.json describes a running gateway, and each model's example body executes", async () => {
  await using gw = await startGateway({ workers: 1 }, MODELS);
  const res = await gw.fetch("/openapi.json");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const doc: Json = await res.json();
  assert.equal(await openApiErrors(doc), undefined);
  assert.equal(doc.openapi, "3.1.0");
  assert.equal(doc.info.version, PYTHON_MANIFEST.version);
  assert.deepEqual(doc.servers, [{ url: gw.url }]);
  const compile = schemaCompiler(doc);
  for (const [where, schema] of everySchema(doc)) {
    assert.doesNotThrow(() => compile(schema), where);
  }
  const ops = operations(doc);
  for (
    const op of [
      "GET /healthz",
      "GET /v1/status",
      "GET /metrics",
      "GET /",
      "GET /openapi.json",
      "GET /v1/models",
      "GET /v1/models/{name}",
      "GET /v1/channels",
      "POST /v1/channels/{name}",
      "GET /v1/channels/{name}",
    ]
  ) assert.ok(ops.includes(op), op);
  assert.ok(!ops.includes("POST /v1/eval"));
  assert.ok(!ops.includes("PUT /v1/models/{name}"));
  const typed = doc.paths["/v1/models/typed/execute"].post;
  assert.equal(typed.description, "Returns its declared inputs.");
  assert.equal(
    typed.requestBody.content["application/json"].schema.properties.i.type,
    "integer",
  );
  assert.ok(typed.responses["422"] && typed.responses["504"]);
  // A model's HTTPError: any 4xx or 5xx of its choice.
  assert.ok(typed.responses["4XX"] && typed.responses["5XX"]);
  // Which also answers a listed status (a 404 of its own), and the 431 of a
  // forwarded header: the ranges do not cover listed statuses.
  const range = doc.components.responses[
    typed.responses["4XX"].$ref.split("/").at(-1)
  ];
  assert.match(range.description, /a 404, a 503/);
  assert.match(range.description, /RequestHeaderTooLarge/);
  assert.equal(
    doc.paths["/v1/models/tokens/execute"].post.responses["200"].content[
      "application/json"
    ].schema.type,
    "array",
  );
  // Every model's example body, sent as the document says, passes the
  // gateway's validation of the declared inputs (what the model then makes
  // of it is its own: scorer refuses an age under 18 with a 422); those of
  // the models that answer get an answer matching the document's schema.
  const models: Array<{ name: string }> =
    (await (await gw.fetch("/v1/models")).json()).models;
  assert.ok(models.length >= 8);
  const answering = ["typed", "tokens", "echo", "doubler", "whoami"];
  for (const { name } of models) {
    const op = doc.paths[`/v1/models/${name}/execute`].post;
    const media = op.requestBody.content["application/json"];
    assert.equal(compile(media.schema)(media.example), undefined, name);
    const call = await gw.fetch(`/v1/models/${name}/execute`, {
      method: "POST",
      body: JSON.stringify(media.example),
    });
    const text = await call.text();
    assert.notEqual(call.status, 400, `${name}: ${text}`);
    assert.ok(call.status in op.responses, `${name}: ${call.status}`);
    if (!answering.includes(name)) continue;
    assert.equal(call.status, 200, `${name}: ${text}`);
    const schema = op.responses["200"].content["application/json"].schema;
    assert.equal(compile(schema)(JSON.parse(text)), undefined, name);
  }
  // The stream path too: items as the document says, then `end`.
  const stream = doc.paths["/v1/models/tokens/stream"].post;
  // ?early= is the stream's only (execute answers one JSON body anyway).
  const queries = (op: Json) =>
    op.parameters.map((p: Json) =>
      doc.components.parameters[p.$ref.split("/").at(-1)]
    )
      .filter((p: Json) => p.in === "query").map((p: Json) => p.name);
  assert.deepEqual(queries(stream), [
    "key",
    "timeout",
    "firstItemTimeout",
    "early",
  ]);
  assert.ok(
    !queries(doc.paths["/v1/models/tokens/execute"].post).includes("early"),
  );
  const sent = stream.requestBody.content["application/json"].example;
  const sse = await gw.fetch("/v1/models/tokens/stream", {
    method: "POST",
    body: JSON.stringify(sent),
  });
  assert.equal(sse.status, 200);
  assert.match(sse.headers.get("content-type") ?? "", /^text\/event-stream/);
  const events = await new SseReader(sse.body!).all();
  const declared = stream.responses["200"].content["text/event-stream"][
    "x-sse-events"
  ];
  assert.deepEqual(events.map((e) => e.event), ["item", "end"]);
  for (const e of events) {
    assert.equal(compile(declared[e.event])(e.data), undefined, e.event);
  }
});

Deno.test("GET /openapi.json follows models added, updated and removed by PUT and DELETE, and needs the token as GET /v1/models does", async () => {
  await using gw = await startGateway({ allowManage: true }, MODELS);
  const paths = async () =>
    Object.keys((await (await gw.fetch("/openapi.json")).json()).paths);
  assert.ok(!(await paths()).includes("/v1/models/extra/execute"));
  const put = await gw.fetch("/v1/models/extra", {
    method: "PUT",
    body: JSON.stringify({ file: "typed.py" }),
  });
  assert.equal(put.status, 201);
  await put.body?.cancel();
  assert.ok((await paths()).includes("/v1/models/extra/execute"));
  // An update (another file) changes its schema.
  const inputsOf = async () =>
    (await (await gw.fetch("/openapi.json")).json()).paths[
      "/v1/models/extra/execute"
    ].post.requestBody.content["application/json"].schema.properties;
  assert.ok("ttl" in await inputsOf());
  const update = await gw.fetch("/v1/models/extra", {
    method: "PUT",
    body: JSON.stringify({ file: "doubler.py" }),
  });
  assert.equal(update.status, 200);
  await update.body?.cancel();
  assert.deepEqual(await inputsOf(), { x: { type: "number" } });
  const del = await gw.fetch("/v1/models/extra", { method: "DELETE" });
  assert.equal(del.status, 200);
  await del.body?.cancel();
  assert.ok(!(await paths()).includes("/v1/models/extra/execute"));
  // Management needs a token (one was generated): so does the document,
  // which names the models and their schemas.
  for (const path of ["/openapi.json", "/v1/models"]) {
    const anon = await fetch(`${gw.url}${path}`);
    assert.equal(anon.status, 401, path);
    await anon.body?.cancel();
  }
  const doc: Json = await (await gw.fetch("/openapi.json")).json();
  assert.equal(await openApiErrors(doc), undefined);
  assert.ok(operations(doc).includes("PUT /v1/workers"));
  assert.deepEqual(doc.security, [{ bearer: [] }]);
});

Deno.test("GET /openapi.json names the server by an allowed Host only, never one reflected from any Host", async () => {
  const pool: GatewayPool = {
    execute: (_n, msg) => Promise.resolve(msg),
    addModel: () => Promise.resolve({}),
    updateModel: () => Promise.resolve({}),
    removeModel: () => Promise.resolve({}),
    status: () => ({
      workers: [{ id: "w1", pid: 1, state: "ready", restarts: 0, inFlight: 0 }],
      models: [{ name: "echo" }],
    }),
    eval: () => {
      throw new Error("not used");
    },
    atoms: { get: () => undefined },
    close: () => Promise.resolve(),
  };
  const server = async (
    allowedHosts: string[],
    host: string,
  ): Promise<string> => {
    const app = createGateway(pool, { port: () => 8000, allowedHosts });
    const res = await app.fetch(
      new Request("http://127.0.0.1:8000/openapi.json", { headers: { host } }),
    );
    assert.equal(res.status, 200);
    return (await res.json()).servers[0].url;
  };
  assert.equal(await server([], "localhost:8000"), "http://localhost:8000");
  assert.equal(
    await server(["API.example.com"], "API.example.com"),
    "http://api.example.com",
  );
  // Any Host passes the check: none is named.
  assert.equal(await server(["*"], "evil.example"), "/");
});

Deno.test("GET /openapi.json with a management token names it as the security of eval and management operations only", async () => {
  const pool: GatewayPool = {
    execute: (_n, msg) => Promise.resolve(msg),
    addModel: () => Promise.resolve({}),
    updateModel: () => Promise.resolve({}),
    removeModel: () => Promise.resolve({}),
    status: () => ({
      workers: [{ id: "w1", pid: 1, state: "ready", restarts: 0, inFlight: 0 }],
      models: [{ name: "echo" }],
    }),
    eval: () => {
      throw new Error("not used");
    },
    atoms: { get: () => undefined },
    close: () => Promise.resolve(),
  };
  const TOKEN = "inference-token-0123456";
  const MANAGE = "manage-token-0123456789";
  const app = createGateway(pool, {
    port: () => 8000,
    token: TOKEN,
    manageToken: MANAGE,
    allowEval: true,
    allowManage: true,
  });
  const res = await app.fetch(
    new Request("http://127.0.0.1:8000/openapi.json", {
      headers: { authorization: `Bearer ${TOKEN}` },
    }),
  );
  assert.equal(res.status, 200);
  const doc: Json = await res.json();
  assert.equal(await openApiErrors(doc), undefined);
  assert.deepEqual(doc.security, [{ bearer: [] }]);
  assert.equal(doc.components.securitySchemes.manageBearer.scheme, "bearer");
  const manageOnly: string[] = [];
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    for (const [method, op] of Object.entries<Json>(item)) {
      if (JSON.stringify(op.security) === '[{"manageBearer":[]}]') {
        manageOnly.push(`${method.toUpperCase()} ${path}`);
      }
    }
  }
  assert.deepEqual(manageOnly.sort(), [
    "DELETE /v1/models/{name}",
    "DELETE /v1/models/{name}/versions/{version}",
    "GET /v1/eval/{id}/events",
    "POST /v1/eval",
    "POST /v2/repository/index",
    "POST /v2/repository/models/{name}/load",
    "POST /v2/repository/models/{name}/unload",
    "PUT /v1/models/{name}",
    "PUT /v1/models/{name}/default",
    "PUT /v1/models/{name}/versions/{version}",
    "PUT /v1/workers",
  ]);
  // Without a management token, one token serves every route: no second scheme.
  const single = createGateway(pool, {
    port: () => 8000,
    token: TOKEN,
    allowManage: true,
  });
  const plain: Json = await (await single.fetch(
    new Request("http://127.0.0.1:8000/openapi.json", {
      headers: { authorization: `Bearer ${TOKEN}` },
    }),
  )).json();
  assert.equal(plain.components.securitySchemes.manageBearer, undefined);
  assert.equal(plain.paths["/v1/workers"].put.security, undefined);
});

Deno.test("openApiDocument lists every route the gateway registers, all enabled", async () => {
  // The routes as registered: app.get("/v1/models/:name", ...) in src/gateway/.
  const routes: string[] = [];
  const dir = new URL("../src/gateway/", import.meta.url);
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".ts")) continue;
    const text = await Deno.readTextFile(new URL(e.name, dir));
    for (
      const [, method, path] of text.matchAll(
        /\bapp\.(get|post|put|delete|patch|all)\(\s*"([^"]+)"/g,
      )
    ) {
      routes.push(
        `${method!.toUpperCase()} ${path!.replace(/:(\w+)/g, "{$1}")}`,
      );
    }
  }
  assert.ok(routes.length >= 15, routes.join(", "));
  // TensorFlow Serving's :predict: answered by the app's 404 handler, not a
  // route (_predict_routes.ts).
  routes.push(
    "POST /v1/models/{name}:predict",
    "POST /v1/models/{name}/versions/{version}:predict",
    // Triton's statistics of every model: GET /v2/models/{name}'s handler
    // answers it (the router takes no static route beside the parameter).
    "GET /v2/models/stats",
  );
  const doc: Json = openApiDocument({
    ...BASE,
    token: true,
    allowEval: true,
    allowManage: true,
    models: [{ name: "m" }],
  });
  // Execute and stream are listed per model.
  const ops = new Set(
    operations(doc).map((op) =>
      op.replace("/v1/models/m/", "/v1/models/{name}/")
    ),
  );
  for (const route of routes) assert.ok(ops.has(route), route);
  assert.equal(ops.size, new Set(routes).size, [...ops].join(", "));
});

Deno.test("openApiDocument: /v2 infer lists the statuses a call can answer and the binary tensor extension", async () => {
  const doc: Json = openApiDocument({ ...BASE, models: [{ name: "m" }] });
  assert.equal(await openApiErrors(doc), undefined);
  const compile = schemaCompiler(doc);
  for (const [where, schema] of everySchema(doc)) {
    assert.doesNotThrow(() => compile(schema), where);
  }
  for (
    const path of [
      "/v2/models/{name}/infer",
      "/v2/models/{name}/versions/{version}/infer",
    ]
  ) {
    const op = doc.paths[path].post;
    // What execute answers on /v1 for the same failures: a body that came
    // too slowly, a Content-Encoding the gateway cannot decode, a worker
    // that died, a model's HTTPError of any status.
    for (const status of ["408", "415", "502", "4XX", "5XX"]) {
      assert.ok(op.responses[status], `${path} ${status}`);
    }
    assert.match(op.responses["415"].description, /gzip/);
    // Triton's binary tensors: the header, and the bodies both ways.
    assert.ok(
      op.parameters.some((p: Json) =>
        p.name === "Inference-Header-Content-Length" && p.in === "header"
      ),
    );
    assert.ok(op.requestBody.content["application/octet-stream"]);
    const ok = op.responses["200"];
    assert.ok(ok.content["application/json"]);
    assert.ok(ok.content["application/octet-stream"]);
    assert.ok(ok.headers["Inference-Header-Content-Length"]);
    const input = op.requestBody.content["application/json"].schema
      .properties.inputs.items;
    assert.equal(input.properties.shape.maxItems, 64);
  }
});

Deno.test("openApiDocument: a body route's 415 and 413 say what compression answers", () => {
  const doc: Json = openApiDocument({ ...BASE, models: [{ name: "m" }] });
  const responses = doc.components.responses;
  // gzip and deflate bodies are decoded: a 415 is another coding (or, on
  // execute, a binary body for a model with declared inputs), a 413 may be
  // the decoded size.
  for (const name of ["Call415", "ChannelPublish415"]) {
    const r = responses[name] ??
      doc.paths["/v1/channels/{name}"].post.responses["415"];
    assert.match(r.description, /gzip, x-gzip and deflate/, name);
    assert.doesNotMatch(r.description, /not JSON and has a/, name);
  }
  assert.match(responses.Call415.description, /declares `inputs`/);
  assert.match(responses.Call413.description, /decoded/);
  assert.match(responses.Call400.description, /InvalidContentEncoding/);
});

Deno.test("openApiDocument: /v2 infer and :predict declare the Retry-After of their 429 and 503 and the WWW-Authenticate of their 401, as /v1 execute does", () => {
  const doc: Json = openApiDocument({
    ...BASE,
    token: true,
    models: [{ name: "m" }],
  });
  // Before, only the description said "(with `Retry-After`)": a generated
  // client (and its retry policy) saw no header on the routes that send it.
  for (
    const path of [
      "/v2/models/{name}/infer",
      "/v2/models/{name}/versions/{version}/infer",
      "/v1/models/{name}:predict",
      "/v1/models/{name}/versions/{version}:predict",
    ]
  ) {
    const responses = doc.paths[path].post.responses;
    for (const status of ["429", "503"]) {
      assert.deepEqual(
        responses[status].headers?.["Retry-After"]?.schema,
        { type: "integer" },
        `${path} ${status}`,
      );
    }
    assert.ok(responses["401"].headers?.["WWW-Authenticate"], `${path} 401`);
    // The protocol's error shape is kept.
    assert.deepEqual(
      responses["429"].content["application/json"].schema.properties.error,
      { type: "string" },
    );
  }
  // A /v2 route without its own 503: the drain's, with Retry-After too.
  const meta = doc.paths["/v2/models/{name}"].get.responses;
  assert.ok(meta["503"].headers?.["Retry-After"]);
});

Deno.test("Every field of a real /v1/status (and of its workers) is in its OpenAPI schema: the bounds in force (limits) too", async () => {
  await using gw = await startGateway({
    models: [{ name: "echo", file: "echo.py" }],
  });
  const status: Json = await (await gw.fetch("/v1/status")).json();
  const doc: Json = await (await gw.fetch("/openapi.json")).json();
  const schema = doc.paths["/v1/status"].get.responses["200"].content[
    "application/json"
  ].schema;
  assert.deepEqual(
    Object.keys(status).filter((key) => !(key in schema.properties)),
    [],
  );
  const worker = schema.properties.workers.items.properties;
  assert.deepEqual(
    Object.keys(status.workers[0]).filter((key) => !(key in worker)),
    [],
  );
  assert.deepEqual(
    Object.keys(status.limits).sort(),
    Object.keys(schema.properties.limits.properties).sort(),
  );
  assert.equal(schemaCompiler(doc)(schema)(status), undefined);
});

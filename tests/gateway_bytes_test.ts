/**
 * Binary bodies and `bytes` results through the gateway, with real workers
 * (docs/gateway.md, "Binary bodies").
 */
import assert from "node:assert/strict";
import {
  SseReader,
  startGateway,
  type TestGateway,
} from "./_gateway_harness.ts";

const BYTES_MODEL = await Deno.readTextFile(
  new URL("../python/tests/models/bytes_model.py", import.meta.url),
);

const MODELS = [
  { name: "echo", file: "echo.py" },
  { name: "bEcho", file: "bytes_model.py", class: "Echo" },
  { name: "bRaw", file: "bytes_model.py", class: "Raw" },
  { name: "png", file: "bytes_model.py", class: "Png" },
  { name: "bStream", file: "bytes_model.py", class: "Stream" },
  { name: "scorer", file: "scorer.py" },
];

const ALL = Uint8Array.from({ length: 256 }, (_, i) => i);

function start(limits: Record<string, number> = {}) {
  return startGateway(
    { models: MODELS, limits: { shutdownGrace: 2000, ...limits } },
    { "bytes_model.py": BYTES_MODEL },
  );
}

function postBytes(
  body: BodyInit | null,
  type: string | undefined,
): RequestInit {
  const headers: Record<string, string> = {};
  if (type !== undefined) headers["content-type"] = type;
  return { method: "POST", body, headers };
}

// Steps on one gateway started as `start()`: each of these tests started its
// own (a gateway and its Python worker) and needs no fresh one.
Deno.test("Gateway: bytes in and out, JSON as before, streams and the OpenAPI document, on one gateway", async (t) => {
  await using gw = await start();
  await t.step(
    "Gateway: a binary body reaches the model as bytes with its Content-Type (curl --data-binary @img.png -H 'Content-Type: image/png')",
    () => binaryBodyReachesModelAs(gw),
  );
  await t.step(
    "Gateway: a bytes result is the response body, as application/octet-stream or the model's media_type",
    () => bytesResultIsResponseBody(gw),
  );
  await t.step(
    "Gateway: JSON bodies are read as before (no Content-Type, application/json, text/plain, curl -d's form type)",
    () => jsonBodiesAreReadAs(gw),
  );
  await t.step(
    "Gateway: a stream takes a binary body and sends bytes items as base64 strings",
    () => streamTakesBinaryBodyAnd(gw),
  );
  await t.step(
    "Gateway: /openapi.json says execute takes any body as bytes, and a bytes result in the model's media_type",
    () => openapiJsonSaysExecuteTakes(gw),
  );
});

/** A step of "Gateway: bytes in and out, JSON as before, streams and the OpenAPI document, on one gateway": Gateway: a binary body reaches the model as bytes with its Content-Type (curl --data-binary @img.png -H 'Content-Type: image/png') */
async function binaryBodyReachesModelAs(gw: TestGateway): Promise<void> {
  for (
    const type of [
      "image/png",
      "application/octet-stream",
      "audio/wav",
      "image/png; charset=binary",
      "text/csv; charset=utf-8",
    ]
  ) {
    const res = await gw.fetch(
      "/v1/models/bEcho/execute?timeout=5000",
      postBytes(ALL, type),
    );
    assert.equal(res.status, 200, type);
    const got = await res.json();
    assert.equal(got.type, "bytes", type);
    assert.equal(got.contentType, type);
    // Nested in a JSON response: base64.
    assert.equal(got.msg, btoa(String.fromCharCode(...ALL)), type);
  }
  // The direct path (no query string) and an empty body.
  const res = await gw.fetch(
    "/v1/models/bEcho/execute",
    postBytes(new Uint8Array(0), "application/octet-stream"),
  );
  assert.deepEqual(await res.json(), {
    msg: "",
    type: "bytes",
    contentType: "application/octet-stream",
  });
}

/** A step of "Gateway: bytes in and out, JSON as before, streams and the OpenAPI document, on one gateway": Gateway: a bytes result is the response body, as application/octet-stream or the model's media_type */
async function bytesResultIsResponseBody(gw: TestGateway): Promise<void> {
  let res = await gw.fetch(
    "/v1/models/bRaw/execute",
    postBytes(ALL, "application/octet-stream"),
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/octet-stream");
  assert.deepEqual([...new Uint8Array(await res.arrayBuffer())], [...ALL]);
  // Served from the dashboard's origin: never sniffed, and a text/html or
  // SVG body would run sandboxed, in an origin of its own.
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
  assert.equal(res.headers.get("content-security-policy"), "sandbox");
  res = await gw.fetch("/v1/models/png/execute", postBytes(ALL, "image/png"));
  assert.equal(res.headers.get("content-type"), "image/png");
  assert.equal(res.headers.get("x-content-type-options"), "nosniff");
  assert.equal(res.headers.get("content-security-policy"), "sandbox");
  const png = new Uint8Array(await res.arrayBuffer());
  assert.deepEqual([...png.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
  assert.deepEqual([...png.subarray(8)], [...ALL]);
  // An empty bytes result is an empty body, not a 204.
  res = await gw.fetch(
    "/v1/models/bRaw/execute",
    postBytes(new Uint8Array(0), "application/octet-stream"),
  );
  assert.equal(res.status, 200);
  assert.equal((await res.arrayBuffer()).byteLength, 0);
}

/** A step of "Gateway: bytes in and out, JSON as before, streams and the OpenAPI document, on one gateway": Gateway: JSON bodies are read as before (no Content-Type, application/json, text/plain, curl -d's form type) */
async function jsonBodiesAreReadAs(gw: TestGateway): Promise<void> {
  for (
    const type of [
      undefined,
      "application/json",
      "application/problem+json",
      "text/plain",
      "application/x-www-form-urlencoded",
    ]
  ) {
    const res = await gw.fetch(
      "/v1/models/bEcho/execute",
      postBytes('{"x":1}', type),
    );
    assert.equal(res.status, 200, String(type));
    assert.deepEqual(await res.json(), {
      msg: { x: 1 },
      type: "dict",
      contentType: null,
    }, String(type));
  }
  // Not JSON, with a JSON type: still the 400 it was.
  const res = await gw.fetch(
    "/v1/models/echo/execute",
    postBytes("\x89PNG", "application/json"),
  );
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.type, "InvalidJson");
}

Deno.test("Gateway: binary bodies over the limit get 413, a model with declared inputs 415, a bad Content-Type 400", async () => {
  await using gw = await start({ bodyLimit: 1000 });
  // Declared length, then chunked (no length).
  let res = await gw.fetch(
    "/v1/models/bRaw/execute",
    postBytes(new Uint8Array(1001), "image/png"),
  );
  assert.equal(res.status, 413);
  assert.equal((await res.json()).error.type, "PayloadTooLarge");
  const chunks = ReadableStream.from([
    new Uint8Array(600),
    new Uint8Array(600),
  ]);
  res = await gw.fetch("/v1/models/bRaw/execute", {
    ...postBytes(chunks, "image/png"),
    duplex: "half",
  } as RequestInit);
  assert.equal(res.status, 413);
  await res.body?.cancel();
  res = await gw.fetch(
    "/v1/models/bRaw/execute",
    postBytes(new Uint8Array(1000), "image/png"),
  );
  assert.equal(res.status, 200);
  assert.equal((await res.arrayBuffer()).byteLength, 1000);
  // scorer declares inputs: JSON only.
  res = await gw.fetch(
    "/v1/models/scorer/execute",
    postBytes(ALL, "image/png"),
  );
  assert.equal(res.status, 415);
  const error = (await res.json()).error;
  assert.equal(error.type, "UnsupportedMediaType");
  assert.match(error.message, /declares JSON inputs/);
  res = await gw.fetch(
    "/v1/models/bRaw/execute",
    postBytes(ALL, `image/png; x=${"a".repeat(300)}`),
  );
  assert.equal(res.status, 400);
  assert.match(
    (await res.json()).error.message,
    /Content-Type of a binary body/,
  );
});

/** A step of "Gateway: bytes in and out, JSON as before, streams and the OpenAPI document, on one gateway": Gateway: a stream takes a binary body and sends bytes items as base64 strings */
async function streamTakesBinaryBodyAnd(gw: TestGateway): Promise<void> {
  const res = await gw.fetch(
    "/v1/models/bStream/stream",
    postBytes('{"n":2}', "application/json"),
  );
  assert.equal(res.status, 200);
  const sse = new SseReader(res.body!);
  const items = [];
  for (let m = await sse.next(); m !== undefined; m = await sse.next()) {
    if (m.event === "item") items.push(m.data);
  }
  assert.deepEqual(items, ["AAAA", "AQEB"]);
  // A binary body to a stream: bytes for the model too.
  const bin = await gw.fetch(
    "/v1/models/bEcho/stream",
    postBytes(ALL.subarray(0, 3), "application/octet-stream"),
  );
  const reader = new SseReader(bin.body!);
  const first = await reader.next();
  assert.deepEqual(first?.data, {
    msg: "AAEC",
    type: "bytes",
    contentType: "application/octet-stream",
  });
  for (let m = await reader.next(); m !== undefined; m = await reader.next());
}

/** A step of "Gateway: bytes in and out, JSON as before, streams and the OpenAPI document, on one gateway": Gateway: /openapi.json says execute takes any body as bytes, and a bytes result in the model's media_type */
async function openapiJsonSaysExecuteTakes(gw: TestGateway): Promise<void> {
  const doc = await (await gw.fetch("/openapi.json")).json();
  const png = doc.paths["/v1/models/png/execute"].post;
  assert.deepEqual(png.requestBody.content["*/*"].schema, {
    type: "string",
    contentMediaType: "application/octet-stream",
  });
  assert.deepEqual(png.responses["200"].content["image/png"].schema, {
    type: "string",
    contentMediaType: "image/png",
  });
  const raw = doc.paths["/v1/models/bRaw/execute"].post;
  assert.ok(raw.responses["200"].content["application/octet-stream"]);
  // A model with declared inputs takes JSON only.
  const scorer = doc.paths["/v1/models/scorer/execute"].post;
  assert.deepEqual(Object.keys(scorer.requestBody.content), [
    "application/json",
  ]);
}

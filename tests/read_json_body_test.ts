import assert from "node:assert/strict";
import { HTTPException } from "hono/http-exception";
import { readJsonBody } from "../src/gateway/read_json_body.ts";

const URL_ = "http://127.0.0.1:8000/v1/models/echo/execute";

/** A POST whose Content-Length is declared, as an HTTP server's requests are. */
function declared(
  body: string,
  length = new TextEncoder().encode(body).length,
) {
  return new Request(URL_, {
    method: "POST",
    body,
    headers: { "content-length": String(length) },
  });
}

/** A POST whose body streams in pieces with no Content-Length (chunked). */
function streamed(...pieces: string[]): Request {
  const enc = new TextEncoder();
  return new Request(URL_, {
    method: "POST",
    body: new ReadableStream<Uint8Array>({
      start(c) {
        for (const p of pieces) c.enqueue(enc.encode(p));
        c.close();
      },
    }),
  });
}

async function refusal(
  p: Promise<unknown>,
): Promise<{ status: number; type: string; message: string }> {
  const err = await p.then(
    () => assert.fail("expected a refusal"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof HTTPException);
  const res = err.getResponse();
  const { error } = await res.json();
  return { status: res.status, type: error.type, message: error.message };
}

Deno.test("readJsonBody parses a body with a declared length", async () => {
  assert.deepEqual(await readJsonBody(declared('{"a":[1,"é"]}'), 100), {
    a: [1, "é"],
  });
});

Deno.test("readJsonBody refuses a declared length over the limit without reading the body", async () => {
  const req = declared(`{"a":"${"x".repeat(200)}"}`);
  const got = await refusal(readJsonBody(req, 100));
  assert.equal(got.status, 413);
  assert.equal(got.type, "PayloadTooLarge");
  assert.match(got.message, /body of 208 bytes is over the limit of 100/);
  assert.equal(req.bodyUsed, false);
});

Deno.test("readJsonBody gives undefined for an empty body, declared or not", async () => {
  assert.equal(await readJsonBody(declared(""), 100), undefined);
  assert.equal(await readJsonBody(streamed(), 100), undefined);
  assert.equal(
    await readJsonBody(new Request(URL_, { method: "POST" }), 100),
    undefined,
  );
});

Deno.test("readJsonBody gives 400 InvalidJson for a body that is not JSON, whitespace included", async () => {
  for (
    const req of [
      declared("{nope"),
      declared("   "),
      streamed("{no", "pe"),
      streamed("  ", " "),
    ]
  ) {
    const got = await refusal(readJsonBody(req, 100));
    assert.equal(got.status, 400);
    assert.equal(got.type, "InvalidJson");
    assert.match(got.message, /^Cannot parse request body as JSON: /);
  }
});

Deno.test("readJsonBody counts a streamed body and refuses it past the limit", async () => {
  assert.deepEqual(await readJsonBody(streamed('{"a":', "1}"), 100), {
    a: 1,
  });
  const got = await refusal(
    readJsonBody(streamed('{"a":"', "x".repeat(200), '"}'), 100),
  );
  assert.equal(got.status, 413);
  assert.match(got.message, /the body is over the limit of 100 bytes/);
});

import assert from "node:assert/strict";
import zlib from "node:zlib";
import { HTTPException } from "hono/http-exception";
import {
  BodyReadGuard,
  readBinaryBody,
  readJsonBody,
} from "../src/gateway/read_json_body.ts";
import { ByteCollector } from "../src/gateway/_byte_collector.ts";

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

Deno.test("readJsonBody says JSON only, and how to send text or an image, for a body that does not start like JSON", async () => {
  const typed = (body: BodyInit, type: string) =>
    new Request(URL_, {
      method: "POST",
      body,
      headers: { "content-type": type },
    });
  const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  for (
    const [req, given] of [
      [typed("great movie", "text/plain;charset=UTF-8"), ", not text/plain"],
      [typed(png, "image/png"), ", not image/png"],
      [
        typed("a=1&b=2", "application/x-www-form-urlencoded"),
        ", not application/x-www-form-urlencoded",
      ],
      [typed("great", "application/json"), ""],
      [streamed("  great"), ""],
      // A long header is not echoed whole.
      [
        typed("great", `text/${"x".repeat(5000)}`),
        `, not text/${"x".repeat(59)}...`,
      ],
    ] as const
  ) {
    const got = await refusal(readJsonBody(req, 100));
    assert.equal(got.status, 400, given);
    assert.equal(got.type, "InvalidJson", given);
    assert.ok(
      got.message.endsWith(
        ` (the gateway reads JSON bodies only${given}: send text as a JSON string, or in an object such as {"text": "..."}; a model's execute and stream routes pass a body of another Content-Type (application/octet-stream, image/png...) to the model as bytes)`,
      ),
      got.message,
    );
  }
  // A body that starts like JSON has a slip in it: the parser's message is
  // the help there. Nor does a blank body get the note.
  for (const body of ["{nope", '["a",]', "tru", "   ", "\n"]) {
    const got = await refusal(
      readJsonBody(typed(body, "text/plain;charset=UTF-8"), 100),
    );
    assert.equal(got.type, "InvalidJson", body);
    assert.doesNotMatch(got.message, /JSON bodies only/, body);
  }
});

Deno.test("readJsonBody refuses a body after a byte order mark alike, declared or streamed", async () => {
  for (
    const req of [declared('\uFEFF{"a":1}'), streamed("\uFEFF", '{"a":1}')]
  ) {
    const got = await refusal(readJsonBody(req, 100));
    assert.equal(got.status, 400);
    assert.equal(got.type, "InvalidJson");
    assert.match(got.message, /starts with a UTF-8 byte order mark/);
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

Deno.test("readJsonBody decodes a gzip body; 400 for a corrupt one, for a plain body labelled gzip and for bad JSON; 415 for an unknown coding", async () => {
  const json = '{"a":1}';
  const gzipped = new Uint8Array(
    await new Response(
      new Blob([json]).stream().pipeThrough(new CompressionStream("gzip")),
    ).arrayBuffer(),
  );
  const req = (body: BodyInit, encoding: string) =>
    new Request(URL_, {
      method: "POST",
      body,
      headers: { "content-encoding": encoding },
    });
  assert.deepEqual(await readJsonBody(req(gzipped, "gzip"), 100), { a: 1 });
  // A gzip header and nothing more: cut short.
  let got = await refusal(readJsonBody(req(gzipped.slice(0, 10), "gzip"), 100));
  assert.equal(got.status, 400);
  assert.equal(got.type, "InvalidContentEncoding");
  // The header is believed: a plain body labelled gzip is not gzip.
  got = await refusal(readJsonBody(req(json, "gzip"), 100));
  assert.equal(got.type, "InvalidContentEncoding");
  got = await refusal(readJsonBody(req(json, "compress"), 100));
  assert.equal(got.status, 415);
  assert.equal(got.type, "UnsupportedMediaType");
  assert.match(
    got.message,
    /Content-Encoding "compress" is not supported \(supported: gzip, x-gzip, deflate;/,
  );
  const identity = new Request(URL_, {
    method: "POST",
    body: "{nope",
    headers: { "content-length": "5", "content-encoding": "identity" },
  });
  assert.equal((await refusal(readJsonBody(identity, 100))).status, 400);
  // Gzip sent without the header: the parser's message says what it looks like.
  got = await refusal(
    readJsonBody(new Request(URL_, { method: "POST", body: gzipped }), 100),
  );
  assert.equal(got.type, "InvalidJson");
  assert.match(
    got.message,
    /looks gzip-compressed: send it with Content-Encoding: gzip/,
  );
});

/** A POST whose body sends `first` and then stalls; `cancelled` resolves when it is cancelled. */
function stalled(first: string, length?: number) {
  let cancelled!: () => void;
  const wasCancelled = new Promise<void>((r) => cancelled = r);
  const request = new Request(URL_, {
    method: "POST",
    body: new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode(first));
      },
      cancel() {
        cancelled();
      },
    }),
    headers: length === undefined ? {} : { "content-length": String(length) },
  });
  return { request, wasCancelled };
}

Deno.test("BodyReadGuard gives 408 to a body that stalls past its timeout and cancels the stream it owns", async () => {
  const guard = new BodyReadGuard({ timeoutMs: 50 });
  const fast = readJsonBody(declared('{"a":1}'), 100, guard);
  const chunked = stalled('{"a":');
  const sized = stalled('{"a":', 100);
  const t0 = performance.now();
  const got = await Promise.all([
    refusal(readJsonBody(chunked.request, 1000, guard)),
    refusal(readJsonBody(sized.request, 1000, guard)),
  ]);
  assert.ok(performance.now() - t0 >= 45);
  for (const g of got) {
    assert.deepEqual(g, {
      status: 408,
      type: "RequestTimeout",
      message: "Cannot read request: the body did not arrive within 50 ms",
    });
  }
  await chunked.wasCancelled;
  assert.deepEqual(await fast, { a: 1 });
  assert.equal(guard.size, 0);
  // Reads after an expiry are timed from their own start.
  assert.deepEqual(await readJsonBody(streamed('{"b":', "2}"), 100, guard), {
    b: 2,
  });
});

Deno.test("BodyReadGuard fails the reads still going with 503 when its signal aborts, and later reads at once", async () => {
  const drain = new AbortController();
  const guard = new BodyReadGuard({ timeoutMs: 60_000, signal: drain.signal });
  const chunked = stalled('{"a":');
  const pending = refusal(readJsonBody(chunked.request, 1000, guard));
  assert.equal(guard.size, 1);
  drain.abort();
  const shuttingDown = {
    status: 503,
    type: "ShuttingDownError",
    message: "Cannot serve request: the server is shutting down",
  };
  assert.deepEqual(await pending, shuttingDown);
  await chunked.wasCancelled;
  assert.equal(guard.size, 0);
  const late = stalled('{"a":');
  assert.deepEqual(
    await refusal(readJsonBody(late.request, 1000, guard)),
    shuttingDown,
  );
  await late.wasCancelled;
});

Deno.test("BodyReadGuard keeps start order across many reads (its ring grows)", async () => {
  const guard = new BodyReadGuard({ timeoutMs: 60_000 });
  const bodies = Array.from({ length: 200 }, (_, i) => streamed(`{"i":${i}}`));
  const read = await Promise.all(
    bodies.map((req) => readJsonBody(req, 100, guard)),
  );
  assert.deepEqual(read, bodies.map((_, i) => ({ i })));
  assert.equal(guard.size, 0);
});

Deno.test("readJsonBody refuses an integer of more than maxIntegerDigits digits with 400 InvalidRequestError", async () => {
  for (const digits of [4301, 1_000_000]) {
    const text = `{"ok":12345678901234567890,"x":[-9${
      "1".repeat(digits - 1)
    }]}`;
    for (const req of [declared(text), streamed(text)]) {
      const refused = await refusal(
        readJsonBody(req, 2 << 20, undefined, undefined, 4300),
      );
      assert.deepEqual(refused, {
        status: 400,
        type: "InvalidRequestError",
        message:
          `Cannot read request: an integer of ${digits} digits is over the limit of 4300 (the gateway's limits.maxIntegerDigits, serve --max-integer-digits)`,
      });
    }
  }
  // 4300 digits pass, exactly; a float is no integer, whatever its length.
  const fits = `[${"7".repeat(4300)},${"7".repeat(5000)}.5]`;
  const body = await readJsonBody(
    declared(fits),
    1 << 20,
    undefined,
    undefined,
    4300,
  ) as unknown[];
  assert.equal(body[0], BigInt("7".repeat(4300)));
  assert.equal(body[1], Infinity);
  // A bare integer is kept exact too (the scan looks at the start of the text).
  const bare = await readJsonBody(declared(" -12345678901234567890"), 1024);
  assert.equal(bare, -12345678901234567890n);
});

Deno.test("readJsonBody refuses a body nested deeper than maxJsonDepth with 400 InvalidRequestError naming the depth, the limit and the setting", async () => {
  // With an integer beyond ±2^53 the parse revives it, and the reviver
  // recursed: "Maximum call stack size exceeded" (400 InvalidJson) from a
  // few thousand levels. Without one: a parse and a walk of 200k levels.
  for (const leaf of ["9223372036854775807", "1"]) {
    for (const depth of [801, 5000, 200_000]) {
      const text = "[".repeat(depth) + leaf + "]".repeat(depth);
      for (const req of [declared(text), streamed(text)]) {
        const refused = await refusal(
          readJsonBody(req, 1 << 20, undefined, undefined, 4300, 800),
        );
        assert.deepEqual(refused, {
          status: 400,
          type: "InvalidRequestError",
          message:
            `Cannot read request: the body is nested ${depth} levels deep, over the limit of 800 (the gateway's limits.maxJsonDepth, serve --max-json-depth)`,
        });
      }
    }
  }
  // At the limit it is read, big integer exact; objects count as arrays do.
  const fits = '{"a":'.repeat(799) + "[9223372036854775807]" +
    "}".repeat(799);
  let value = await readJsonBody(
    declared(fits),
    1 << 20,
    undefined,
    undefined,
    4300,
    800,
  );
  for (let i = 0; i < 799; i++) value = (value as { a: unknown }).a;
  assert.deepEqual(value, [9223372036854775807n]);
});

Deno.test("readJsonBody does not count brackets inside strings toward maxJsonDepth", async () => {
  const text = JSON.stringify({
    s: "[".repeat(5000),
    t: '\\"' + "{".repeat(5000),
    u: ["]\\\\", "[[[\\"],
  });
  assert.deepEqual(
    await readJsonBody(declared(text), 1 << 20, undefined, undefined, 4300, 2),
    JSON.parse(text),
  );
});

Deno.test("readJsonBody stops a gzip bomb sent in one chunk at the limit without inflating the chunk whole", async () => {
  // ~1 MB of independent deflate blocks, each 1 MiB of zeros: ~1 GiB decoded.
  const block = zlib.deflateRawSync(new Uint8Array(1 << 20), {
    finishFlush: zlib.constants.Z_FULL_FLUSH,
  });
  const parts: Uint8Array[] = [
    new Uint8Array([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]),
  ];
  for (let i = 0; i < 1000; i++) parts.push(block);
  const bomb = new Uint8Array(
    await new Blob(parts as BlobPart[]).arrayBuffer(),
  );
  const peak = () =>
    Number(
      /VmHWM:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1],
    ) * 1024;
  const before = peak();
  const got = await refusal(
    readJsonBody(
      new Request(URL_, {
        method: "POST",
        body: bomb,
        headers: { "content-encoding": "gzip" },
      }),
      1 << 20,
    ),
  );
  assert.equal(got.status, 413);
  assert.match(got.message, /the body, decoded, is over the limit/);
  // Deno's decompressor inflates a whole write at once: written whole, the
  // megabyte came out as one 1 GiB chunk before the limit could see it.
  const grown = peak() - before;
  assert.ok(grown < 128 << 20, `peak RSS grew ${grown >> 20} MiB`);
});

/**
 * A body of `count` 1-byte chunks, each a view of a 64 KiB buffer of its
 * own (as Deno's server gives them), each buffer taken back (detached)
 * once the reader asked for the second chunk after it: a reader that kept
 * the chunks would hold `count` × 64 KiB, and here finds them emptied.
 */
function oneByteChunks(count: number): ReadableStream<Uint8Array> {
  const sent: Uint8Array<ArrayBuffer>[] = [];
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent.length >= 2) sent[sent.length - 2]!.buffer.transfer();
      if (sent.length === count) return controller.close();
      const chunk = new Uint8Array(64 * 1024).subarray(0, 1);
      chunk[0] = 49 + (sent.length % 9);
      sent.push(chunk);
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
}

Deno.test("readBinaryBody and readJsonBody copy a streamed body's chunks as they come, not keeping them (Deno's are views of 64 KiB buffers)", async () => {
  const expected = Array.from({ length: 1000 }, (_, i) => 49 + (i % 9));
  const bytes = await readBinaryBody(
    new Request("http://localhost/", {
      method: "POST",
      body: oneByteChunks(1000),
    }),
    1024,
  );
  assert.deepEqual([...bytes], expected);
  // A JSON body sent chunked (no Content-Length) takes the same path.
  const value = await readJsonBody(
    new Request("http://localhost/", {
      method: "POST",
      body: oneByteChunks(15),
    }),
    1024,
  );
  assert.equal(value, 123456789123456);
});

Deno.test("ByteCollector joins its chunks, keeps a lone one as it is, and refuses more than its capacity", () => {
  const empty = new ByteCollector(8);
  assert.equal(empty.bytes().byteLength, 0);
  const lone = new ByteCollector(8);
  const chunk = new Uint8Array([1, 2]);
  lone.push(chunk);
  assert.equal(lone.bytes(), chunk);
  const joined = new ByteCollector(8);
  for (const c of [[1], [], [2, 3], [4, 5, 6, 7, 8]]) {
    joined.push(new Uint8Array(c));
  }
  assert.deepEqual([...joined.bytes()], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(joined.size, 8);
  assert.throws(() => joined.push(new Uint8Array([9])), RangeError);
  // A declared length sizes the buffer: the body is copied once.
  const declared = new ByteCollector(1024, 10);
  declared.push(new Uint8Array(4));
  declared.push(new Uint8Array(6));
  assert.equal(declared.bytes().buffer.byteLength, 10);
});

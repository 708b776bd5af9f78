/**
 * Compressed request bodies and compressed large responses through the
 * gateway, with real workers (docs/gateway.md, "Compression").
 */
import assert from "node:assert/strict";
import zlib from "node:zlib";
import {
  partialRequest,
  SseReader,
  startGateway,
  type TestGateway,
} from "./_gateway_harness.ts";
import type { GatewayConfig } from "../src/gateway/config_schema.ts";

const BYTES_MODEL = await Deno.readTextFile(
  new URL("../python/tests/models/bytes_model.py", import.meta.url),
);

// `big` answers `{"text": "a" * n}` for `{"n": n}`: a result of any size;
// `csv` its bytes body back, as text/csv.
const BIG_MODEL = `
class Big:
    def execute(self, msg):
        return {"text": "a" * msg["n"]}

class Chunks:
    def execute(self, msg):
        for _ in range(2):
            yield "a" * msg["n"]

class Texts:
    def execute(self, msg):
        n = msg["n"][0] if isinstance(msg["n"], list) else msg["n"]
        return {"text": ["a" * n]}

class Status:
    def execute(self, msg):
        from pyproxy import host
        host.set_status(msg["status"])
        host.set_header("Vary", "Accept-Language")
        return {"text": "a" * 5000}

class Tagged:
    def execute(self, msg):
        from pyproxy import host
        host.set_header("ETag", msg["etag"])
        return {"text": "a" * 5000}

class Private:
    media_type = "text/plain"

    def execute(self, msg):
        from pyproxy import host
        host.set_header("Cache-Control", msg["cache"])
        return b"a" * 5000 if msg.get("bytes") else {"text": "a" * 5000}

class Csv:
    media_type = "text/csv"

    def execute(self, msg):
        return msg
`;

const MODELS = [
  { name: "echo", file: "echo.py" },
  { name: "big", file: "big.py", class: "Big" },
  { name: "csv", file: "big.py", class: "Csv" },
  { name: "chunks", file: "big.py", class: "Chunks" },
  { name: "texts", file: "big.py", class: "Texts" },
  { name: "status", file: "big.py", class: "Status" },
  { name: "tagged", file: "big.py", class: "Tagged" },
  { name: "private", file: "big.py", class: "Private" },
  { name: "bEcho", file: "bytes_model.py", class: "Echo" },
  { name: "bRaw", file: "bytes_model.py", class: "Raw" },
  { name: "png", file: "bytes_model.py", class: "Png" },
];

function start(overrides: GatewayConfig = {}) {
  return startGateway(
    {
      models: MODELS,
      ...overrides,
      limits: { shutdownGrace: 2000, ...overrides.limits },
    },
    { "bytes_model.py": BYTES_MODEL, "big.py": BIG_MODEL },
  );
}

async function compress(
  data: string | Uint8Array,
  format: string,
): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream()
    .pipeThrough(new CompressionStream(format as CompressionFormat));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function decompress(data: Uint8Array, format = "gzip"): Promise<string> {
  const stream = new Blob([data as BlobPart]).stream()
    .pipeThrough(new DecompressionStream(format as CompressionFormat));
  return await new Response(stream).text();
}

function post(
  body: BodyInit | Uint8Array,
  headers: Record<string, string>,
): RequestInit {
  return { method: "POST", body: body as BodyInit, headers };
}

/** A body of one chunk, sent chunked (no Content-Length). */
function chunked(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
}

/**
 * A gzip stream of `count` blocks, each 1 MiB of zeros in ~1 KB
 * (byte-aligned, independent deflate blocks: a full flush), so 10,000 of
 * them (~10 MB) decode to ~10 GB. Its trailer is wrong: nothing must read
 * that far.
 */
function gzipBomb(count: number): Uint8Array {
  const block = zlib.deflateRawSync(new Uint8Array(1 << 20), {
    finishFlush: zlib.constants.Z_FULL_FLUSH,
  });
  const header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
  // A last, empty stored block, then CRC-32 and size (zeros: never checked).
  const tail = [1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
  const out = new Uint8Array(
    header.length + block.byteLength * count + tail.length,
  );
  out.set(header, 0);
  for (let i = 0; i < count; i++) {
    out.set(block, header.length + i * block.byteLength);
  }
  out.set(tail, out.length - tail.length);
  return out;
}

/** A response read off a raw connection: the body as sent, not decompressed (fetch() decompresses). */
interface RawReply {
  status: number;
  headers: Headers;
  body: Uint8Array;
}

/** POST over a raw HTTP/1.1 connection (`Connection: close`), the body de-chunked but not decoded. */
async function rawPost(
  port: number,
  path: string,
  body: string,
  headers: Record<string, string>,
  token?: string,
): Promise<RawReply> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const enc = new TextEncoder();
    const bytes = enc.encode(body);
    const head = [
      `POST ${path} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      `Content-Length: ${bytes.byteLength}`,
      "Connection: close",
      ...(token === undefined ? [] : [`Authorization: Bearer ${token}`]),
      ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ].join("\r\n");
    await conn.write(enc.encode(`${head}\r\n\r\n`));
    await conn.write(bytes);
    const all = new Uint8Array(await new Response(conn.readable).arrayBuffer());
    let end = 0;
    while (
      !(all[end] === 13 && all[end + 1] === 10 && all[end + 2] === 13 &&
        all[end + 3] === 10)
    ) end++;
    const lines = new TextDecoder().decode(all.subarray(0, end)).split("\r\n");
    const replyHeaders = new Headers();
    for (const line of lines.slice(1)) {
      const i = line.indexOf(":");
      replyHeaders.append(line.slice(0, i), line.slice(i + 1).trim());
    }
    let rest = all.subarray(end + 4);
    if (replyHeaders.get("transfer-encoding") === "chunked") {
      const parts: number[] = [];
      for (;;) {
        const crlf = rest.indexOf(13);
        const size = parseInt(
          new TextDecoder().decode(rest.subarray(0, crlf)),
          16,
        );
        if (size === 0) break;
        parts.push(...rest.subarray(crlf + 2, crlf + 2 + size));
        rest = rest.subarray(crlf + 2 + size + 2);
      }
      rest = Uint8Array.from(parts);
    }
    return {
      status: Number(lines[0]!.split(" ")[1]),
      headers: replyHeaders,
      body: rest,
    };
  } finally {
    try {
      conn.close();
    } catch {
      // closed by the server already
    }
  }
}

const MSG_TEXT =
  '{"text":"compressed","values":[1,2,3],"big":1152921504606846977}';

// Steps on one gateway started as `start()`: each of these tests started its
// own (a gateway and its Python worker) and needs no fresh one.
Deno.test("Gateway: compressed request bodies, decoded or refused", async (t) => {
  await using gw = await start();
  await t.step(
    "Gateway: a gzip or deflate JSON body is decoded before it is parsed (execute, direct and routed)",
    () => gzipOrDeflateJsonBody(gw),
  );
  await t.step(
    "Gateway: a gzip binary body reaches the model decoded, with its Content-Type",
    () => gzipBinaryBodyReachesModel(gw),
  );
  await t.step(
    "Gateway: a corrupt, truncated or trailed compressed body is a 400 InvalidContentEncoding",
    () => corruptTruncatedOrTrailedCompressed(gw),
  );
  await t.step(
    "Gateway: an unknown or too deep Content-Encoding is a 415 listing the supported ones, before the body is read",
    () => unknownOrTooDeepContent(gw),
  );
});

/** A step of "Gateway: compressed request bodies, decoded or refused": Gateway: a gzip or deflate JSON body is decoded before it is parsed (execute, direct and routed) */
async function gzipOrDeflateJsonBody(gw: TestGateway): Promise<void> {
  const cases: Array<[string, Uint8Array]> = [
    ["gzip", await compress(MSG_TEXT, "gzip")],
    ["x-gzip", await compress(MSG_TEXT, "gzip")],
    ["GZip", await compress(MSG_TEXT, "gzip")],
    ["deflate", await compress(MSG_TEXT, "deflate")],
    ["identity, gzip", await compress(MSG_TEXT, "gzip")],
    // Stacked: applied in the order listed, undone in reverse.
    [
      "deflate, gzip",
      await compress(await compress(MSG_TEXT, "deflate"), "gzip"),
    ],
  ];
  for (const [encoding, body] of cases) {
    for (
      const path of [
        "/v1/models/echo/execute",
        "/v1/models/echo/execute?timeout=5000",
      ]
    ) {
      const res = await gw.fetch(
        path,
        post(body, { "content-encoding": encoding }),
      );
      assert.equal(res.status, 200, `${encoding} ${path}`);
      // The integer beyond 2^53 went through exactly.
      assert.equal(await res.text(), MSG_TEXT, encoding);
    }
  }
  // Chunked (no Content-Length), and an empty body (the model gets {}).
  let res = await gw.fetch(
    "/v1/models/echo/execute",
    post(chunked(await compress(MSG_TEXT, "gzip")), {
      "content-encoding": "gzip",
    }),
  );
  assert.equal(await res.text(), MSG_TEXT);
  res = await gw.fetch(
    "/v1/models/echo/execute",
    post(await compress("", "gzip"), { "content-encoding": "gzip" }),
  );
  // The echo answers an empty body ({}) with 204, as an uncompressed one.
  assert.equal(res.status, 204);
  // Channels' publish reads bodies the same way.
  res = await gw.fetch(
    "/v1/channels/news",
    post(await compress('{"a":1}', "gzip"), { "content-encoding": "gzip" }),
  );
  assert.equal(res.status, 200, await res.clone().text());
  await res.body?.cancel();
}

/** A step of "Gateway: compressed request bodies, decoded or refused": Gateway: a gzip binary body reaches the model decoded, with its Content-Type */
async function gzipBinaryBodyReachesModel(gw: TestGateway): Promise<void> {
  const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7) % 256);
  const res = await gw.fetch(
    "/v1/models/bEcho/execute",
    post(await compress(data, "gzip"), {
      "content-type": "application/octet-stream",
      "content-encoding": "gzip",
    }),
  );
  assert.equal(res.status, 200);
  const got = await res.json();
  assert.equal(got.type, "bytes");
  assert.equal(got.contentType, "application/octet-stream");
  assert.equal(got.msg, btoa(String.fromCharCode(...data)));
}

Deno.test("Gateway: a gzip bomb (10 MB decoding to 10 GB) stops at limits.bodyLimit with 413 'decoded', declared or chunked", async () => {
  await using gw = await start({ limits: { bodyLimit: 16 * 1024 * 1024 } });
  const bomb = gzipBomb(10_000);
  assert.ok(bomb.byteLength > 10_000_000 && bomb.byteLength < 16 << 20);
  for (const body of [bomb, chunked(bomb)]) {
    const res = await gw.fetch(
      "/v1/models/echo/execute",
      post(body, { "content-encoding": "gzip" }),
    );
    assert.equal(res.status, 413);
    const { error } = await res.json();
    assert.equal(error.type, "PayloadTooLarge");
    assert.equal(error.decoded, true);
    assert.match(
      error.message,
      /the body, decoded, is over the limit of 16777216 bytes/,
    );
  }
  // The same bomb for a binary body.
  const res = await gw.fetch(
    "/v1/models/bEcho/execute",
    post(bomb, {
      "content-encoding": "gzip",
      "content-type": "application/octet-stream",
    }),
  );
  assert.equal(res.status, 413);
  assert.equal((await res.json()).error.decoded, true);
});

Deno.test("Gateway: the encoded body is held to limits.bodyLimit too (declared and chunked)", async () => {
  await using gw = await start({ limits: { bodyLimit: 1000 } });
  // Random bytes do not compress: ~2000 bytes encoded.
  const noise = crypto.getRandomValues(new Uint8Array(2000));
  const body = await compress(noise, "gzip");
  for (const sent of [body, chunked(body)]) {
    const res = await gw.fetch(
      "/v1/models/bEcho/execute",
      post(sent, {
        "content-encoding": "gzip",
        "content-type": "application/octet-stream",
      }),
    );
    assert.equal(res.status, 413);
    const { error } = await res.json();
    assert.equal(error.decoded, undefined);
    assert.match(error.message, /encoded body/);
  }
});

/** A step of "Gateway: compressed request bodies, decoded or refused": Gateway: a corrupt, truncated or trailed compressed body is a 400 InvalidContentEncoding */
async function corruptTruncatedOrTrailedCompressed(
  gw: TestGateway,
): Promise<void> {
  const good = await compress(MSG_TEXT, "gzip");
  const bodies: Array<[string, Uint8Array, string]> = [
    ["not gzip", new TextEncoder().encode(MSG_TEXT), "gzip"],
    ["truncated", good.subarray(0, good.length - 5), "gzip"],
    ["trailing bytes", Uint8Array.from([...good, 1, 2, 3]), "gzip"],
    ["gzip sent as deflate", good, "deflate"],
    ["a coding missing from the stack", good, "gzip, gzip"],
  ];
  for (const [what, body, encoding] of bodies) {
    const res = await gw.fetch(
      "/v1/models/echo/execute",
      post(body, { "content-encoding": encoding }),
    );
    assert.equal(res.status, 400, what);
    const { error } = await res.json();
    assert.equal(error.type, "InvalidContentEncoding", what);
    assert.match(error.message, /^Cannot read request: the body is not valid/);
  }
}

/** A step of "Gateway: compressed request bodies, decoded or refused": Gateway: an unknown or too deep Content-Encoding is a 415 listing the supported ones, before the body is read */
async function unknownOrTooDeepContent(gw: TestGateway): Promise<void> {
  for (
    const encoding of [
      "zstd",
      // Deno's decoder cannot be held to the limit (see _content_coding.ts).
      "br",
      "compress",
      "gzip, zstd",
      "gzip, gzip, gzip",
      Array(2000).fill("gzip").join(", "),
    ]
  ) {
    const res = await gw.fetch(
      "/v1/models/echo/execute",
      post(MSG_TEXT, { "content-encoding": encoding }),
    );
    assert.equal(res.status, 415, encoding.slice(0, 30));
    const { error } = await res.json();
    assert.equal(error.type, "UnsupportedMediaType");
    assert.deepEqual(error.supported, ["gzip", "x-gzip", "deflate"]);
  }
  // `identity` is the body as it is.
  const res = await gw.fetch(
    "/v1/models/echo/execute",
    post(MSG_TEXT, { "content-encoding": "identity" }),
  );
  assert.equal(await res.text(), MSG_TEXT);
}

Deno.test("Gateway: a compressed chunked upload that stalls gets the body timeout's 408", async () => {
  await using gw = await start({ limits: { requestTimeout: 500 } });
  // One byte of a gzip header, then nothing: the decoder waits for more.
  await using stalled = await partialRequest(
    gw,
    "POST",
    "/v1/models/echo/execute",
    "\x1f",
    { headers: { "content-encoding": "gzip" } },
  );
  const res = await stalled.response;
  assert.equal(res.status, 408);
  assert.equal(
    (res.body as { error: { type: string } }).error.type,
    "RequestTimeout",
  );
});

// Steps on one gateway started as `start({ compress: { minBytes: 1000 } })`:
// each of these tests started its own (a gateway and its Python worker) and
// needs no fresh one.
Deno.test("Gateway with compress: { minBytes: 1000 }: what it compresses, and what not", async (t) => {
  await using gw = await start({ compress: { minBytes: 1000 } });
  await t.step(
    "Gateway: compress gzips a model's JSON result of minBytes and more for a client that accepts gzip",
    () => compressGzipsModelJsonResult(gw),
  );
  await t.step(
    "Gateway: compress leaves a result alone below minBytes, without gzip accepted, for SSE and when off",
    () => compressLeavesResultAloneBelow(gw),
  );
  await t.step(
    "Gateway: /v2 infer decodes a gzip request and, with compress, gzips a large JSON response",
    () => v2InferDecodesGzipRequest(gw),
  );
  await t.step(
    "Gateway: compress keeps a model's chosen status, and its Vary beside the gateway's",
    () => compressKeepsModelChosenStatus(gw),
  );
  await t.step(
    "Gateway: compress makes a model's strong ETag weak on a gzipped body only",
    () => compressMakesModelStrongEtag(gw),
  );
  await t.step(
    "Gateway: compress leaves alone a result whose model set Cache-Control: no-transform",
    () => compressLeavesAloneResultWhose(gw),
  );
});

/** A step of "Gateway with compress: { minBytes: 1000 }: what it compresses, and what not": Gateway: compress gzips a model's JSON result of minBytes and more for a client that accepts gzip */
async function compressGzipsModelJsonResult(gw: TestGateway): Promise<void> {
  const n = 5000;
  const expected = JSON.stringify({ text: "a".repeat(n) });
  for (
    const accept of [
      "gzip",
      "deflate, gzip;q=0.5",
      "GZIP",
      "x-gzip",
      "*",
      "br;q=1, *;q=0.1",
      "identity;q=0, gzip",
    ]
  ) {
    for (
      const path of [
        "/v1/models/big/execute",
        "/v1/models/big/execute?timeout=5000",
      ]
    ) {
      const res = await rawPost(
        gw.port,
        path,
        JSON.stringify({ n }),
        { "accept-encoding": accept, "x-request-id": "r-1" },
        gw.token,
      );
      assert.equal(res.status, 200, accept);
      assert.equal(res.headers.get("content-encoding"), "gzip", accept);
      assert.equal(res.headers.get("vary"), "accept-encoding");
      assert.equal(res.headers.get("content-type"), "application/json");
      assert.equal(res.headers.get("content-length"), null);
      assert.equal(res.headers.get("x-request-id"), "r-1");
      assert.ok(res.body.byteLength < 200, `${res.body.byteLength} bytes`);
      assert.equal(await decompress(res.body), expected);
    }
  }
}

/** A step of "Gateway with compress: { minBytes: 1000 }: what it compresses, and what not": Gateway: compress leaves a result alone below minBytes, without gzip accepted, for SSE and when off */
async function compressLeavesResultAloneBelow(gw: TestGateway): Promise<void> {
  const small = await rawPost(gw.port, "/v1/models/big/execute", '{"n":900}', {
    "accept-encoding": "gzip",
  }, gw.token);
  assert.equal(small.status, 200);
  assert.equal(small.headers.get("content-encoding"), null);
  // Not over the threshold: no Vary either (it never varies).
  assert.equal(small.headers.get("vary"), null);
  assert.equal(
    new TextDecoder().decode(small.body),
    JSON.stringify({ text: "a".repeat(900) }),
  );
  for (
    const headers of [
      {},
      { "accept-encoding": "identity" },
      { "accept-encoding": "gzip;q=0" },
      { "accept-encoding": "gzip;q=0, *" },
      { "accept-encoding": "*;q=0" },
      { "accept-encoding": "deflate, br" },
      { "accept-encoding": "gzip;q=zero" },
      { "accept-encoding": Array(3000).fill("br").join(", ") },
    ] as Array<Record<string, string>>
  ) {
    const res = await rawPost(
      gw.port,
      "/v1/models/big/execute",
      '{"n":5000}',
      headers,
      gw.token,
    );
    const what = JSON.stringify(headers).slice(0, 60);
    assert.equal(res.status, 200, what);
    assert.equal(res.headers.get("content-encoding"), null, what);
    assert.equal(res.headers.get("vary"), "accept-encoding", what);
    assert.equal(res.body.byteLength, 5000 + 11, what);
  }
  // A stream's events go as they come (SSE is never compressed).
  const res = await gw.fetch("/v1/models/chunks/stream", {
    method: "POST",
    body: '{"n":5000}',
    headers: { "accept-encoding": "gzip", accept: "text/event-stream" },
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-encoding"), null);
  const sse = new SseReader(res.body!);
  assert.equal((await sse.next())?.data, "a".repeat(5000));
  await sse.cancel();

  await using off = await start();
  const plain = await rawPost(
    off.port,
    "/v1/models/big/execute",
    '{"n":5000}',
    {
      "accept-encoding": "gzip",
    },
    off.token,
  );
  assert.equal(plain.headers.get("content-encoding"), null);
  assert.equal(plain.headers.get("vary"), null);
  assert.equal(plain.body.byteLength, 5000 + 11);
}

Deno.test("Gateway: compress gzips a bytes result of a text media type, not an image or octet-stream one", async () => {
  await using gw = await start({ compress: true });
  const text = "x,y\n".repeat(1000);
  const gz = await rawPost(gw.port, "/v1/models/csv/execute", text, {
    "content-type": "application/octet-stream",
    "accept-encoding": "gzip",
  }, gw.token);
  assert.equal(gz.status, 200);
  assert.equal(gz.headers.get("content-type"), "text/csv");
  assert.equal(gz.headers.get("content-encoding"), "gzip");
  assert.equal(gz.headers.get("x-content-type-options"), "nosniff");
  assert.equal(await decompress(gz.body), text);
  const csv = await rawPost(gw.port, "/v1/models/bRaw/execute", text, {
    "content-type": "text/csv",
    "accept-encoding": "gzip",
  }, gw.token);
  // bRaw answers in application/octet-stream: left alone.
  assert.equal(csv.headers.get("content-type"), "application/octet-stream");
  assert.equal(csv.headers.get("content-encoding"), null);
  assert.equal(csv.body.byteLength, text.length);
  const png = await rawPost(gw.port, "/v1/models/png/execute", text, {
    "content-type": "application/octet-stream",
    "accept-encoding": "gzip",
  }, gw.token);
  assert.equal(png.headers.get("content-type"), "image/png");
  assert.equal(png.headers.get("content-encoding"), null);
});

/** A step of "Gateway with compress: { minBytes: 1000 }: what it compresses, and what not": Gateway: /v2 infer decodes a gzip request and, with compress, gzips a large JSON response */
async function v2InferDecodesGzipRequest(gw: TestGateway): Promise<void> {
  const request = JSON.stringify({
    inputs: [{ name: "n", shape: [1], datatype: "INT64", data: [3000] }],
  });
  // A gzip request through fetch (it decodes the answer itself).
  const viaFetch = await gw.fetch("/v2/models/texts/infer", {
    method: "POST",
    headers: { "content-type": "application/json", "content-encoding": "gzip" },
    body: await compress(request, "gzip") as BodyInit,
  });
  assert.equal(viaFetch.status, 200, await viaFetch.clone().text());
  const got = await viaFetch.json();
  assert.equal(got.outputs[0].name, "text");
  assert.equal(got.outputs[0].data[0], "a".repeat(3000));
  // The raw answer: gzip.
  const raw = await rawPost(gw.port, "/v2/models/texts/infer", request, {
    "content-type": "application/json",
    "accept-encoding": "gzip",
  }, gw.token);
  assert.equal(raw.status, 200);
  assert.equal(raw.headers.get("content-encoding"), "gzip");
  assert.equal(raw.headers.get("vary"), "accept-encoding");
  assert.deepEqual(JSON.parse(await decompress(raw.body)), got);
}

/** A step of "Gateway with compress: { minBytes: 1000 }: what it compresses, and what not": Gateway: compress keeps a model's chosen status, and its Vary beside the gateway's */
async function compressKeepsModelChosenStatus(gw: TestGateway): Promise<void> {
  const created = await rawPost(
    gw.port,
    "/v1/models/status/execute",
    '{"status":201}',
    {
      "accept-encoding": "gzip",
    },
    gw.token,
  );
  assert.equal(created.status, 201);
  assert.equal(created.headers.get("content-encoding"), "gzip");
  assert.deepEqual(JSON.parse(await decompress(created.body)), {
    text: "a".repeat(5000),
  });
  // The model's Vary joins the gateway's (it was refused as a duplicate).
  assert.equal(created.headers.get("vary"), "accept-encoding, Accept-Language");
}

/** A step of "Gateway with compress: { minBytes: 1000 }: what it compresses, and what not": Gateway: compress makes a model's strong ETag weak on a gzipped body only */
async function compressMakesModelStrongEtag(gw: TestGateway): Promise<void> {
  const call = (etag: string, acceptEncoding: string) =>
    rawPost(
      gw.port,
      "/v1/models/tagged/execute",
      JSON.stringify({ etag }),
      { "accept-encoding": acceptEncoding },
      gw.token,
    );
  // The gzipped bytes are not the plain ones: one strong tag cannot name both.
  const gz = await call('"v1"', "gzip");
  assert.equal(gz.headers.get("content-encoding"), "gzip");
  assert.equal(gz.headers.get("etag"), 'W/"v1"');
  const plain = await call('"v1"', "identity");
  assert.equal(plain.headers.get("content-encoding"), null);
  assert.equal(plain.headers.get("etag"), '"v1"');
  // A weak one stays as it is.
  const weak = await call('W/"v2"', "gzip");
  assert.equal(weak.headers.get("content-encoding"), "gzip");
  assert.equal(weak.headers.get("etag"), 'W/"v2"');
}

/** A step of "Gateway with compress: { minBytes: 1000 }: what it compresses, and what not": Gateway: compress leaves alone a result whose model set Cache-Control: no-transform */
async function compressLeavesAloneResultWhose(gw: TestGateway): Promise<void> {
  const call = (msg: Record<string, unknown>) =>
    rawPost(
      gw.port,
      "/v1/models/private/execute",
      JSON.stringify(msg),
      { "accept-encoding": "gzip" },
      gw.token,
    );
  for (const bytes of [false, true]) {
    const kept = await call({ cache: "private, No-Transform", bytes });
    assert.equal(kept.status, 200);
    assert.equal(kept.headers.get("content-encoding"), null);
    assert.equal(kept.headers.get("vary"), null);
    assert.equal(kept.headers.get("cache-control"), "private, No-Transform");
    assert.equal(kept.body.byteLength, bytes ? 5000 : 5011);
    // Another directive does not keep it.
    const gz = await call({ cache: "private, no-transformed", bytes });
    assert.equal(gz.headers.get("content-encoding"), "gzip");
  }
}

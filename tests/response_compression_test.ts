import assert from "node:assert/strict";
import {
  acceptsGzip,
  ResponseCompression,
} from "../src/gateway/_response_compression.ts";
import { contentCodings } from "../src/gateway/_content_coding.ts";

Deno.test("acceptsGzip follows q-values, * and case; a bad q-value is 0", () => {
  const yes = [
    "gzip",
    "GZIP",
    " gzip ; q=0.001 ",
    "x-gzip",
    "deflate, gzip;q=0.5",
    "*",
    "br, *;q=0.1",
    "identity;q=0, gzip",
    "gzip;Q=1",
  ];
  const no = [
    null,
    "",
    "identity",
    "gzip;q=0",
    "gzip;q=0.000",
    "gzip;q=0, *",
    "*;q=0",
    "br, deflate",
    "gzip;q=zero",
    "gzip;q=",
    "gzipx",
    Array(5000).fill("br").join(","),
  ];
  for (const h of yes) assert.equal(acceptsGzip(h), true, String(h));
  for (const h of no) {
    assert.equal(acceptsGzip(h), false, String(h).slice(0, 40));
  }
});

Deno.test("ResponseCompression reads Accept-Encoding only for a body of minBytes and more", async () => {
  const compression = new ResponseCompression({ minBytes: 100 });
  let reads = 0;
  const request = {
    headers: {
      get: (
        name: string,
      ) => (reads++, name === "accept-encoding" ? "gzip" : null),
    },
  } as unknown as Request;
  const small = compression.json(request, { a: "x".repeat(50) });
  assert.equal(reads, 0);
  assert.equal(small.headers.get("content-encoding"), null);
  assert.equal(small.headers.get("vary"), null);
  assert.deepEqual(await small.json(), { a: "x".repeat(50) });
  const big = compression.json(request, { a: 2n ** 64n, b: "x".repeat(200) });
  assert.equal(reads, 1);
  assert.equal(big.headers.get("content-encoding"), "gzip");
  assert.equal(big.headers.get("vary"), "accept-encoding");
  const text = await new Response(
    big.body!.pipeThrough(new DecompressionStream("gzip")),
  ).text();
  assert.equal(text, `{"a":18446744073709551616,"b":"${"x".repeat(200)}"}`);
});

Deno.test("contentCodings maps the codings in the order they are undone, and refuses others with 415", () => {
  assert.equal(contentCodings(""), undefined);
  assert.equal(contentCodings("identity"), undefined);
  assert.deepEqual(contentCodings("GZIP"), ["gzip"]);
  assert.deepEqual(contentCodings("deflate, x-gzip"), ["gzip", "deflate"]);
  assert.deepEqual(contentCodings("deflate,identity"), ["deflate"]);
  for (
    const bad of ["br", "zstd", "gzip, gzip, gzip", "__proto__", "toString"]
  ) {
    assert.throws(
      () => contentCodings(bad),
      (err: { status?: number }) => err.status === 415,
      bad,
    );
  }
});

Deno.test("ResponseCompression gives a large body to the compressor in steps, not in one (Deno compresses a write at once on the gateway's thread)", async () => {
  const compression = new ResponseCompression();
  const request = new Request("http://localhost/", {
    headers: { "accept-encoding": "gzip" },
  });
  const value = { v: Array.from({ length: 60_000 }, (_, i) => Math.sin(i)) };
  const res = compression.json(request, value);
  let chunks = 0;
  const parts: Uint8Array[] = [];
  for await (const chunk of res.body!) {
    chunks++;
    parts.push(chunk);
  }
  // ~1.2 MB in 64 KiB steps: a compressed chunk per step or so (in one
  // write, Deno's compressor answered with one chunk and the trailer).
  assert.ok(chunks > 4, `${chunks} chunks`);
  const text = await new Response(
    new Blob(parts as BlobPart[]).stream().pipeThrough(
      new DecompressionStream("gzip"),
    ),
  ).text();
  assert.deepEqual(JSON.parse(text), value);
});

Deno.test("ResponseCompression.bytes compresses text, JSON, XML and JavaScript media types only, not the Office zip formats", () => {
  const compression = new ResponseCompression({ minBytes: 10 });
  const request = new Request("http://localhost/", {
    headers: { "accept-encoding": "gzip" },
  });
  const gzipped = (type: string) =>
    compression.bytes(request, new Uint8Array(100), { "content-type": type })
      .headers.get("content-encoding") === "gzip";
  const yes = [
    "text/csv",
    "Text/Plain; charset=utf-8",
    "application/json",
    "application/json ; charset=utf-8",
    "application/ld+json",
    "application/problem+json",
    "application/x-ndjson",
    "application/jsonl",
    "application/json-seq",
    "application/xml",
    "image/svg+xml",
    "application/atom+xml",
    "application/javascript",
    "application/x-javascript",
  ];
  const no = [
    "application/octet-stream",
    "image/png",
    "application/zip",
    "application/epub+zip",
    // Zip archives, their subtypes naming "xml".
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/octet-stream; note=json",
    "application/jsonx-archive",
  ];
  for (const type of yes) assert.equal(gzipped(type), true, type);
  for (const type of no) assert.equal(gzipped(type), false, type);
});

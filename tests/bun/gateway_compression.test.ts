// Compressed request bodies and compressed large responses through the gateway under Bun (docs/gateway.md, "Compression").
import { expect, test } from "bun:test";
import { gunzipSync, gzipSync } from "node:zlib";
import { withGateway } from "./_helpers.ts";

const BIG_MODEL = `
class Big:
    def execute(self, msg):
        return {"text": "a" * msg["n"], "seen": msg}

class Cached:
    def execute(self, msg):
        from pyproxy import host
        host.set_header("ETag", '"v1"')
        host.set_header("Cache-Control", msg["cache"])
        return {"text": "a" * 5000}
`;

test(
  "a gzip body is decoded, a bomb stops at the limit, and a large result is gzipped for a client that accepts it, on Bun",
  async () => {
    await withGateway(
      { "big.py": BIG_MODEL },
      {
        models: [{ name: "big", file: "big.py", class: "Big" }],
        limits: { bodyLimit: 1 << 20 },
        compress: { minBytes: 1000 },
      },
      async (server) => {
        const url = `${server.url}/v1/models/big/execute`;
        const body = '{"n":5000,"id":9007199254740993}';
        let res = await fetch(url, {
          method: "POST",
          headers: {
            "content-encoding": "gzip",
            "accept-encoding": "gzip",
          },
          body: gzipSync(body),
          // The body as sent: Bun's fetch would decompress it.
          decompress: false,
        } as RequestInit);
        expect(res.status).toBe(200);
        expect(res.headers.get("content-encoding")).toBe("gzip");
        expect(res.headers.get("vary")).toBe("accept-encoding");
        const raw = new Uint8Array(await res.arrayBuffer());
        expect(raw.byteLength).toBeLessThan(500);
        expect(gunzipSync(raw).toString()).toBe(
          `{"text":"${
            "a".repeat(5000)
          }","seen":{"n":5000,"id":9007199254740993}}`,
        );
        // Below the threshold, and without gzip accepted: as it is.
        res = await fetch(url, {
          method: "POST",
          headers: { "accept-encoding": "identity" },
          body: '{"n":6000}',
          decompress: false,
        } as RequestInit);
        expect(res.headers.get("content-encoding")).toBeNull();
        expect((await res.arrayBuffer()).byteLength).toBe(6000 + 29);
        // 64 MiB of zeros in ~64 KB: stopped at the 1 MiB limit.
        res = await fetch(url, {
          method: "POST",
          headers: { "content-encoding": "gzip" },
          body: gzipSync(new Uint8Array(64 << 20)),
        });
        expect(res.status).toBe(413);
        const { error } = await res.json();
        expect(error.decoded).toBe(true);
        // Bun could decode both; refused as on Deno, whose br decoder cannot be bounded.
        for (const coding of ["zstd", "br"]) {
          res = await fetch(url, {
            method: "POST",
            headers: { "content-encoding": coding },
            body,
          });
          expect(res.status).toBe(415);
          expect((await res.json()).error.supported).toEqual([
            "gzip",
            "x-gzip",
            "deflate",
          ]);
        }
      },
    );
  },
);

test(
  "compress makes a model's strong ETag weak on a gzipped body, and leaves a no-transform result alone, on Bun",
  async () => {
    await withGateway(
      { "big.py": BIG_MODEL },
      {
        models: [{ name: "cached", file: "big.py", class: "Cached" }],
        compress: { minBytes: 1000 },
      },
      async (server) => {
        const call = (cache: string) =>
          fetch(`${server.url}/v1/models/cached/execute`, {
            method: "POST",
            headers: { "accept-encoding": "gzip" },
            body: JSON.stringify({ cache }),
            decompress: false,
          } as RequestInit);
        let res = await call("max-age=60");
        expect(res.headers.get("content-encoding")).toBe("gzip");
        expect(res.headers.get("etag")).toBe('W/"v1"');
        await res.arrayBuffer();
        res = await call("private, no-transform");
        expect(res.headers.get("content-encoding")).toBeNull();
        expect(res.headers.get("etag")).toBe('"v1"');
        expect((await res.arrayBuffer()).byteLength).toBe(5011);
      },
    );
  },
);

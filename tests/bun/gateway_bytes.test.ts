// Binary bodies and bytes results through the gateway under Bun (docs/gateway.md, "Binary bodies").
import { expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { Buffer } from "node:buffer";
import { withGateway } from "./_helpers.ts";

const BYTES_MODEL = await readFile(
  new URL("../../python/tests/models/bytes_model.py", import.meta.url),
  "utf8",
);
const ALL = Uint8Array.from({ length: 256 }, (_, i) => i);

test(
  "a binary body reaches the model as bytes with its Content-Type, and a bytes result is the body in its media_type, on Bun",
  async () => {
    await withGateway(
      { "bytes_model.py": BYTES_MODEL },
      {
        models: [
          { name: "bEcho", file: "bytes_model.py", class: "Echo" },
          { name: "png", file: "bytes_model.py", class: "Png" },
        ],
        limits: { bodyLimit: 1000 },
      },
      async (server) => {
        let res = await fetch(`${server.url}/v1/models/bEcho/execute`, {
          method: "POST",
          headers: { "content-type": "image/png; charset=binary" },
          body: ALL,
        });
        expect(res.status).toBe(200);
        expect(await res.json()).toEqual({
          msg: Buffer.from(ALL).toString("base64"),
          type: "bytes",
          contentType: "image/png; charset=binary",
        });
        res = await fetch(`${server.url}/v1/models/png/execute`, {
          method: "POST",
          headers: { "content-type": "application/octet-stream" },
          body: ALL,
        });
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toBe("image/png");
        expect(res.headers.get("x-content-type-options")).toBe("nosniff");
        expect(res.headers.get("content-security-policy")).toBe("sandbox");
        const png = new Uint8Array(await res.arrayBuffer());
        expect([...png.subarray(8)]).toEqual([...ALL]);
        // JSON as before.
        res = await fetch(`${server.url}/v1/models/bEcho/execute`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: '{"x":1}',
        });
        expect(await res.json()).toEqual({
          msg: { x: 1 },
          type: "dict",
          contentType: null,
        });
        // Over the body limit.
        res = await fetch(`${server.url}/v1/models/bEcho/execute`, {
          method: "POST",
          headers: { "content-type": "image/png" },
          body: new Uint8Array(1001),
        });
        expect(res.status).toBe(413);
        await res.body?.cancel();
      },
    );
  },
  30_000,
);

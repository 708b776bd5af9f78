// A model's HTTPError through the gateway under Bun: its status, detail and
// allow-listed headers, and a forwarded request header in host.headers().
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";

const ANSWERS = `from pyproxy import HTTPError, host


class Answers:
    def execute(self, msg):
        if msg.get("missing"):
            raise HTTPError(
                404,
                "no such item",
                detail=[{"loc": ["body", "id"], "msg": "unknown id"}],
                headers={"Cache-Control": "no-store", "Set-Cookie": "a=1"},
            )
        return host.headers()
`;

test(
  "gateway on Bun: a model's HTTPError is its status with its detail and allowed headers; forwardHeaders reach host.headers()",
  async () => {
    await withGateway(
      { "answers.py": ANSWERS },
      { forwardHeaders: ["X-Tenant-Id"] },
      async (server) => {
        const url = `${server.url}/v1/models/answers/execute`;
        const res = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ missing: true }),
        });
        expect(res.status).toBe(404);
        expect(res.headers.get("cache-control")).toBe("no-store");
        expect(res.headers.get("set-cookie")).toBeNull();
        const { error } = await res.json();
        expect(error.type).toBe("HTTPError");
        expect(error.message).toBe("no such item");
        expect(error.detail).toEqual([
          { loc: ["body", "id"], msg: "unknown id" },
        ]);
        const ok = await fetch(url, {
          method: "POST",
          headers: { "x-tenant-id": "t1", "x-other": "no" },
          body: "{}",
        });
        expect(await ok.json()).toEqual({ "x-tenant-id": "t1" });
      },
    );
  },
);

// The status and headers a model chose for its success (host.set_status,
// host.set_header) through the gateway under Bun, with CORS exposing them.
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";

const CREATED = `from pyproxy import host


class Created:
    def execute(self, msg):
        host.set_status(201)
        host.set_header("Location", "/items/%d" % msg["id"])
        host.set_header("Content-Type", "text/html")
        return {"id": msg["id"]}
`;

test(
  "gateway on Bun: a model's 201 with its Location, exposed to CORS pages; Content-Type stays the gateway's",
  async () => {
    const origin = "https://app.example.com";
    await withGateway(
      { "created.py": CREATED },
      { cors: { origins: [origin] } },
      async (server) => {
        const res = await fetch(`${server.url}/v1/models/created/execute`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            origin,
            "sec-fetch-site": "cross-site",
          },
          body: JSON.stringify({ id: 7 }),
        });
        expect(res.status).toBe(201);
        expect(res.headers.get("location")).toBe("/items/7");
        // Bun adds a charset to Response.json()'s type: the gateway's either way.
        expect(res.headers.get("content-type")).toMatch(/^application\/json/);
        expect(res.headers.get("access-control-expose-headers")).toContain(
          "location",
        );
        expect(await res.json()).toEqual({ id: 7 });
      },
    );
  },
);

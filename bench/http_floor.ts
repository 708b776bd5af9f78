/**
 * The HTTP floor: `Deno.serve` answering `POST /v1/models/echo/execute` with
 * the same JSON the gateway returns (the model's result as the body),
 * computed in JS (no Python). Run as its
 * own process by the gateway scenario:
 *
 *     deno run -A bench/http_floor.ts [--port 0]
 *
 * Prints one ready line `{"port": N, "pid": N}`; exits when stdin closes.
 *
 * @module
 */
import { parseArgs } from "node:util";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { port: { type: "string", default: "0" } },
  });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: Number(values.port), onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      if (req.method === "POST" && url.pathname === "/v1/models/echo/execute") {
        const msg = await req.json();
        return Response.json(msg);
      }
      return new Response("not found", { status: 404 });
    },
  );
  console.log(JSON.stringify({ port: server.addr.port, pid: Deno.pid }));
  // The parent closing our stdin means it is gone (or done): stop.
  for await (const _ of Deno.stdin.readable) {
    // ignore input
  }
  await server.shutdown();
  Deno.exit(0);
}

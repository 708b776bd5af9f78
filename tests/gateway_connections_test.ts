/**
 * Connections that never speak, against the gateway's ports: what a full
 * fd table does to the HTTP port (docs/security.md, "Connections").
 *
 * @module
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "./_gateway_process.ts";

/** `GET /healthz` until it answers 200, for up to `ms` ms; the last status or error. */
async function healthyWithin(url: string, ms: number): Promise<string> {
  const deadline = Date.now() + ms;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/healthz`, {
        signal: AbortSignal.timeout(2000),
      });
      await res.body?.cancel();
      if (res.status === 200) return "200";
      last = String(res.status);
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return last;
}

Deno.test({
  name:
    "serve listens again on its HTTP port after connections that never speak filled its fd table (EMFILE)",
  sanitizeResources: false,
  async fn() {
    // 160 fds: the gateway and its worker take ~30, silent connections
    // the rest.
    await using gateway = await startGatewayProcess({}, {}, {
      openFiles: 160,
    });
    const port = Number(new URL(gateway.url).port);
    const conns: Deno.Conn[] = [];
    let refused = false;
    try {
      // Deno.serve's accept loop fails at EMFILE and closes the port
      // (refused from then on). Before, the unhandled rejection ended the
      // process, the port refused the same way, for good.
      while (!refused && conns.length < 400) {
        try {
          conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
        } catch {
          refused = true;
        }
      }
    } finally {
      for (const conn of conns) conn.close();
    }
    assert.ok(refused, "the port refused a connection once the fds ran out");
    assert.equal(
      await healthyWithin(gateway.url, 15_000),
      "200",
      "the HTTP port answers again once the fds are free",
    );
    // The process lived through it, and drains as usual.
    await gateway.shutdown();
  },
});

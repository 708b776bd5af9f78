/**
 * Connections that never speak, against the gateway's ports: what a full
 * fd table does to the HTTP port (docs/security.md, "Connections").
 *
 * @module
 */
import assert from "node:assert/strict";
import * as http2 from "node:http2";
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

/**
 * Opens connections that never speak to `port` until one is refused (the
 * gateway's accept failed at EMFILE and its listener closed), for up to
 * `ms` ms, pushing each to `conns` (to close); whether one was refused. A
 * loaded gateway accepts slower than connections land in its backlog, so
 * past `pace` connections each next one waits a little for it to catch up:
 * no count alone tells when its table is full.
 */
async function fillUntilRefused(
  port: number,
  conns: Deno.Conn[],
  { ms = 20_000, pace = 200 }: { ms?: number; pace?: number } = {},
): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch (err) {
      // Refused, or reset when the listener closed during the handshake.
      if (
        err instanceof Deno.errors.ConnectionRefused ||
        err instanceof Deno.errors.ConnectionReset
      ) return true;
      throw err;
    }
    if (conns.length >= pace) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
  return false;
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
      refused = await fillUntilRefused(port, conns);
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

/** A gRPC health Check on a new h2c connection: its grpc-status, or why none. */
async function grpcCheck(target: string): Promise<string> {
  const session = http2.connect(`http://${target}`);
  session.on("error", () => {});
  try {
    return await checkOn(session);
  } finally {
    session.destroy();
  }
}

/** A gRPC health Check on `session`: its grpc-status, or why none (2 s at most). */
function checkOn(session: http2.ClientHttp2Session): Promise<string> {
  const req = session.request({
    ":method": "POST",
    ":path": "/grpc.health.v1.Health/Check",
    "content-type": "application/grpc",
  });
  req.setTimeout(2000, () => req.close());
  req.end(new Uint8Array(5));
  req.resume();
  return new Promise<string>((resolve) => {
    req.once("trailers", (t) => resolve(String(t["grpc-status"])));
    req.once("error", (err: Error) => resolve(err.message));
    req.once("close", () => resolve("closed"));
  });
}

Deno.test({
  name:
    "serve makes its gRPC port listen again once its HTTP port does, after the fd table was full",
  sanitizeResources: false,
  async fn() {
    await using gateway = await startGatewayProcess({ grpc: { port: 0 } }, {}, {
      openFiles: 160,
    });
    const target = gateway.grpcTarget!;
    assert.equal(await grpcCheck(target), "0");
    const port = Number(new URL(gateway.url).port);
    const grpcPort = Number(target.slice(target.lastIndexOf(":") + 1));
    const conns: Deno.Conn[] = [];
    try {
      const refused = await fillUntilRefused(port, conns);
      assert.ok(
        refused,
        "the HTTP port refused a connection once the fds ran out",
      );
      // gRPC clients connect meanwhile: one takes the fd freed by the closed
      // HTTP listener, the next one's accept fails at EMFILE, which ends
      // Deno's node:net listener for good (the connections stay in its
      // backlog). Released at once: Deno itself panics when the table stays
      // full for long (docs/security.md).
      for (let i = 0; i < 4; i++) {
        conns.push(
          await Deno.connect({ hostname: "127.0.0.1", port: grpcPort }),
        );
      }
    } finally {
      for (const conn of conns) conn.close();
    }
    assert.equal(await healthyWithin(gateway.url, 15_000), "200");
    let status = "";
    const deadline = Date.now() + 10_000;
    while (status !== "0" && Date.now() < deadline) {
      status = await grpcCheck(target);
    }
    assert.equal(status, "0", "the gRPC port answers again");
    await gateway.shutdown();
  },
});

Deno.test({
  name:
    "serve leaves its gRPC port's idle connections alone when its HTTP port listens again and the gRPC listener still accepts",
  sanitizeResources: false,
  async fn() {
    await using gateway = await startGatewayProcess({ grpc: { port: 0 } }, {}, {
      openFiles: 160,
    });
    const target = gateway.grpcTarget!;
    // An idle gRPC connection, a call made on it first.
    const session = http2.connect(`http://${target}`);
    session.on("error", () => {});
    let goaway = false;
    session.on("goaway", () => goaway = true);
    try {
      assert.equal(await checkOn(session), "0");
      const port = Number(new URL(gateway.url).port);
      const conns: Deno.Conn[] = [];
      try {
        const refused = await fillUntilRefused(port, conns);
        assert.ok(refused, "the HTTP port refused a connection");
        // No gRPC connection while the table is full: its listener lives.
      } finally {
        for (const conn of conns) conn.close();
      }
      assert.equal(await healthyWithin(gateway.url, 15_000), "200");
      // The gRPC port answers on the same connection: its listener was
      // found accepting, not closed and listened on again (which sent this
      // idle connection a GOAWAY at every relisten of the HTTP port: each
      // second of a flood).
      assert.equal(await grpcCheck(target), "0");
      assert.ok(
        !goaway && !session.destroyed,
        "the idle connection got a GOAWAY",
      );
      assert.equal(await checkOn(session), "0");
    } finally {
      session.destroy();
    }
    await gateway.shutdown();
  },
});

/**
 * The HTTP port's listener failing and listening again, as the gateway
 * logs it (a flood turns it every second) and as Relisten tells it (a port
 * another process took meanwhile).
 */
import assert from "node:assert/strict";
import { ListenerLog } from "../src/gateway/_listener_log.ts";
import { Relisten } from "../src/runtime/_deno_relisten.ts";
import type { ListenerEvent } from "../src/runtime/types.ts";

/** A logger that keeps its lines, and tells of each. */
function lines() {
  const logged: string[] = [];
  let onLine = () => {};
  return {
    logged,
    logger: {
      error: (m: string) => (logged.push(`error: ${m}`), onLine()),
      info: (m: string) => (logged.push(`info: ${m}`), onLine()),
    },
    /** Resolves once `n` lines were logged. */
    until(n: number): Promise<void> {
      return new Promise((resolve) => {
        onLine = () => logged.length >= n && resolve();
        onLine();
      });
    },
  };
}

const EMFILE = new Error("Too many open files (os error 24)");

Deno.test("ListenerLog: a flood's fail-and-listen-again every second is two lines, then one line with the count once the interval is over", async () => {
  let now = 0;
  const out = lines();
  let listened = 0;
  const log = new ListenerLog({
    logger: out.logger,
    intervalMs: 200,
    now: () => now,
    onListening: () => listened++,
  });
  try {
    // 50 turns (one a second in a flood, 60 s the interval; here scaled
    // down); before: 3 lines each (150).
    for (let i = 0; i < 50; i++) {
      log.event({ type: "failed", error: EMFILE, retryIn: 1000 });
      now += 1;
      log.event({ type: "listening", port: 8000 });
    }
    assert.equal(listened, 50, "the gRPC check follows every listen");
    assert.deepEqual(out.logged, [
      `error: The HTTP port stopped accepting connections (${EMFILE.message}). Listening again in 1000 ms, and every 1000 ms until it can (docs/security.md, "Connections that never speak")`,
      "info: The HTTP port accepts connections again (8000)",
    ]);
    // The interval over (a timer: its time is what is left of it).
    now = 200;
    await out.until(3);
    assert.equal(
      out.logged[2],
      `error: The HTTP port stopped accepting connections 49 more times (the last: ${EMFILE.message}) and was listened on again each time; it accepts connections now (docs/security.md, "Connections that never speak")`,
    );
    // A failure after the interval is logged as the first was.
    now = 10_000;
    log.event({ type: "failed", error: EMFILE, retryIn: 1000 });
    assert.equal(out.logged.length, 4);
    assert.match(out.logged[3]!, /^error: The HTTP port stopped accepting/);
  } finally {
    log.close();
  }
});

Deno.test("ListenerLog: a port another process took is said once per outage, the attempts that fail for want of fds not at all", () => {
  const out = lines();
  const log = new ListenerLog({ logger: out.logger });
  const taken = Object.assign(new Error("Address already in use"), {
    code: "EADDRINUSE",
  });
  const retry = (portTaken: boolean): ListenerEvent => ({
    type: "retryFailed",
    error: portTaken ? taken : EMFILE,
    retryIn: 1000,
    portTaken,
  });
  log.event({ type: "failed", error: EMFILE, retryIn: 1000 });
  log.event(retry(false));
  for (let i = 0; i < 5; i++) log.event(retry(true));
  assert.equal(out.logged.length, 2);
  assert.equal(
    out.logged[1],
    "error: The HTTP port is in use by another process (Address already in use): it was taken while this gateway's listener was down. Trying to listen again every 1000 ms for as long as it is taken; stop that process, or restart the gateway on another port",
  );
  log.event({ type: "listening", port: 8000 });
  log.close();
});

Deno.test("Relisten tells each attempt to listen again that fails, with portTaken when another process holds the port", async () => {
  // The "other process": a listener on the port once the first is gone.
  const other = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (other.addr as Deno.NetAddr).port;
  const events: ListenerEvent[] = [];
  let onEvent = () => {};
  let first = true;
  const relisten = new Relisten((p, onListen) => {
    if (first) {
      // A server whose accept loop failed at once.
      first = false;
      onListen({ transport: "tcp", hostname: "127.0.0.1", port });
      return {
        finished: Promise.reject(EMFILE),
        shutdown: () => Promise.resolve(),
      } as unknown as Deno.HttpServer;
    }
    return Deno.serve(
      { hostname: "127.0.0.1", port: p, onListen: onListen },
      () => new Response("ok"),
    );
  }, {
    retryIn: 20,
    onEvent: (e) => {
      events.push(e);
      onEvent();
    },
  });
  const seen = (type: string) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${type} event in 10 s: ${events.length}`)),
        10_000,
      );
      onEvent = () => {
        if (!events.some((e) => e.type === type)) return;
        clearTimeout(timer);
        resolve();
      };
      onEvent();
    });
  try {
    await relisten.start(0);
    await seen("retryFailed");
    const failed = events.find((e) => e.type === "retryFailed");
    assert.ok(failed?.type === "retryFailed");
    assert.equal(failed.portTaken, true, failed.error.message);
    // The other process leaves: the port is listened on again.
    other.close();
    await seen("listening");
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(await res.text(), "ok");
  } finally {
    try {
      other.close();
    } catch { /* closed */ }
    await relisten.shutdown();
  }
});

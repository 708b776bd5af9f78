// limits.shutdownDelay (--shutdown-delay): after SIGTERM/SIGINT the gateway
// keeps serving for that long, its readiness saying not ready (a load
// balancer takes the endpoint out meanwhile), then drains as before.
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { ShuttingDownError } from "../src/errors.ts";
import {
  spawnServe,
  startGateway,
  statusOf,
  until,
} from "./_gateway_harness.ts";
import { grpc } from "./_grpc_client.ts";

const ECHO = `class Echo:
    def execute(self, msg):
        return msg
`;

/**
 * Answers once the file `msg["go"]` exists (30 s at most): a call in flight
 * for as long as the test needs one, which it then ends at once (a fixed
 * sleep long enough for a loaded machine idled the test 1-2 s each time).
 */
const GATE = `import os
import time


class Gate:
    def execute(self, msg):
        deadline = time.monotonic() + 30
        while not os.path.exists(msg["go"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"released": os.path.exists(msg["go"])}
`;

async function modelsDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-delay-" });
  await Deno.writeTextFile(`${dir}/echo.py`, ECHO);
  await Deno.writeTextFile(`${dir}/gate.py`, GATE);
  return dir;
}

/**
 * A call of the gate model in flight (settled even when the test fails
 * before it awaits it), and its release: the file it waits for.
 */
function gateCall(base: string, dir: string) {
  const go = `${dir}/go`;
  const answer = get(`${base}/v1/models/gate/execute`, {
    method: "POST",
    body: JSON.stringify({ go }),
  });
  answer.catch(() => {});
  return { answer, release: () => Deno.writeTextFile(go, "") };
}

/** `[status, body]` of a request (the body as JSON). */
async function get(
  url: string,
  init?: RequestInit,
): Promise<[number, Record<string, unknown>]> {
  const res = await fetch(url, init);
  return [res.status, await res.json()];
}

function echo(base: string, x: number) {
  return get(`${base}/v1/models/echo/execute`, {
    method: "POST",
    body: JSON.stringify({ x }),
  });
}

/** `grpc.health.v1.Health/Check` of the server as a whole: its status name. */
function healthCheck(client: grpc.Client): Promise<string> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest<Uint8Array, Uint8Array>(
      "/grpc.health.v1.Health/Check",
      (x) => Buffer.from(x),
      (b) => b,
      new Uint8Array(0), // service "" (the default)
      new grpc.Metadata(),
      { deadline: Date.now() + 10_000 },
      (err, res) => {
        if (err || res === undefined) return reject(err);
        // HealthCheckResponse: field 1, a varint.
        const names: Record<string, string> = {
          "8,1": "SERVING",
          "8,2": "NOT_SERVING",
        };
        resolve(names[String([...res])] ?? `bytes ${[...res]}`);
      },
    );
  });
}

type Serve = Awaited<ReturnType<typeof spawnServe>>;

async function stopServe(serve: Serve, dir: string): Promise<void> {
  try {
    serve.child.kill("SIGKILL");
  } catch {
    // already exited
  }
  await serve.child.status;
  await serve.stderr;
  await serve.lines.cancel().catch(() => {});
  await Deno.remove(dir, { recursive: true });
}

/** Reads stdout up to the first match of `re`. */
async function stdoutMatch(
  serve: Serve,
  re: RegExp,
): Promise<RegExpExecArray> {
  const lines = serve.lines;
  let text = serve.banner;
  for (;;) {
    const m = re.exec(text);
    if (m !== null) return m;
    const { value, done } = await lines.read();
    if (done) throw new Error(`no ${re} in stdout: ${JSON.stringify(text)}`);
    text += value;
  }
}

Deno.test("serve --shutdown-delay: after SIGTERM every readiness says not ready at once (gRPC health too) while calls are still served; a second SIGTERM starts the drain at once", async () => {
  const dir = await modelsDir();
  const serve = await spawnServe(dir, [
    // Longer than the test: only the second signal ends it.
    "--shutdown-delay",
    "600000",
    "--grpc-port",
    "0",
    "--log-level",
    "info",
  ]);
  const { child, port, stderr } = serve;
  const base = `http://127.0.0.1:${port}`;
  let client: grpc.Client | undefined;
  try {
    const target = (await stdoutMatch(serve, /gRPC:\s+(\S+)/))[1]!;
    client = new grpc.Client(target, grpc.credentials.createInsecure());
    assert.equal(await healthCheck(client), "SERVING");
    assert.equal((await get(`${base}/healthz`))[0], 200);

    child.kill("SIGTERM");
    assert.deepEqual(
      await until(async () => {
        const [status, body] = await get(`${base}/healthz`);
        return status === 503 && body;
      }, "/healthz to say not ready"),
      { status: "draining", ready: 2, workers: 2 },
    );
    // Not ready everywhere a probe or a load balancer reads it...
    assert.equal(await healthCheck(client), "NOT_SERVING");
    assert.deepEqual(await get(`${base}/v2/health/ready`), [503, {
      ready: false,
    }]);
    assert.deepEqual(await get(`${base}/v2/models/echo/ready`), [503, {
      name: "echo",
      ready: false,
    }]);
    const [v1Status, v1] = await get(`${base}/v1/models/echo`);
    assert.equal(v1Status, 503);
    assert.equal(v1.ready, false);
    assert.deepEqual(
      (v1.model_version_status as Array<{ state: string }>)[0]!.state,
      "UNAVAILABLE",
    );
    assert.equal((await get(`${base}/v1/status`))[1].draining, true);
    // ...but alive, and every call is still served (HTTP and gRPC).
    assert.deepEqual(await get(`${base}/v2/health/live`), [200, {
      live: true,
    }]);
    assert.deepEqual(await echo(base, 1), [200, { x: 1 }]);
    const [inferStatus] = await get(`${base}/v2/models/echo/infer`, {
      method: "POST",
      body: JSON.stringify({
        inputs: [{ name: "x", shape: [1], datatype: "INT64", data: [7] }],
      }),
    });
    assert.equal(inferStatus, 200);
    // A call that outlives the delay's end is drained as usual (the grace
    // counted from the drain's start).
    const slow = gateCall(base, dir);
    await until(
      async () => (await get(`${base}/metrics?format=json`))[1].inFlight === 1,
      "the gate call in flight",
    );

    child.kill("SIGTERM");
    const [lateStatus, late] = await until(async () => {
      const r = await echo(base, 2);
      return r[0] !== 200 && r;
    }, "the drain to start");
    assert.equal(lateStatus, 503);
    assert.equal(
      (late.error as { type: string }).type,
      "ShuttingDownError",
    );
    await slow.release();
    assert.deepEqual(await slow.answer, [200, { released: true }]);
    const { code } = await child.status;
    const log = await stderr;
    assert.equal(code, 0, log);
    const order = [
      'Received "SIGTERM": serving for 600000 ms more, not ready',
      'Received "SIGTERM" again: draining now',
      "Draining: waiting up to",
      "Stopped",
    ].map((line) => {
      const at = log.indexOf(line);
      assert.ok(at >= 0, `no ${JSON.stringify(line)} in ${log}`);
      return at;
    });
    assert.deepEqual(order, [...order].sort((a, b) => a - b), log);
  } finally {
    client?.close();
    await stopServe(serve, dir);
  }
});

Deno.test("serve --shutdown-delay: the drain starts by itself once the delay is over, not before", async () => {
  const dir = await modelsDir();
  const delay = 600;
  const serve = await spawnServe(dir, ["--shutdown-delay", String(delay)]);
  const { child, port, stderr } = serve;
  const base = `http://127.0.0.1:${port}`;
  try {
    // A call in flight holds the drain open: its 503s can be seen.
    const slow = gateCall(base, dir);
    await until(
      async () => (await get(`${base}/metrics?format=json`))[1].inFlight === 1,
      "the gate call in flight",
    );
    const signalled = performance.now();
    child.kill("SIGTERM");
    await until(
      async () => (await get(`${base}/healthz`))[0] === 503,
      "/healthz to say not ready",
    );
    const answers: number[] = [];
    for (let i = 0;; i++) {
      const [status, body] = await echo(base, i);
      const at = performance.now() - signalled;
      answers.push(status);
      if (status === 200) {
        assert.deepEqual(body, { x: i });
        continue;
      }
      assert.equal(status, 503);
      assert.equal((body.error as { type: string }).type, "ShuttingDownError");
      // Never before the delay is over.
      assert.ok(at >= delay, `503 after ${Math.round(at)} ms`);
      break;
    }
    await slow.release();
    assert.deepEqual(await slow.answer, [200, { released: true }]);
    const { code } = await child.status;
    assert.equal(code, 0, await stderr);
  } finally {
    await stopServe(serve, dir);
  }
});

Deno.test("serve without --shutdown-delay drains at SIGTERM at once, as before", async () => {
  const dir = await modelsDir();
  const serve = await spawnServe(dir, ["--log-level", "info"]);
  const { child, port, stderr } = serve;
  const base = `http://127.0.0.1:${port}`;
  try {
    const slow = gateCall(base, dir);
    await until(
      async () => (await get(`${base}/metrics?format=json`))[1].inFlight === 1,
      "the gate call in flight",
    );
    child.kill("SIGTERM");
    await until(
      async () => (await get(`${base}/healthz`))[0] === 503,
      "/healthz to say not ready",
    );
    // Not ready and draining together: the first call after is refused.
    const [status, body] = await echo(base, 1);
    assert.equal(status, 503);
    assert.equal((body.error as { type: string }).type, "ShuttingDownError");
    await slow.release();
    assert.deepEqual(await slow.answer, [200, { released: true }]);
    assert.equal((await child.status).code, 0);
    const log = await stderr;
    assert.match(log, /Received "SIGTERM"\n/);
    assert.doesNotMatch(log, /serving for/);
  } finally {
    await stopServe(serve, dir);
  }
});

Deno.test("GatewayServer.shutdown({ delay }): not ready, still serving, a reload refused; shutdown() again drains at once; a bad delay rejects", async () => {
  await using gw = await startGateway();
  await assert.rejects(gw.shutdown({ delay: -1 }), RangeError);
  await assert.rejects(gw.shutdown({ delay: 1.5 }), RangeError);
  // Nothing began.
  assert.equal(await statusOf(gw.fetch("/healthz")), 200);
  assert.match(
    await (await gw.fetch("/metrics")).text(),
    /^pyproxy_models_ready\{model="echo"\} 1$/m,
  );
  const stopping = gw.shutdown({ delay: 600_000 });
  const health = await gw.fetch("/healthz");
  assert.equal(health.status, 503);
  assert.equal((await health.json()).status, "draining");
  const res = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: JSON.stringify({ x: 1 }),
  });
  assert.equal(res.status, 200);
  await res.body?.cancel();
  // /metrics still answers, each model not ready, as the ready routes say.
  assert.match(
    await (await gw.fetch("/metrics")).text(),
    /^pyproxy_models_ready\{model="echo"\} 0$/m,
  );
  await assert.rejects(gw.reload(), ShuttingDownError);
  // The same shutdown, its delay ended.
  assert.equal(gw.shutdown(), stopping);
  await stopping;
  await assert.rejects(fetch(`${gw.url}/healthz`), TypeError);
});

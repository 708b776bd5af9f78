import assert from "node:assert/strict";
import {
  partialRequest,
  spawnServe,
  SseReader,
  startGateway,
  until,
} from "./_gateway_harness.ts";

async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return !/^\d+ \(.*\) Z/.test(stat); // a zombie has exited
  } catch {
    return false;
  }
}

Deno.test("serve drains in-flight requests on SIGTERM, stops the workers and exits 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-shutdown-" });
  // GATE (below): in flight until the test has seen the drain start (a
  // fixed 1 s sleep idled it).
  await Deno.writeTextFile(`${dir}/gate.py`, GATE);
  const release = `${dir}/release`;
  const { child, port, stderr, lines } = await spawnServe(dir);
  try {
    const base = `http://127.0.0.1:${port}`;
    const status = await (await fetch(`${base}/v1/status`)).json();
    const pids: number[] = status.workers.map((w: { pid: number }) => w.pid);
    assert.equal(pids.length, 2);

    const requests = Array.from(
      { length: 6 },
      () =>
        fetch(`${base}/v1/models/gate/execute`, {
          method: "POST",
          body: JSON.stringify({ started: `${dir}/started`, release }),
        })
          .then(async (r) => [r.status, await r.json()] as const),
    );
    // Settled even when the test fails before it awaits them.
    for (const request of requests) request.catch(() => {});
    const deadline = Date.now() + 10_000;
    while (
      (await (await fetch(`${base}/metrics?format=json`)).json()).inFlight !== 6
    ) {
      assert.ok(
        Date.now() < deadline,
        "the 6 requests never were in flight together",
      );
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGTERM");
    // Draining (new calls refused) with the 6 still in flight: then let
    // them end.
    await until(
      async () => {
        const res = await fetch(`${base}/healthz`);
        await res.body?.cancel();
        return res.status === 503;
      },
      "/healthz to say draining",
    );
    await Deno.writeTextFile(release, "");
    const results = await Promise.all(requests);
    assert.deepEqual(results, Array(6).fill([200, { done: true }]));
    const { code } = await child.status;
    if (code !== 0) assert.fail(`exit code ${code}: ${await stderr}`);
    for (const pid of pids) {
      assert.equal(
        await alive(pid),
        false,
        `python worker ${pid} still running`,
      );
    }
    await lines.cancel();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await child.status;
    await stderr;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GatewayServer.shutdown keeps the port open to answer 503 while draining, and starts the one grace at once", async () => {
  await using gw = await startGateway({ limits: { shutdownGrace: 1000 } });
  const call = gw.fetch("/v1/models/slow/execute", {
    method: "POST",
    body: JSON.stringify({ seconds: 30 }),
  });
  await until(
    async () => (await (await gw.fetch("/v1/status")).json()).inFlight === 1,
    "the slow call in flight",
  );
  const stopped = gw.shutdown();
  // The pool's close (and with it the grace) starts now, not after a
  // first wait of its own: the grace is counted once.
  assert.equal(gw.pool.status().closing, true);
  const health = await fetch(`${gw.url}/healthz`);
  assert.equal(health.status, 503);
  assert.equal((await health.json()).status, "draining");
  const late = await gw.fetch("/v1/models/echo/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(late.status, 503);
  assert.equal(late.headers.get("retry-after"), "5");
  assert.equal((await late.json()).error.type, "ShuttingDownError");
  // The call outlives the grace: it is cut off with an error, not left hanging.
  const res = await call;
  assert.ok(res.status >= 500, `status ${res.status}`);
  await res.body?.cancel();
  await stopped;
  await assert.rejects(fetch(`${gw.url}/healthz`), TypeError);
});

/** Python for an eval that prints "started", then waits (up to 30 s) until `release` exists. */
function waitFor(release: string): string {
  return `import os, time
print("started", flush=True)
deadline = time.monotonic() + 30
while not os.path.exists(${
    JSON.stringify(release)
  }) and time.monotonic() < deadline:
    time.sleep(0.01)
print("released", flush=True)
"fin"`;
}

Deno.test("GatewayServer.shutdown lets an eval stream in flight run on to its result within the grace; channel subscribers are dropped", async () => {
  await using gw = await startGateway({
    allowEval: true,
    limits: { shutdownGrace: 20_000 },
  });
  const release = `${gw.dir}/release`;
  const sub = new SseReader((await gw.fetch("/v1/channels/news")).body!);
  const res = await gw.fetch("/v1/eval", {
    method: "POST",
    body: JSON.stringify({ code: waitFor(release) }),
  });
  assert.equal(res.status, 200);
  const events = new SseReader(res.body!);
  assert.equal((await events.next())?.event, "atom");
  assert.deepEqual((await events.next())?.data, { fd: 1, data: "started\n" });
  const stopped = gw.shutdown();
  try {
    assert.deepEqual(await sub.next(), {
      event: "dropped",
      data: { reason: "server shutting down" },
    });
    assert.equal(await sub.next(), undefined);
    // Draining: new requests are refused, the eval's stream stays open.
    const late = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: "{}",
    });
    assert.equal(late.status, 503);
    await late.body?.cancel();
  } finally {
    await Deno.writeTextFile(release, "");
  }
  assert.deepEqual((await events.next())?.data, {
    fd: 1,
    data: "released\n",
  });
  assert.deepEqual(await events.next(), {
    event: "result",
    data: { value: "fin" },
  });
  assert.equal(await events.next(), undefined);
  await stopped;
});

Deno.test("GatewayServer.shutdown ends an eval stream whose code outlives the grace with a ShuttingDownError event", async () => {
  const grace = 500;
  await using gw = await startGateway({
    allowEval: true,
    limits: { shutdownGrace: grace },
  });
  const res = await gw.fetch("/v1/eval", {
    method: "POST",
    body: JSON.stringify({ code: waitFor(`${gw.dir}/never`) }),
  });
  const events = new SseReader(res.body!);
  assert.equal((await events.next())?.event, "atom");
  assert.equal((await events.next())?.event, "output");
  const t0 = performance.now();
  const stopped = gw.shutdown();
  const cut = await events.next();
  // Its request id: made up (the POST sent none).
  const { requestId, ...data } = cut?.data as Record<string, unknown>;
  assert.match(String(requestId), /^[0-9a-f-]{36}$/);
  assert.deepEqual({ ...cut, data }, {
    event: "error",
    data: {
      status: 503,
      type: "ShuttingDownError",
      message:
        "Cannot finish eval: the server shut down before the code finished",
    },
  });
  const waited = performance.now() - t0;
  assert.ok(waited >= grace * 0.9, `ended after ${waited} ms`);
  assert.equal(await events.next(), undefined);
  await stopped;
});

Deno.test("GatewayServer.shutdown answers 503 ShuttingDownError to a request still sending its body", async () => {
  await using gw = await startGateway({ allowEval: true });
  const execute = await partialRequest(
    gw,
    "POST",
    "/v1/models/echo/execute",
    '{"a":',
    { contentLength: 100 },
  );
  await using _execute = execute;
  await using evalReq = await partialRequest(gw, "POST", "/v1/eval", '{"co');
  await until(
    async () =>
      (await (await gw.fetch("/v1/status")).json()).gateway.inFlight === 1,
    "the execute call waiting for its body",
  );
  const stopped = gw.shutdown();
  for (const req of [execute, evalReq]) {
    const res = await req.response;
    assert.equal(res.status, 503);
    // The execute call's and the eval's errors have a request id (made up:
    // also its header).
    const { requestId, ...error } = (res.body as {
      error: Record<string, unknown>;
    }).error;
    assert.match(String(requestId), /^[0-9a-f-]{36}$/);
    assert.equal(res.headers.get("x-request-id"), requestId);
    assert.deepEqual({ error }, {
      error: {
        type: "ShuttingDownError",
        message: "Cannot serve request: the server is shutting down",
      },
    });
    assert.equal(res.headers.get("retry-after"), "5");
  }
  await stopped;
});

// Sleeps msg["seconds"], then answers msg["bytes"] bytes of JSON.
const LARGE_ANSWER = `import time


class Large:
    def execute(self, msg):
        time.sleep(msg["seconds"])
        return {"data": "x" * msg["bytes"]}
`;

for (const grpc of [false, true]) {
  Deno.test(
    `serve on SIGTERM lets a large answer made in the grace reach a slow reader whole before it exits (${
      grpc ? "a gRPC port too" : "no gRPC port"
    })`,
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "pyproxy-shutdown-" });
      await Deno.writeTextFile(`${dir}/large.py`, LARGE_ANSWER);
      const { child, port, stderr, lines } = await spawnServe(
        dir,
        grpc ? ["--grpc-port", "0"] : [],
      );
      try {
        const base = `http://127.0.0.1:${port}`;
        const bytes = 4 * 1024 * 1024;
        const answer = fetch(`${base}/v1/models/large/execute`, {
          method: "POST",
          body: JSON.stringify({ seconds: 0.3, bytes }),
        });
        await until(
          async () =>
            (await (await fetch(`${base}/metrics?format=json`)).json())
              .inFlight === 1,
          "the call in flight",
        );
        child.kill("SIGTERM");
        const res = await answer;
        assert.equal(res.status, 200);
        // A slow reader: the body takes about a second to read, well within
        // the grace (10 s). The drain ended as soon as the response was made
        // (the gRPC port's close won the race, or its absence: `undefined`),
        // and the process exited under the body.
        let text = "";
        const decoder = new TextDecoder();
        for await (const chunk of res.body!) {
          text += decoder.decode(chunk, { stream: true });
          await new Promise((r) => setTimeout(r, 15));
        }
        assert.equal(text.length, bytes + '{"data":""}'.length);
        assert.equal(JSON.parse(text).data.length, bytes);
        const { code } = await child.status;
        if (code !== 0) assert.fail(`exit code ${code}: ${await stderr}`);
        await lines.cancel();
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // already exited
        }
        await child.status;
        await stderr;
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}

// Marks msg["started"], waits for msg["release"] (up to 10 s), then answers,
// or with msg["publish"] publishes to "news" from the model and answers that.
const GATE = `import os
import time

from pyproxy import host


class Gate:
    def execute(self, msg):
        open(msg["started"], "w").close()
        deadline = time.monotonic() + 10
        while not os.path.exists(msg["release"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        if msg.get("publish"):
            return host.publish("news", {"n": 1})
        return {"done": True}
`;

Deno.test("GatewayServer.shutdown: a call in flight that publishes (?publish=, host.publish) answers its result within the grace, not 400 'the channel hub is closed'", async () => {
  await using gw = await startGateway({
    workers: 2,
    limits: { shutdownGrace: 20_000 },
  }, { "gate.py": GATE });
  const release = `${gw.dir}/release`;
  const call = (query: string, msg: Record<string, unknown>) =>
    gw.fetch(`/v1/models/gate/execute${query}`, {
      method: "POST",
      body: JSON.stringify({ ...msg, release }),
    }).then(async (r) => [r.status, await r.json()]);
  const routed = call("?publish=audit", { started: `${gw.dir}/a` });
  const hosted = call("", { started: `${gw.dir}/b`, publish: true });
  await until(async () => {
    try {
      await Deno.stat(`${gw.dir}/a`);
      await Deno.stat(`${gw.dir}/b`);
      return true;
    } catch {
      return false;
    }
  }, "both calls started");
  const stopped = gw.shutdown();
  try {
    // Draining: the channel hub is closed.
    const late = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: "{}",
    });
    assert.equal(late.status, 503);
    await late.body?.cancel();
  } finally {
    await Deno.writeTextFile(release, "");
  }
  assert.deepEqual(await routed, [200, { done: true }]);
  const [status, published] = await hosted;
  assert.deepEqual([status, { ...published, epoch: "" }], [200, {
    channel: "news",
    seq: 1,
    epoch: "",
    delivered: 0,
  }]);
  assert.match(published.epoch, /^[0-9a-f]{8}$/);
  await stopped;
});

Deno.test("GatewayServer.shutdown with a grace beyond a timer's range (2^31 ms: until the calls finish) lets an eval stream run on to its result, not end it at once", async () => {
  await using gw = await startGateway({
    allowEval: true,
    limits: { shutdownGrace: 2 ** 31 },
  });
  const release = `${gw.dir}/release`;
  const res = await gw.fetch("/v1/eval", {
    method: "POST",
    body: JSON.stringify({ code: waitFor(release) }),
  });
  assert.equal(res.status, 200);
  const events = new SseReader(res.body!);
  assert.equal((await events.next())?.event, "atom");
  assert.deepEqual((await events.next())?.data, { fd: 1, data: "started\n" });
  const stopped = gw.shutdown();
  try {
    // Draining: new requests are refused, the eval's stream stays open.
    const late = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: "{}",
    });
    assert.equal(late.status, 503);
    await late.body?.cancel();
  } finally {
    await Deno.writeTextFile(release, "");
  }
  // A setTimeout of 2^31 ms fires at once: the stream ended with a
  // ShuttingDownError event before the code was released.
  assert.deepEqual((await events.next())?.data, {
    fd: 1,
    data: "released\n",
  });
  assert.deepEqual(await events.next(), {
    event: "result",
    data: { value: "fin" },
  });
  assert.equal(await events.next(), undefined);
  await stopped;
});

Deno.test("GatewayServer.shutdown: answers written while draining say Connection: close, so a keep-alive client sends no request that the close would reset", async () => {
  await using gw = await startGateway({ limits: { shutdownGrace: 10_000 } });
  // Raw HTTP/1.1 keep-alive connections: the model route's direct path
  // (no query string), and another route of the app (TensorFlow Serving's
  // :predict).
  const send = (path: string, message: unknown) => {
    const body = JSON.stringify(message);
    return partialRequest(gw, "POST", path, body, {
      contentLength: body.length,
      headers: { "Content-Type": "application/json" },
    });
  };
  await using direct = await send("/v1/models/slow/execute", {
    seconds: 0.5,
  });
  await using routed = await send("/v1/models/slow:predict", {
    instances: [{ seconds: 0.5 }],
  });
  await until(
    async () => (await (await gw.fetch("/v1/status")).json()).inFlight === 2,
    "both calls in flight",
  );
  const stopped = gw.shutdown();
  for (const request of [direct, routed]) {
    const res = await request.response;
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("connection"), "close");
  }
  await stopped;
});

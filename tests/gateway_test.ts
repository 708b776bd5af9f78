import assert from "node:assert/strict";
import {
  SseReader,
  startGateway,
  statusOf,
  until,
} from "./_gateway_harness.ts";
import { SCHED_BATCH, schedPolicies } from "./_harness.ts";

const TOKEN = "gateway-test-token-0123";
const APPLICANT = {
  age: 35,
  income: 61000,
  debt: 9000,
  late_payments: 0,
  credit_years: 11,
};
const json = (body: unknown): RequestInit => ({
  method: "POST",
  body: JSON.stringify(body),
});

Deno.test("createGateway serves every route with real workers", async (t) => {
  await using gw = await startGateway({
    workers: 2,
    token: TOKEN,
    allowEval: true,
    allowManage: true,
    // No grace at the close: the 504 step's call still sleeps in its model
    // (a cancel cannot cut a time.sleep short), and the close waited for it
    // (3.8 s; what a close does with calls in flight is
    // gateway_shutdown_test's).
    limits: { bodyLimit: 4096, shutdownGrace: 0 },
  });

  await t.step(
    "GET /healthz is public and 200 with a ready worker",
    async () => {
      const res = await fetch(`${gw.url}/healthz`);
      assert.equal(res.status, 200);
      assert.equal((await res.json()).status, "ok");
    },
  );

  await t.step("every other route needs the bearer token", async () => {
    const res = await fetch(`${gw.url}/v1/status`);
    assert.equal(res.status, 401);
    await res.body?.cancel();
    const bad = await fetch(`${gw.url}/v1/status`, {
      headers: { authorization: "Bearer wrong-token-0123456789" },
    });
    assert.equal(bad.status, 401);
    await bad.body?.cancel();
  });

  await t.step(
    "GET /v1/status lists workers, models, queue and restarts",
    async () => {
      const status = await (await gw.fetch("/v1/status")).json();
      assert.equal(status.workers.length, 2);
      assert.ok(
        status.workers.every((w: { state: string; pid: number }) =>
          w.state === "ready" && w.pid > 0
        ),
      );
      // serve() runs its workers under SCHED_BATCH by default (Linux).
      for (const w of status.workers as Array<{ pid: number }>) {
        const policies = schedPolicies(w.pid);
        if (policies !== undefined) {
          assert.deepEqual(new Set(policies), new Set([SCHED_BATCH]));
        }
      }
      assert.equal(status.queue, 0);
      assert.equal(status.restarts, 0);
      assert.ok(status.uptime >= 0);
      assert.ok(
        status.models.some((m: { name: string }) => m.name === "scorer"),
      );
    },
  );

  await t.step(
    "GET /v1/models describes the models with their declared inputs",
    async () => {
      const { models } = await (await gw.fetch("/v1/models")).json();
      const scorer = models.find((m: { name: string }) => m.name === "scorer");
      assert.deepEqual(Object.keys(scorer.inputs), [
        "age",
        "income",
        "debt",
        "late_payments",
        "credit_years",
      ]);
      assert.equal(scorer.version, 1);
      assert.ok(models.some((m: { name: string }) => m.name === "echo"));
    },
  );

  await t.step("POST execute returns the result, 204 for nothing", async () => {
    let res = await gw.fetch(
      "/v1/models/echo/execute",
      json({ hello: "world" }),
    );
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { hello: "world" });
    res = await gw.fetch("/v1/models/echo/execute", json({}));
    assert.equal(res.status, 204);
    assert.equal(await res.text(), "");
    res = await gw.fetch("/v1/models/scorer/execute", json(APPLICANT));
    assert.equal(res.status, 200);
    const score = await res.json();
    assert.ok(score.score >= 300 && score.score <= 850);
    assert.equal(score.decision, "approve");
  });

  await t.step(
    "POST execute validates the body against the declared inputs (400)",
    async () => {
      const res = await gw.fetch(
        "/v1/models/scorer/execute",
        json({
          ...APPLICANT,
          income: "lots",
          late_payments: 1.5,
          age: undefined,
        }),
      );
      assert.equal(res.status, 400);
      const { error } = await res.json();
      assert.equal(error.type, "ValidationError");
      assert.match(error.message, /age: is required/);
      assert.match(error.message, /income: expected a number/);
      assert.match(error.message, /late_payments: expected an integer/);
      // The same, for programs: every bad field, in declared order.
      assert.deepEqual(error.fields, [
        {
          path: ["age"],
          message: "is required",
          expected: "number",
          received: "missing",
        },
        {
          path: ["income"],
          message: "expected a number",
          expected: "number",
          received: "string",
        },
        {
          path: ["late_payments"],
          message: "expected an integer",
          expected: "integer",
          received: "number",
        },
      ]);
      // A model stream's body is checked the same way, before it starts.
      const streamed = await gw.fetch(
        "/v1/models/scorer/stream",
        json({ ...APPLICANT, debt: null }),
      );
      assert.equal(streamed.status, 400);
      assert.deepEqual((await streamed.json()).error.fields, [{
        path: ["debt"],
        message: "expected a number",
        expected: "number",
        received: "null",
      }]);
      const notJson = await gw.fetch("/v1/models/echo/execute", {
        method: "POST",
        body: "{nope",
      });
      assert.equal(notJson.status, 400);
      assert.equal((await notJson.json()).error.type, "InvalidJson");
      const blank = await gw.fetch("/v1/models/echo/execute", {
        method: "POST",
        body: "  \n",
      });
      assert.equal(blank.status, 400);
      assert.equal((await blank.json()).error.type, "InvalidJson");
      // No body at all (Content-Length: 0) is the model's {}: echo's 204.
      const empty = await gw.fetch("/v1/models/echo/execute", {
        method: "POST",
      });
      assert.equal(empty.status, 204);
      await empty.body?.cancel();
    },
  );

  await t.step("POST execute of an unknown model is 404", async () => {
    const res = await gw.fetch("/v1/models/nope/execute", json({}));
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.type, "ModelNotFoundError");
  });

  await t.step(
    "POST execute with a body over the limit is 413 naming the limit",
    async () => {
      const res = await gw.fetch(
        "/v1/models/echo/execute",
        json({ x: "y".repeat(5000) }),
      );
      assert.equal(res.status, 413);
      assert.match(
        (await res.json()).error.message,
        /over the limit of 4096 bytes/,
      );
    },
  );

  await t.step(
    "POST execute of a raising model is 422 with type and message, no traceback",
    async () => {
      const res = await gw.fetch("/v1/models/boom/execute", json({ x: 7 }));
      assert.equal(res.status, 422);
      const { error } = await res.json();
      assert.equal(error.type, "PythonError");
      assert.equal(error.exception, "ValueError");
      assert.match(error.message, /bad input: 7/);
      assert.equal(error.traceback, undefined);
    },
  );

  await t.step("POST execute past its timeout is 504", async () => {
    const res = await gw.fetch(
      "/v1/models/slow/execute?timeout=200",
      json({ seconds: 5 }),
    );
    assert.equal(res.status, 504);
    assert.equal((await res.json()).error.type, "TimeoutError");
  });

  /** Starts a waiter call, waits `afterStartMs` once it runs, disconnects, and expects its cancel. */
  const disconnectCancels = async (tag: string, afterStartMs: number) => {
    const started = `${gw.dir}/${tag}.started`;
    const cancelled = `${gw.dir}/${tag}.cancelled`;
    const client = new AbortController();
    const pending = gw.fetch(
      "/v1/models/waiter/execute?timeout=30000",
      { ...json({ started, cancelled }), signal: client.signal },
    ).then(
      () => "answered",
      (err: Error) => err.name,
    );
    await until(() => readIfExists(started), "the call to start");
    if (afterStartMs > 0) await new Promise((r) => setTimeout(r, afterStartMs));
    client.abort();
    assert.equal(await pending, "AbortError");
    // Without cancel-on-disconnect the call would run on for 10 s.
    assert.equal(
      await until(() => readIfExists(cancelled), "the cancel", 5000),
      "cancelled",
    );
  };

  await t.step(
    "a client that disconnects cancels its Python call",
    async () => {
      await disconnectCancels("waiter", 0);
      const res = await gw.fetch("/v1/models/whoami/execute", json({}));
      assert.equal(res.status, 200); // the worker serves on
      await res.body?.cancel();
    },
  );

  await t.step(
    "a client that disconnects after its call started listening cancels it too",
    // Past the watch's 50 ms grace and its next sweep: the call listens to
    // request.signal by now (the step above leaves before it does).
    () => disconnectCancels("waiter2", 200),
  );

  await t.step(
    "?key= routes calls with the same key to the same worker",
    async () => {
      const pids = new Set<number>();
      for (let i = 0; i < 4; i++) {
        pids.add(
          (await (await gw.fetch(
            "/v1/models/whoami/execute?key=customer-42",
            json({}),
          )).json()).pid,
        );
      }
      assert.equal(pids.size, 1);
    },
  );

  await t.step("?publish= publishes the result to a channel", async () => {
    const res = await gw.fetch("/v1/channels/scores");
    const sse = new SseReader(res.body!);
    const exec = await gw.fetch(
      "/v1/models/scorer/execute?publish=scores",
      json(APPLICANT),
    );
    assert.equal(exec.status, 200);
    const result = await exec.json();
    const msg = await sse.next();
    assert.equal(msg?.event, "message");
    assert.deepEqual(msg?.data, { model: "scorer", result });
    await sse.cancel();
  });

  await t.step(
    "PUT and DELETE /v1/models/{name} manage models, confined to the models directory",
    async () => {
      let res = await gw.fetch("/v1/models/strict", {
        method: "PUT",
        body: JSON.stringify({
          file: "scorer.py",
          options: { threshold: 0.0001 },
        }),
      });
      assert.equal(res.status, 201);
      assert.equal((await res.json()).model.version, 1);
      res = await gw.fetch("/v1/models/strict/execute", json(APPLICANT));
      assert.equal((await res.json()).decision, "review");
      res = await gw.fetch("/v1/models/strict", {
        method: "PUT",
        body: JSON.stringify({ file: "./scorer.py" }),
      });
      assert.equal(res.status, 200);
      const updated = await res.json();
      assert.equal(updated.action, "updated");
      assert.equal(updated.model.version, 2);
      for (
        const file of [
          "../etc/passwd.py",
          "/etc/x.py",
          "a/../../x.py",
          "scorer.txt",
        ]
      ) {
        res = await gw.fetch("/v1/models/evil", {
          method: "PUT",
          body: JSON.stringify({ file }),
        });
        assert.equal(res.status, 400, file);
        assert.equal((await res.json()).error.type, "PathError");
      }
      res = await gw.fetch("/v1/models/evil", {
        method: "PUT",
        body: JSON.stringify({ file: "scorer.py", extra: 1 }),
      });
      assert.equal(res.status, 400);
      await res.body?.cancel();
      res = await gw.fetch("/v1/models/strict", { method: "DELETE" });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { name: "strict", removed: true });
      res = await gw.fetch("/v1/models/strict", { method: "DELETE" });
      assert.equal(res.status, 404);
      await res.body?.cancel();
      res = await gw.fetch("/v1/models/strict/execute", json(APPLICANT));
      assert.equal(res.status, 404);
      await res.body?.cancel();
    },
  );

  await t.step(
    "POST /v1/eval streams output then the result as SSE, resumable with Last-Event-ID",
    async () => {
      const res = await gw.fetch(
        "/v1/eval",
        json({ code: "print('one')\nprint('two')\nx * 7", locals: { x: 6 } }),
      );
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
      const atomId = res.headers.get("x-atom-id");
      const events = await new SseReader(res.body!).all();
      assert.equal(events[0]?.event, "atom");
      const output = events.filter((e) => e.event === "output");
      assert.equal(
        output.map((e) => (e.data as { data: string }).data).join(""),
        "one\ntwo\n",
      );
      assert.ok(
        output.every((e) =>
          e.id !== undefined && (e.data as { fd: number }).fd === 1
        ),
      );
      assert.deepEqual(events.at(-1), { event: "result", data: { value: 42 } });
      const firstId = output[0]!.id!;
      const resumed = await gw.fetch(`/v1/eval/${atomId}/events`, {
        headers: { "last-event-id": firstId },
      });
      const again = await new SseReader(resumed.body!).all();
      const replayed = again.filter((e) => e.event === "output");
      assert.ok(replayed.every((e) => Number(e.id) > Number(firstId)));
      assert.equal(
        replayed.map((e) => (e.data as { data: string }).data).join(""),
        "one\ntwo\n".slice((output[0]!.data as { data: string }).data.length),
      );
      assert.deepEqual(again.at(-1), { event: "result", data: { value: 42 } });
      // Last-Event-ID is a plain sequence number (or -1).
      for (const bad of ["1e0", "0x1", "+1", "-2", "1.5", "x"]) {
        const res = await gw.fetch(`/v1/eval/${atomId}/events`, {
          headers: { "last-event-id": bad },
        });
        assert.equal(res.status, 400, bad);
        await res.body?.cancel();
      }
      const fromStart = await gw.fetch(`/v1/eval/${atomId}/events`, {
        headers: { "last-event-id": "-1" },
      });
      assert.equal(fromStart.status, 200);
      await fromStart.body?.cancel();
      const missing = await gw.fetch("/v1/eval/no-such-atom/events");
      assert.equal(missing.status, 404);
      await missing.body?.cancel();
    },
  );

  await t.step(
    "POST /v1/eval reports a Python exception as an error event",
    async () => {
      const res = await gw.fetch(
        "/v1/eval",
        json({ code: "raise KeyError('k')" }),
      );
      const events = await new SseReader(res.body!).all();
      const last = events.at(-1)!;
      assert.equal(last.event, "error");
      assert.equal((last.data as { exception: string }).exception, "KeyError");
    },
  );

  await t.step(
    "channels: two SSE subscribers, a Python publisher, the listing",
    async () => {
      const a = new SseReader((await gw.fetch("/v1/channels/news")).body!);
      const b = new SseReader((await gw.fetch("/v1/channels/news")).body!);
      let res = await gw.fetch(
        "/v1/channels/news",
        json({ headline: "hello" }),
      );
      const { epoch, ...published } = await res.json();
      assert.match(epoch, /^[0-9a-f]{8}$/);
      assert.deepEqual(published, { channel: "news", seq: 1, delivered: 2 });
      res = await gw.fetch(
        "/v1/models/publisher/execute",
        json({ channel: "news", user: "ada" }),
      );
      assert.equal((await res.json()).delivered, 2);
      for (const sub of [a, b]) {
        const first = await sub.next();
        assert.deepEqual([first?.event, first?.id, first?.data], [
          "message",
          "1",
          { headline: "hello" },
        ]);
        const second = await sub.next();
        assert.equal(second?.id, "2");
        assert.equal((second?.data as { user: string }).user, "ada");
      }
      // A JSON string is sent as JSON too (it was sent raw: `data: hi`).
      res = await gw.fetch("/v1/channels/news", json("hi"));
      assert.equal((await res.json()).delivered, 2);
      for (const sub of [a, b]) assert.equal((await sub.next())?.data, "hi");
      const { channels } = await (await gw.fetch("/v1/channels")).json();
      const news = channels.find((c: { name: string }) => c.name === "news");
      assert.equal(news.subscribers, 2);
      assert.equal(news.history.length, 3);
      await a.cancel();
      await b.cancel();
      const bad = await gw.fetch("/v1/channels/bad%20name", json({}));
      assert.equal(bad.status, 400);
      await bad.body?.cancel();
    },
  );

  await t.step(
    "channels: a slow subscriber is dropped with a notice while a fast one keeps up",
    async () => {
      const slowRes = await gw.fetch("/v1/channels/firehose");
      const fast = new SseReader(
        (await gw.fetch("/v1/channels/firehose")).body!,
      );
      const big = "x".repeat(3500); // under the 4096-byte body limit
      let sent = 0;
      let received = 0;
      const subscribers = async () => {
        const { channels } = await (await gw.fetch("/v1/channels?history=0"))
          .json();
        return channels.find((c: { name: string }) => c.name === "firehose")
          .subscribers as number;
      };
      // Publish until the unread subscriber overflows its buffer (the socket buffers absorb some first).
      while ((await subscribers()) === 2) {
        for (let i = 0; i < 50; i++) {
          const r = await gw.fetch(
            "/v1/channels/firehose",
            json({ n: sent++, big }),
          );
          await r.body?.cancel();
        }
        while (received < sent) {
          assert.equal(
            ((await fast.next())?.data as { n: number }).n,
            received++,
          );
        }
        assert.ok(sent < 20000, "slow subscriber never dropped");
      }
      const slow = new SseReader(slowRes.body!);
      let last;
      for (let m = await slow.next(); m; m = await slow.next()) last = m;
      assert.equal(last?.event, "dropped");
      assert.match((last?.data as { reason: string }).reason, /too slow/);
      const metrics = await (await gw.fetch("/metrics")).text();
      assert.match(metrics, /^pyproxy_channel_subscribers_dropped_total 1$/m);
      const r = await gw.fetch("/v1/channels/firehose", json({ n: sent++ }));
      assert.equal((await r.json()).delivered, 1);
      assert.equal(((await fast.next())?.data as { n: number }).n, received);
      await fast.cancel();
    },
  );

  await t.step(
    "channels: a WebSocket subscriber receives messages",
    async () => {
      const ws = new WebSocket(
        `${gw.url.replace("http", "ws")}/v1/channels/ws-news`,
        {
          headers: { authorization: `Bearer ${TOKEN}` },
        } as unknown as string[],
      );
      const opened = new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      const message = new Promise<{ type: string; data: unknown }>((
        resolve,
      ) => (ws.onmessage = (e) => resolve(JSON.parse(e.data))));
      await opened;
      await until(async () => {
        const { channels } = await (await gw.fetch("/v1/channels")).json();
        return channels.find((c: { name: string; subscribers: number }) =>
          c.name === "ws-news" && c.subscribers === 1
        );
      }, "the WebSocket subscriber");
      await (await gw.fetch("/v1/channels/ws-news", json({ hi: 1 }))).body
        ?.cancel();
      const msg = await message;
      assert.equal(msg.type, "message");
      assert.deepEqual(msg.data, { hi: 1 });
      const closed = new Promise((resolve) => (ws.onclose = resolve));
      ws.close();
      await closed;
    },
  );

  await t.step(
    "GET /metrics is Prometheus text with requests, latency, in-flight and restarts",
    async () => {
      const res = await gw.fetch("/metrics");
      assert.match(
        res.headers.get("content-type") ?? "",
        /^text\/plain; version=0\.0\.4/,
      );
      const text = await res.text();
      assert.match(
        text,
        /^pyproxy_requests_total\{model="echo",status="200"\} 1$/m,
      );
      assert.match(
        text,
        /^pyproxy_requests_total\{model="echo",status="204"\} 2$/m,
      );
      assert.match(
        text,
        /^pyproxy_requests_total\{model="boom",status="422"\} 1$/m,
      );
      assert.match(
        text,
        /^pyproxy_request_duration_seconds_bucket\{model="scorer",le="\+Inf"\} \d+$/m,
      );
      assert.match(
        text,
        /^pyproxy_request_duration_seconds_count\{model="scorer"\} \d+$/m,
      );
      assert.match(text, /^pyproxy_in_flight_requests\{model="echo"\} 0$/m);
      assert.match(text, /^pyproxy_worker_restarts_total\{worker="w1"\} 0$/m);
      assert.match(text, /^pyproxy_workers\{state="ready"\} 2$/m);
    },
  );

  await t.step(
    "GET / serves the dashboard page with a strict CSP",
    async () => {
      const res = await gw.fetch("/");
      assert.equal(res.status, 200);
      assert.match(
        res.headers.get("content-security-policy") ?? "",
        /script-src 'nonce-/,
      );
      assert.match(await res.text(), /<title>pyproxy dashboard<\/title>/);
    },
  );
});

Deno.test("createGateway refuses management and eval unless enabled (403)", async () => {
  await using gw = await startGateway();
  const cases: Array<[string, RequestInit]> = [
    ["/v1/models/x", {
      method: "PUT",
      body: JSON.stringify({ file: "echo.py" }),
    }],
    ["/v1/models/echo", { method: "DELETE" }],
    ["/v1/eval", json({ code: "1" })],
  ];
  for (const [path, init] of cases) {
    const res = await gw.fetch(path, init);
    assert.equal(res.status, 403, path);
    assert.equal((await res.json()).error.type, "Forbidden");
  }
});

Deno.test("createGateway refuses a foreign Host header on a real server (403)", async () => {
  await using gw = await startGateway();
  const ok = await gw.fetch("/healthz");
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
  // fetch() does not let a caller set Host: speak HTTP/1.1 directly, as a rebinding page's browser would.
  const text = await rawRequest(
    gw.port,
    `GET /v1/status HTTP/1.1\r\nHost: rebind.example:${gw.port}\r\nConnection: close\r\n\r\n`,
  );
  assert.match(text, /^HTTP\/1\.1 403 /);
  assert.match(text, /ForbiddenHost/);
  // /healthz answers whatever the Host (load balancers probe by IP).
  const health = await rawRequest(
    gw.port,
    `GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:${gw.port}\r\nConnection: close\r\n\r\n`,
  );
  assert.match(health, /^HTTP\/1\.1 200 /);
});

/**
 * Sends raw HTTP/1.1 (fetch() sets Host and Origin itself) and reads one
 * response: up to its Content-Length, or until the server closes.
 */
async function rawRequest(port: number, text: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(text));
    const decoder = new TextDecoder();
    let out = "";
    for await (const chunk of conn.readable) {
      out += decoder.decode(chunk, { stream: true });
      const end = out.indexOf("\r\n\r\n");
      const length = /\r\ncontent-length: (\d+)/i.exec(out)?.[1];
      if (
        end >= 0 && length !== undefined &&
        new TextEncoder().encode(out.slice(end + 4)).byteLength >=
          Number(length)
      ) break;
    }
    return out;
  } finally {
    try {
      conn.close();
    } catch {
      // closed by the server
    }
  }
}

Deno.test("createGateway refuses a web page's cross-site requests on a real server: eval, execute, WebSocket", async () => {
  await using gw = await startGateway({ allowEval: true });
  const pwned = `${gw.dir}/pwned`;
  // Eval has a token (generated): the Origin check must hold even for a
  // request that carries it (a page cannot add it without a preflight).
  const auth = { authorization: `Bearer ${gw.token}` };
  // What a page on evil.example can send without a CORS preflight.
  const page = {
    ...auth,
    origin: "https://evil.example",
    "sec-fetch-site": "cross-site",
    "content-type": "text/plain",
  };
  const evalRes = await fetch(`${gw.url}/v1/eval`, {
    method: "POST",
    headers: page,
    body: JSON.stringify({
      code: `open(${JSON.stringify(pwned)}, "w").write("x")`,
    }),
  });
  assert.equal(evalRes.status, 403);
  assert.equal((await evalRes.json()).error.type, "ForbiddenOrigin");
  const exec = await fetch(`${gw.url}/v1/models/echo/execute?publish=audit`, {
    method: "POST",
    headers: page,
    body: '{"a":1}',
  });
  assert.equal(exec.status, 403);
  await exec.body?.cancel();
  const plainExec = await fetch(`${gw.url}/v1/models/echo/execute`, {
    method: "POST",
    headers: page,
    body: '{"a":1}',
  });
  assert.equal(plainExec.status, 403, "the direct execute path checks too");
  await plainExec.body?.cancel();
  const upgrade = await rawRequest(
    gw.port,
    `GET /v1/channels/audit HTTP/1.1\r\nHost: 127.0.0.1:${gw.port}\r\n` +
      `Authorization: Bearer ${gw.token}\r\n` +
      `Origin: https://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
  );
  assert.match(upgrade, /^HTTP\/1\.1 403 /);
  assert.match(upgrade, /ForbiddenOrigin/);
  // A link followed from another site opens the dashboard, and only it.
  const link = {
    ...auth,
    "sec-fetch-site": "cross-site",
    "sec-fetch-mode": "navigate",
  };
  for (const path of ["/v1/models", "/v1/models/echo", "/v1/status"]) {
    const res = await fetch(`${gw.url}${path}`, { headers: link });
    assert.equal(res.status, 403, path);
    assert.equal((await res.json()).error.type, "ForbiddenOrigin");
  }
  const dashboard = await fetch(`${gw.url}/`, { headers: link });
  assert.equal(dashboard.status, 200);
  await dashboard.body?.cancel();
  // The gateway's own origin is served (the dashboard's requests).
  const own = await fetch(`${gw.url}/v1/eval`, {
    method: "POST",
    headers: { ...auth, origin: gw.url, "sec-fetch-site": "same-origin" },
    body: JSON.stringify({ code: "6 * 7" }),
  });
  assert.equal(own.status, 200);
  const events = await new SseReader(own.body!).all();
  assert.deepEqual(events.at(-1)?.data, { value: 42 });
  assert.equal(await Deno.stat(pwned).catch(() => undefined), undefined);
});

Deno.test("createGateway answers 429 with Retry-After when the pool queue is full", async () => {
  await using gw = await startGateway({
    limits: { maxInFlightPerWorker: 1, maxQueue: 0 },
  });
  const first = gw.fetch("/v1/models/slow/execute", json({ seconds: 1 }));
  await until(
    async () => (await (await gw.fetch("/v1/status")).json()).inFlight === 1,
    "the first call in flight",
  );
  const res = await gw.fetch("/v1/models/slow/execute", json({ seconds: 0 }));
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("retry-after"), "1");
  const { error } = await res.json();
  assert.equal(error.type, "OverloadedError");
  // In the operator's terms: the model, and serve's settings to change (the
  // pool's said "Cannot accept call executeModel: ... (maxQueue 0) ...").
  assert.equal(
    error.message,
    "Cannot run model 'slow': the gateway is overloaded: 0 calls wait for a " +
      "worker (limits.maxQueue 0, serve --max-queue) and the workers it may " +
      "go to run 1 each (limits.maxInFlightPerWorker, serve --max-in-flight): " +
      "retry later; if the load is normal, add workers (serve --workers, " +
      "--autoscale, PUT /v1/workers) or raise --max-queue",
  );
  assert.equal(await statusOf(first), 200);
});

Deno.test("createGateway's 429 of a queue holding one call says it waits (singular)", async () => {
  await using gw = await startGateway({
    limits: { maxInFlightPerWorker: 1, maxQueue: 1 },
  });
  const first = gw.fetch("/v1/models/slow/execute", json({ seconds: 1 }));
  await until(
    async () => (await (await gw.fetch("/v1/status")).json()).inFlight === 1,
    "the first call in flight",
  );
  const second = gw.fetch("/v1/models/slow/execute", json({ seconds: 0 }));
  await until(
    async () => (await (await gw.fetch("/v1/status")).json()).queue === 1,
    "the second call queued",
  );
  const res = await gw.fetch("/v1/models/slow/execute", json({ seconds: 0 }));
  assert.equal(res.status, 429);
  const { error } = await res.json();
  assert.match(
    error.message,
    /: 1 call waits for a worker \(limits\.maxQueue 1, serve --max-queue\) /,
  );
  assert.equal(await statusOf(first), 200);
  assert.equal(await statusOf(second), 200);
});

Deno.test("createGateway answers 503 with Retry-After when no worker is left", async () => {
  await using gw = await startGateway({ plugins: { reconnect: false } });
  const pid = gw.pool.status().workers[0]!.pid!;
  Deno.kill(pid, "SIGKILL");
  await until(
    async () => await statusOf(gw.fetch("/healthz")) === 503,
    "/healthz to report no worker",
  );
  const res = await gw.fetch("/v1/models/echo/execute", json({ a: 1 }));
  assert.equal(res.status, 503);
  assert.ok(res.headers.get("retry-after"));
  await res.body?.cancel();
});

/** The text of `path`, or undefined while it does not exist (for `until`). */
async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

Deno.test("createGateway answers HEAD on the SSE routes with the stream's headers and leaves no subscriber or reader behind", async () => {
  await using gw = await startGateway({ allowEval: true });
  const subscribers = async () =>
    (await (await gw.fetch("/v1/status")).json()).gateway.subscribers;
  for (let i = 0; i < 3; i++) {
    const res = await gw.fetch("/v1/channels/probe", { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(
      res.headers.get("content-type"),
      "text/event-stream; charset=utf-8",
    );
    await res.body?.cancel();
  }
  // The router drops a HEAD response's body without cancelling it: a
  // subscriber made for it would stay, and be counted and delivered to.
  assert.equal(await subscribers(), 0);
  const published = await gw.fetch("/v1/channels/probe", {
    method: "POST",
    body: '{"n":1}',
  });
  assert.equal((await published.json()).delivered, 0);
  const bad = await gw.fetch("/v1/channels/bad%20name", { method: "HEAD" });
  assert.equal(bad.status, 400);
  await bad.body?.cancel();

  const started = await gw.fetch("/v1/eval", {
    method: "POST",
    body: JSON.stringify({ code: "print('hi')\n7" }),
  });
  const id = started.headers.get("x-atom-id")!;
  const events = new SseReader(started.body!);
  while ((await events.next())?.event !== "result") { /* to the end */ }
  const head = await gw.fetch(`/v1/eval/${id}/events`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("x-atom-id"), id);
  assert.equal(
    head.headers.get("content-type"),
    "text/event-stream; charset=utf-8",
  );
  await head.body?.cancel();
});

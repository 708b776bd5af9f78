/**
 * Streams a retired token opened: a reload (or a token file's change) that
 * retires a token ends its model streams (SSE, and the gRPC transport's
 * ModelStreamInfer items), its eval streams and the eval's code, with an
 * `Unauthorized` end, the model's generator cancelled in Python and the
 * call counted as a 401; another token's streams go on.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { loadConfig } from "../src/gateway/config.ts";
import { serve } from "../src/gateway/serve.ts";
import { TOKEN_RETIRED } from "../src/gateway/_token_holders.ts";
import { tempDir, waitFor } from "./_harness.ts";
import { SseReader, withLogs } from "./_gateway_harness.ts";
import { countAbortListeners } from "./_abort_listeners.ts";
import { rawGrpcGateway, tritonProto } from "./_grpc_raw_gateway.ts";
import { grpc } from "./_grpc_client.ts";
import {
  exists,
  GRPC_TICKER,
  TICKER,
  tickerStream,
  within,
} from "./_token_streams.ts";

const T1 = "first-token-0123456789abcdef";
const T2 = "second-token-0123456789abcdef";

/** `pyproxy_requests_total` of `model` with `status`. */
async function requests(
  url: string,
  model: string,
  status: number,
): Promise<number> {
  const res = await fetch(`${url}/metrics`, {
    headers: { authorization: `Bearer ${T2}` },
  });
  const text = await res.text();
  const m = text.match(
    new RegExp(
      `^pyproxy_requests_total\\{model="${model}",status="${status}"\\} (\\d+)$`,
      "m",
    ),
  );
  return Number(m?.[1] ?? 0);
}

/**
 * A gateway's configuration directory: `models/<file>` holding `source`, and
 * `write` / `load` of its pyproxy.json (`base` under every `write`).
 */
async function configDir(
  dir: string,
  file: string,
  source: string,
  base: object,
  workers: number,
) {
  await Deno.mkdir(`${dir}/models`);
  await Deno.writeTextFile(`${dir}/models/${file}`, source);
  const write = (config: object) =>
    Deno.writeTextFile(
      `${dir}/pyproxy.json`,
      JSON.stringify({ modelsDir: "models", ...base, ...config }),
    );
  const load = () =>
    loadConfig({ path: `${dir}/pyproxy.json`, cli: { port: 0, workers } });
  return { write, load };
}

Deno.test("GatewayServer.reload ends the model and eval streams of a token it retires (the model's generator and the eval's code cancelled), and keeps the others", async () => {
  await using dir = await tempDir("pyproxy-token-streams-test-");
  const { write, load } = await configDir(
    dir.path,
    "ticker.py",
    TICKER,
    { allowEval: true },
    2,
  );
  await write({ token: [T1, T2] });
  await withLogs(async (records) => {
    await using server = await serve(await load(), { reloadConfig: load });
    const stream = async (token: string, marker: string) => {
      const res = await fetch(`${server.url}/v1/models/ticker/stream`, {
        method: "POST",
        body: JSON.stringify({ marker: `${dir.path}/${marker}` }),
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, 200);
      const reader = new SseReader(res.body!);
      assert.equal((await reader.next())?.event, "item");
      return reader;
    };
    const retired = await stream(T1, "retired");
    const kept = await stream(T2, "kept");
    // An eval of the retired token, still running (its code waits).
    const evalRes = await fetch(`${server.url}/v1/eval`, {
      method: "POST",
      body: JSON.stringify({
        code: "import time\nprint('started', flush=True)\ntime.sleep(20)",
      }),
      headers: { authorization: `Bearer ${T1}` },
    });
    assert.equal(evalRes.status, 200);
    const evalEvents = new SseReader(evalRes.body!);
    const atom = await evalEvents.next();
    assert.equal(atom?.event, "atom");
    assert.equal((await evalEvents.next())?.event, "output");
    try {
      await write({ token: T2 });
      assert.deepEqual(await server.reload(), {
        changed: ["token (1)"],
        ignored: [],
      });
      // The retired token's model stream: its last event says why.
      const rest = await within(retired.all(), "the model stream");
      const last = rest.at(-1);
      assert.equal(last?.event, "error");
      const error = (last?.data as { error: Record<string, unknown> }).error;
      assert.equal(error.type, "Unauthorized");
      assert.equal(error.message, TOKEN_RETIRED);
      assert.equal(typeof error.requestId, "string");
      assert.ok(rest.slice(0, -1).every((e) => e.event === "item"));
      // Its generator was closed in Python (its finally ran).
      await waitFor(() => exists(`${dir.path}/retired`), {
        message: "the model's generator to be closed",
      });
      assert.equal(await exists(`${dir.path}/kept`), false);
      assert.equal(await requests(server.url, "ticker", 401), 1);
      // The eval's stream ends the same way.
      const evalRest = await within(evalEvents.all(), "the eval stream");
      assert.deepEqual(evalRest.at(-1), {
        event: "error",
        data: {
          status: 401,
          type: "Unauthorized",
          message: TOKEN_RETIRED,
          requestId: (evalRest.at(-1)?.data as { requestId: string })
            .requestId,
        },
      });
      // Its code was interrupted: a replay (the kept token's) ends with
      // that, not 20 s later.
      const replay = await fetch(
        `${server.url}/v1/eval/${
          (atom!.data as { id: string }).id
        }/events?lastEventId=0`,
        { headers: { authorization: `Bearer ${T2}` } },
      );
      assert.equal(replay.status, 200);
      const replayed = await within(
        new SseReader(replay.body!).all(),
        "the eval's replay",
      );
      assert.equal(replayed.at(-1)?.event, "error");
      assert.notEqual(
        (replayed.at(-1)?.data as { type: string }).type,
        "Unauthorized",
      );
      // The kept token's stream goes on.
      assert.equal((await kept.next())?.event, "item");
      assert.ok(
        records.some((r) =>
          r.message.join("") ===
            "Ended 3 model or eval stream(s) whose token is no longer accepted"
        ),
        records.map((r) => r.message.join("")).join("\n"),
      );
    } finally {
      await retired.cancel();
      await kept.cancel();
      await evalEvents.cancel();
    }
    // The kept stream's generator closes once it is cancelled.
    await waitFor(() => exists(`${dir.path}/kept`));
  });
});

/** Writes msg["dir"]/started, then waits for msg["dir"]/go before its item. */
const SLOW = `import os, time


class Slow:
    def execute(self, msg):
        d = msg["dir"]
        open(os.path.join(d, "started"), "w").close()
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(os.path.join(d, "go")) and time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            open(os.path.join(d, "cancelled"), "w").close()
            raise
        yield 1
`;

Deno.test("A token retired while its model stream waits for the first item: answered 401 as its next request is, the model's call cancelled", async () => {
  await using dir = await tempDir("pyproxy-token-streams-test-");
  const { write, load } = await configDir(
    dir.path,
    "slow.py",
    SLOW,
    {},
    1,
  );
  await write({ token: [T1, T2] });
  await withLogs(async () => {
    await using server = await serve(await load(), { reloadConfig: load });
    const res = fetch(`${server.url}/v1/models/slow/stream`, {
      method: "POST",
      body: JSON.stringify({ dir: dir.path }),
      headers: { authorization: `Bearer ${T1}` },
    });
    await waitFor(() => exists(`${dir.path}/started`));
    await write({ token: T2 });
    await server.reload();
    const answer = await within(res, "the stream's answer");
    assert.equal(answer.status, 401);
    const body = await answer.json();
    assert.equal(body.error.type, "Unauthorized");
    assert.equal(body.error.message, TOKEN_RETIRED);
    await waitFor(() => exists(`${dir.path}/cancelled`), {
      message: "the model's call to be cancelled",
    });
    assert.equal(await requests(server.url, "slow", 401), 1);
  });
});

Deno.test("A token retired while its model stream with ?early=1 waits for the first item: the stream's only event is Unauthorized, the model's call cancelled", async () => {
  await using dir = await tempDir("pyproxy-token-streams-test-");
  const { write, load } = await configDir(
    dir.path,
    "slow.py",
    SLOW,
    {},
    1,
  );
  await write({ token: [T1, T2] });
  await withLogs(async () => {
    await using server = await serve(await load(), { reloadConfig: load });
    const res = await fetch(`${server.url}/v1/models/slow/stream?early=1`, {
      method: "POST",
      body: JSON.stringify({ dir: dir.path }),
      headers: { authorization: `Bearer ${T1}` },
    });
    assert.equal(res.status, 200);
    await waitFor(() => exists(`${dir.path}/started`));
    await write({ token: T2 });
    await server.reload();
    const reader = new SseReader(res.body!);
    const event = await within(reader.next(), "the stream's error event");
    assert.equal(event?.event, "error");
    const error = (event!.data as { error: Record<string, string> }).error;
    assert.equal(error.type, "Unauthorized");
    assert.equal(error.message, TOKEN_RETIRED);
    assert.equal(await within(reader.next(), "the stream's end"), undefined);
    await waitFor(() => exists(`${dir.path}/cancelled`), {
      message: "the model's call to be cancelled",
    });
    assert.equal(await requests(server.url, "slow", 401), 1);
  });
});

const GRPC_TOKEN = "grpc-token-streams-test-0123456789";

Deno.test("A token retired while its gRPC ModelStreamInfer runs a yielding model: the stream ends UNAUTHENTICATED saying why, the model's call counted as 401, its worker freed", async () => {
  await using gw = await rawGrpcGateway(GRPC_TOKEN, {
    "ticker.py": GRPC_TICKER,
  }, { limits: { streamIdleTimeout: 600_000 } });
  const { call, responses, ended, until } = tickerStream(
    gw.client,
    GRPC_TOKEN,
    "t",
  );
  try {
    await until(() => responses.length >= 3);
    // A reload: the token replaced.
    await gw.reload({
      grpc: { port: 0 },
      token: T2,
      limits: { streamIdleTimeout: 600_000 },
    });
    // The stream ends, as at a 401 before the first item: it stayed open,
    // its next infers refused one by one, for as long as the client kept
    // it (chaos51). The server writes the infer's error response first
    // (seen on the wire each time), which grpc-js drops now and then when
    // the non-OK status comes in the same read: asked for only if given.
    const end = await within(ended, "the gRPC stream");
    assert.equal(end.code, grpc.status.UNAUTHENTICATED, end.details);
    assert.equal(end.details, TOKEN_RETIRED);
    const failed = responses.filter((r) => r.error_message !== "");
    assert.ok(failed.length <= 1, JSON.stringify(failed));
    for (const f of failed) assert.equal(f.error_message, TOKEN_RETIRED);
    // Its worker is free (the model's call cancelled), the call counted.
    const status = async () =>
      await (await gw.fetch("/v1/status", {
        headers: { authorization: `Bearer ${T2}` },
      })).json();
    await waitFor(async () => (await status()).workers[0].inFlight === 0, {
      message: "the worker to be free",
    });
    const metrics = await (await gw.fetch("/metrics", {
      headers: { authorization: `Bearer ${T2}` },
    })).text();
    assert.match(
      metrics,
      /^pyproxy_requests_total\{model="ticker",status="401"\} 1$/m,
    );
  } finally {
    call.cancel();
    await ended;
  }
});

const BIG = `import os


class Big:
    """Yields 1 MB items, writing how many it gave to msg["dir"]/count."""

    def execute(self, msg):
        count = os.path.join(msg["dir"], "count")
        for i in range(1000):
            with open(count + ".tmp", "w") as f:
                f.write(str(i))
            os.replace(count + ".tmp", count)
            yield "x" * 1000000
`;

/** The items `Big` gave, once that stopped growing (its reader full). */
async function stalled(dir: string): Promise<number> {
  let last = -1;
  let same = 0;
  for (;;) {
    const now = await Deno.readTextFile(`${dir}/count`).then(Number, () => -1);
    same = now === last && now >= 0 ? same + 1 : 0;
    if (same === 5) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test("A token retired while its model stream's client takes no event: the stream ends with its 401 (counted, not left in flight), as an idle one does", async () => {
  // Before: the retirement cancelled the items, which stopped the idle
  // bound's watch, and the response stayed open and in flight for as long
  // as the client kept its connection without reading (the log said the
  // stream was ended); without the retirement the idle bound ended it.
  await using dir = await tempDir("pyproxy-token-streams-test-");
  const { write, load } = await configDir(dir.path, "big.py", BIG, {}, 1);
  await write({ token: [T1, T2] });
  await withLogs(async () => {
    await using server = await serve(await load(), { reloadConfig: load });
    const { port } = new URL(server.url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: +port });
    try {
      const body = JSON.stringify({ dir: dir.path });
      await conn.write(
        new TextEncoder().encode(
          `POST /v1/models/big/stream HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
            `Authorization: Bearer ${T1}\r\nContent-Type: application/json\r\n` +
            `Content-Length: ${body.length}\r\n\r\n${body}`,
        ),
      );
      // The head and a first chunk; then the client reads nothing more.
      const head = new Uint8Array(64);
      await conn.read(head);
      assert.match(new TextDecoder().decode(head), /^HTTP\/1\.1 200/);
      // The client's socket and the gateway's buffers full: no pull waits.
      await stalled(dir.path);
      await write({ token: T2 });
      await server.reload();
      await waitFor(async () => await requests(server.url, "big", 401) === 1, {
        message: "the stream to end with its 401",
      });
    } finally {
      conn.close();
    }
  });
});

Deno.test("A token retired while its eval stream's client takes no event: the stream ends at once, its listeners let go", async () => {
  // Before: nothing pulled the stream, so its generator (and its listeners
  // on the gateway's stop and the token's retirement) stayed for as long as
  // the client kept its connection without reading.
  await using dir = await tempDir("pyproxy-token-streams-test-");
  const { write, load } = await configDir(
    dir.path,
    "big.py",
    BIG,
    { allowEval: true },
    1,
  );
  await write({ token: [T1, T2] });
  using listeners = countAbortListeners();
  await withLogs(async () => {
    await using server = await serve(await load(), { reloadConfig: load });
    const { port } = new URL(server.url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: +port });
    try {
      const code = "import os\ncount = " +
        JSON.stringify(`${dir.path}/count`) +
        "\nfor i in range(2000):\n" +
        "    with open(count + '.tmp', 'w') as f:\n        f.write(str(i))\n" +
        "    os.replace(count + '.tmp', count)\n" +
        "    print('x' * 1000000, flush=True)\n";
      const body = JSON.stringify({ code });
      await conn.write(
        new TextEncoder().encode(
          `POST /v1/eval HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
            `Authorization: Bearer ${T1}\r\nContent-Type: application/json\r\n` +
            `Content-Length: ${
              new TextEncoder().encode(body).length
            }\r\n\r\n${body}`,
        ),
      );
      const head = new Uint8Array(64);
      await conn.read(head);
      assert.match(new TextDecoder().decode(head), /^HTTP\/1\.1 200/);
      // The client's socket and the gateway's buffers full.
      await stalled(dir.path);
      assert.ok(listeners.held > 0, `${listeners.held} listeners`);
      await write({ token: T2 });
      await server.reload();
      await waitFor(() => listeners.held === 0, {
        message: "the eval stream's listeners to let go",
      });
    } finally {
      conn.close();
    }
  });
});

/** Yields 64 kB tensors every 5 ms without end; notes its end in msg["marker"]. */
const GRPC_BIG_TICKER = `import time


class Ticker:
    def execute(self, msg):
        marker = msg.get("marker", "")
        try:
            while True:
                time.sleep(0.005)
                yield {"tick": [0.5] * 8192}
        finally:
            if marker:
                with open(marker, "w") as f:
                    f.write("closed")
`;

Deno.test("A token retired while its gRPC ModelStreamInfer's client reads nothing: the model's call cancelled, counted as 401 and not left in flight, its worker freed", async () => {
  // The gRPC twin of the model stream's test above (streams28): the
  // retirement reaches the model's stream through the REST route's hold,
  // whatever the transport's loop waits for (here, room to write its first
  // answer). The HTTP/2 stream itself ends too (the test below).
  await using dir = await tempDir("pyproxy-token-streams-test-");
  const marker = `${dir.path}/closed`;
  await using gw = await rawGrpcGateway(GRPC_TOKEN, {
    "ticker.py": GRPC_BIG_TICKER,
  }, { token: [GRPC_TOKEN, T2], limits: { streamIdleTimeout: 600_000 } });
  const headers = { authorization: `Bearer ${T2}` };
  const metrics = async () =>
    await (await gw.fetch("/metrics", { headers })).text();
  const status = async () =>
    await (await gw.fetch("/v1/status", { headers })).json();
  // A client whose HTTP/2 windows are 0: no answer's byte reaches it.
  const session = http2.connect(`http://${gw.grpcTarget}`, {
    settings: { initialWindowSize: 0 },
  });
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": "/inference.GRPCInferenceService/ModelStreamInfer",
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${GRPC_TOKEN}`,
    });
    req.on("error", () => {});
    const closed = new Promise<void>((resolve) => req.once("close", resolve));
    const message = tritonProto().lookupType("inference.ModelInferRequest");
    const bytes = message.encode(message.create({
      model_name: "ticker",
      id: "t",
      inputs: [{
        name: "marker",
        datatype: "BYTES",
        shape: [],
        contents: { bytes_contents: [new TextEncoder().encode(marker)] },
      }],
    })).finish();
    const frame = new Uint8Array(5 + bytes.byteLength);
    new DataView(frame.buffer).setUint32(1, bytes.byteLength);
    frame.set(bytes, 5);
    req.write(frame);
    // The model yields until its items wait for the client a window ahead:
    // its stream parked.
    await waitFor(async () => (await status()).workers[0].parked === 1, {
      message: "the model's stream to be parked",
    });
    await gw.reload({
      grpc: { port: 0 },
      token: T2,
      limits: { streamIdleTimeout: 600_000 },
    });
    await waitFor(() => exists(marker), {
      message: "the model's generator to be closed",
    });
    await waitFor(async () => {
      const w = (await status()).workers[0];
      return w.inFlight === 0 && w.parked === 0;
    }, { message: "the worker to be free" });
    await waitFor(
      async () =>
        /^pyproxy_requests_total\{model="ticker",status="401"\} 1$/m.test(
          await metrics(),
        ),
      { message: "the call to be counted as 401" },
    );
    assert.match(
      await metrics(),
      /^pyproxy_in_flight_requests\{model="ticker"\} 0$/m,
    );
    req.close();
    await closed;
  } finally {
    session.destroy();
  }
});

Deno.test("A token retired while its gRPC ModelStreamInfer's client reads nothing: the stream is reset (not left open), and the gateway's drain does not wait its grace for it", async () => {
  // The stream above, its client never reading: its UNAUTHENTICATED
  // trailers wait behind the answers it did not take, so the gateway resets
  // it (RETIRED_FLUSH_MS). Before, it stayed open for as long as its client
  // did, and a shutdown then waited its whole grace (60 s here) for it.
  await using dir = await tempDir("pyproxy-token-streams-test-");
  const marker = `${dir.path}/closed`;
  const config = {
    token: [GRPC_TOKEN, T2],
    limits: { streamIdleTimeout: 600_000, shutdownGrace: 60_000 },
  };
  await using gw = await rawGrpcGateway(GRPC_TOKEN, {
    "ticker.py": GRPC_BIG_TICKER,
  }, config);
  const headers = { authorization: `Bearer ${T2}` };
  const status = async () =>
    await (await gw.fetch("/v1/status", { headers })).json();
  // A client whose HTTP/2 windows are 0: no answer's byte reaches it.
  const session = http2.connect(`http://${gw.grpcTarget}`, {
    settings: { initialWindowSize: 0 },
  });
  session.on("error", () => {});
  try {
    const req = session.request({
      ":method": "POST",
      ":path": "/inference.GRPCInferenceService/ModelStreamInfer",
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${GRPC_TOKEN}`,
    });
    req.on("error", () => {});
    const closed = new Promise<number>((resolve) =>
      req.once("close", () => resolve(req.rstCode))
    );
    const message = tritonProto().lookupType("inference.ModelInferRequest");
    const bytes = message.encode(message.create({
      model_name: "ticker",
      id: "t",
      inputs: [{
        name: "marker",
        datatype: "BYTES",
        shape: [],
        contents: { bytes_contents: [new TextEncoder().encode(marker)] },
      }],
    })).finish();
    const frame = new Uint8Array(5 + bytes.byteLength);
    new DataView(frame.buffer).setUint32(1, bytes.byteLength);
    frame.set(bytes, 5);
    req.write(frame);
    await waitFor(async () => (await status()).workers[0].parked === 1, {
      message: "the model's stream to be parked",
    });
    await gw.reload({
      grpc: { port: 0 },
      token: T2,
      limits: config.limits,
    });
    // The client still reads nothing: the server ends the stream itself.
    const code = await within(closed, "the retired gRPC stream");
    assert.equal(code, http2.constants.NGHTTP2_CANCEL);
    await waitFor(() => exists(marker), {
      message: "the model's generator to be closed",
    });
    // Nothing left for the drain to wait for (the session is still open).
    const t0 = performance.now();
    await gw.shutdown();
    console.log(`shutdown took ${Math.round(performance.now() - t0)} ms`);
  } finally {
    session.destroy();
  }
});

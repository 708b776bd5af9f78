import assert from "node:assert/strict";
import {
  SseReader,
  startGateway,
  until,
  withLogs,
} from "./_gateway_harness.ts";
import { countAbortListeners } from "./_abort_listeners.ts";
import { waitFor } from "./_harness.ts";

const TOKEN = "eval-routes-test-token-0123456789";

Deno.test("evalRoutes stream an eval's output without a Promise.race per output event against the stop and the token's retirement", async () => {
  // Before: each event raced promises as long-lived as the stream, each race
  // leaving a reaction on them until the stream ended (as the model streams'
  // did: bench/sse_streams.ts).
  await using gw = await startGateway({ token: TOKEN, allowEval: true });
  const race = Promise.race;
  let races = 0;
  Promise.race = function (this: PromiseConstructor, values: unknown[]) {
    races++;
    return race.call(this, values);
  } as typeof race;
  let output: Array<{ data: unknown }>;
  try {
    const res = await gw.fetch("/v1/eval", {
      method: "POST",
      body: JSON.stringify({
        code: "import time\nfor i in range(100):\n" +
          "    print(i, flush=True)\n    time.sleep(0.005)\n7",
      }),
    });
    assert.equal(res.status, 200);
    const events = await new SseReader(res.body!).all();
    assert.deepEqual(events.at(-1), { event: "result", data: { value: 7 } });
    output = events.filter((e) => e.event === "output");
  } finally {
    Promise.race = race;
  }
  assert.equal(
    output.map((e) => (e.data as { data: string }).data).join(""),
    Array.from({ length: 100 }, (_, i) => `${i}\n`).join(""),
  );
  assert.ok(output.length >= 20, `${output.length} output events`);
  assert.ok(
    races < output.length / 4,
    `${races} races, ${output.length} events`,
  );
});

Deno.test("evalRoutes let go of an eval's stop and retirement listeners when its client leaves while the code prints nothing", async () => {
  // Before: the event stream's generator waited for the next output (or the
  // result) with nothing to wake it when the client left, so each client
  // gone from a quiet eval kept its listeners on the gateway's stop signal
  // (and its replay reader) until the code printed again or ended.
  // No grace: the shutdown at the end stops the still sleeping code at once
  // (with the harness's 2 s, the test waited them out for nothing it checks).
  await using gw = await startGateway({
    token: TOKEN,
    allowEval: true,
    limits: { shutdownGrace: 0 },
  });
  using listeners = countAbortListeners();
  const res = await gw.fetch("/v1/eval", {
    method: "POST",
    body: JSON.stringify({
      code: "import time\nprint('started', flush=True)\ntime.sleep(30)\n7",
    }),
  });
  assert.equal(res.status, 200);
  const id = res.headers.get("x-atom-id")!;
  const events = new SseReader(res.body!);
  assert.equal((await events.next())?.event, "atom");
  assert.equal((await events.next())?.event, "output");
  // Replays of it by clients that leave while the code sleeps.
  for (let i = 0; i < 5; i++) {
    const replay = await gw.fetch(`/v1/eval/${id}/events`);
    assert.equal(replay.status, 200);
    const reader = new SseReader(replay.body!);
    assert.equal((await reader.next())?.event, "atom");
    assert.equal((await reader.next())?.event, "output");
    await reader.cancel();
  }
  await events.cancel();
  assert.ok(listeners.peak >= 2, `${listeners.peak} listeners at most`);
  await until(
    () => Promise.resolve(listeners.held === 0),
    `the listeners let go (${listeners.held} held)`,
  );
});

/** Reads `conn` up to the end of a chunked body; returns its last `max` characters. */
async function tailOfChunked(conn: Deno.Conn, max = 4000): Promise<string> {
  const buffer = new Uint8Array(1 << 16);
  const decoder = new TextDecoder();
  let tail = "";
  while (!tail.endsWith("\r\n0\r\n\r\n")) {
    const n = await conn.read(buffer);
    if (n === null) break;
    tail = (tail + decoder.decode(buffer.subarray(0, n), { stream: true }))
      .slice(-max);
  }
  return tail;
}

Deno.test("evalRoutes end an eval stream whose client takes no event for limits.streamIdleTimeout with a 408 StreamIdleError after the events not taken, counted and logged once, and its code runs on instead of waiting for the client", async () => {
  // Before: the stream's reader, attached and not pulled, held back the
  // output's acknowledgements, so the printing code waited for the client
  // until its timeout (measured with serve: 26 000 lines of 200 characters
  // printed in 2 s, then 28 s blocked, then a 504), and the stream stayed
  // open and held (a drain waited for it) as long as the connection.
  await withLogs(async (records) => {
    await using gw = await startGateway({
      token: TOKEN,
      allowEval: true,
      limits: { streamIdleTimeout: 300, streamKeepAlive: 100 },
    });
    const count = `${gw.dir}/count`;
    const code = "import os\ncount = " + JSON.stringify(count) +
      "\nfor i in range(300):\n" +
      "    with open(count + '.tmp', 'w') as f:\n        f.write(str(i))\n" +
      "    os.replace(count + '.tmp', count)\n" +
      "    print('x' * 100000, flush=True)\n";
    const body = JSON.stringify({ code });
    const { port } = new URL(gw.url);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: +port });
    try {
      await conn.write(
        new TextEncoder().encode(
          `POST /v1/eval HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
            `Authorization: Bearer ${TOKEN}\r\n` +
            `Content-Type: application/json\r\n` +
            `Content-Length: ${
              new TextEncoder().encode(body).length
            }\r\n\r\n${body}`,
        ),
      );
      const head = new Uint8Array(64);
      await conn.read(head);
      assert.match(new TextDecoder().decode(head), /^HTTP\/1\.1 200/);
      // The client reads nothing more: its socket and the gateway's
      // buffers fill, then the code runs on to its end.
      await waitFor(
        async () => await Deno.readTextFile(count).then(Number, () => 0) > 0,
      );
      await waitFor(
        async () =>
          await Deno.readTextFile(count).then(Number, () => 0) === 299,
        { message: "the eval's code to run to its end", timeout: 20_000 },
      );
      const metrics = await (await gw.fetch("/metrics")).text();
      assert.match(metrics, /^pyproxy_eval_streams_idle_total 1$/m);
      const lines = records.filter((r) =>
        String(r.message.join("")).includes("An eval stream")
      );
      assert.equal(lines.length, 1);
      // The events it had not taken, then the idle bound's.
      const tail = await tailOfChunked(conn);
      const last = tail.lastIndexOf("event: error\ndata: ");
      assert.ok(last >= 0, JSON.stringify(tail.slice(-300)));
      const data = JSON.parse(
        tail.slice(last + 19, tail.indexOf("\n", last + 19)),
      );
      assert.equal(data.status, 408);
      assert.equal(data.type, "StreamIdleError");
      assert.match(
        data.message,
        /^Cannot read eval stream: no event taken for 300 ms \(the gateway's limits\.streamIdleTimeout, serve --stream-idle-timeout\); the eval was not stopped: resume its events with GET \/v1\/eval\/[-0-9a-f]+\/events$/,
      );
      // Its eval ended as it would have for a reader: its result resumable.
      const id = /\/v1\/eval\/([-0-9a-f]+)\/events/.exec(data.message)![1];
      const replay = await gw.fetch(`/v1/eval/${id}/events`, {
        headers: { "last-event-id": "100000" },
      });
      assert.deepEqual((await new SseReader(replay.body!).all()).at(-1), {
        event: "result",
        data: { value: null },
      });
    } finally {
      conn.close();
    }
  });
});

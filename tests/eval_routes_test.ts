import assert from "node:assert/strict";
import { SseReader, startGateway, until } from "./_gateway_harness.ts";
import { countAbortListeners } from "./_abort_listeners.ts";

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
  await using gw = await startGateway({ token: TOKEN, allowEval: true });
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

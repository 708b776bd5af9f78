import assert from "node:assert/strict";
import { sseResponse } from "../src/gateway/sse.ts";

Deno.test("sseResponse sets no timer per event: one keep-alive timer per stream, re-armed", async () => {
  // Before: a setTimeout, a promise and a Promise.race per pull (10^4 items
  // a second per stream made as many timers: 10.5 µs of the gateway's CPU
  // an item at 200 streams, 3.9 after both changes; bench/sse_streams.ts).
  async function* events() {
    for (let i = 0; i < 1000; i++) yield { event: "item", id: i, data: i };
  }
  const set = globalThis.setTimeout;
  let timers = 0;
  globalThis.setTimeout = ((...args: Parameters<typeof set>) => {
    timers++;
    return set(...args);
  }) as typeof set;
  let text: string;
  try {
    text = await sseResponse(events(), { keepAliveMs: 60_000 }).text();
  } finally {
    globalThis.setTimeout = set;
  }
  assert.equal(text.split("event: item\n").length - 1, 1000);
  assert.ok(timers <= 2, `${timers} timers for 1000 events`);
});

Deno.test("sseResponse sends a keep-alive comment while its source is silent", async () => {
  const gate = Promise.withResolvers<void>();
  async function* events() {
    yield { event: "item", data: 1 };
    await gate.promise;
    yield { event: "item", data: 2 };
  }
  const res = sseResponse(events(), { keepAliveMs: 100 });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes(": keep-alive")) {
    text += (await reader.read()).value;
  }
  // The item first, then the comment (the source silent for 100 ms).
  assert.match(text, /^event: item\ndata: 1\n\n(: keep-alive\n\n)+$/);
  gate.resolve();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    text += value;
  }
  assert.match(text, /event: item\ndata: 2\n\n$/);
});

Deno.test("sseResponse ends a stream whose client takes no event for idleTimeout: the events not taken, the idle event, the source returned", async () => {
  let returned = false;
  async function* events() {
    try {
      for (let i = 0;; i++) yield { event: "item", id: i, data: i };
    } finally {
      returned = true;
    }
  }
  let idle = 0;
  const expired = Promise.withResolvers<void>();
  const res = sseResponse(events(), {
    keepAliveMs: 20,
    idleTimeout: 50,
    onIdle: () => {
      idle++;
      expired.resolve();
      return { event: "error", data: { type: "idle" } };
    },
  });
  // Nobody reads the body: its first event waits for the client.
  await expired.promise;
  await Promise.resolve();
  assert.equal(returned, true);
  assert.equal(
    await res.text(),
    'event: item\nid: 0\ndata: 0\n\nevent: error\ndata: {"type":"idle"}\n\n',
  );
  assert.equal(idle, 1);
});

Deno.test("sseResponse ends an idle stream without an event when onIdle gives none, and never one whose client takes its events", async () => {
  async function* one() {
    yield { event: "result", data: 1 };
  }
  const expired = Promise.withResolvers<void>();
  const quiet = sseResponse(one(), {
    keepAliveMs: 20,
    idleTimeout: 50,
    onIdle: () => void expired.resolve(),
  });
  await expired.promise;
  assert.equal(await quiet.text(), "event: result\ndata: 1\n\n");
  // A client that takes each event as it comes, slower than idleTimeout
  // between two: a pull waits for the source meanwhile.
  async function* slow() {
    for (let i = 0; i < 3; i++) {
      await new Promise((resolve) => setTimeout(resolve, 80));
      yield { data: i };
    }
  }
  let idle = 0;
  const res = sseResponse(slow(), {
    keepAliveMs: 20,
    idleTimeout: 50,
    onIdle: () => (idle++, undefined),
  });
  const text = (await res.text()).replaceAll(": keep-alive\n\n", "");
  assert.equal(idle, 0);
  assert.equal(text, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
});

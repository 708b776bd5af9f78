import assert from "node:assert/strict";
import { droppedSubscriberLogger } from "../src/gateway/app.ts";
import { type ChannelEvent, ChannelHub } from "../src/gateway/channels.ts";
import { channelsPlugin } from "../src/gateway/channels_plugin.ts";
import { sseResponse } from "../src/gateway/sse.ts";
import { recordingLogger } from "./_harness.ts";

async function take(
  sub: AsyncIterator<ChannelEvent>,
  n: number,
): Promise<ChannelEvent[]> {
  const out: ChannelEvent[] = [];
  for (let i = 0; i < n; i++) {
    const r = await sub.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

const dataOf = (events: ChannelEvent[]) =>
  events.map((e) => (e.type === "message" ? e.message.data : e.type));

Deno.test("ChannelHub delivers every message to every subscriber in order", async () => {
  const hub = new ChannelHub();
  const a = hub.subscribe("scores");
  const b = hub.subscribe("scores");
  const other = hub.subscribe("other");
  for (let i = 1; i <= 3; i++) {
    assert.equal(hub.publish("scores", { i }).delivered, 2);
  }
  assert.deepEqual(dataOf(await take(a, 3)), [{ i: 1 }, { i: 2 }, { i: 3 }]);
  assert.deepEqual(dataOf(await take(b, 3)), [{ i: 1 }, { i: 2 }, { i: 3 }]);
  assert.equal(other.buffered, 0);
  const info = hub.list().find((c) => c.name === "scores");
  assert.equal(info?.subscribers, 2);
  assert.equal(info?.published, 3);
  hub.close();
});

Deno.test("ChannelHub drops a slow subscriber with a notice and keeps serving the fast one", async () => {
  const hub = new ChannelHub({ bufferSize: 4, historySize: 2 });
  const slow = hub.subscribe("feed");
  const fast = hub.subscribe("feed");
  const received: unknown[] = [];
  const reading = (async () => {
    for await (const ev of fast) {
      if (ev.type === "message") received.push(ev.message.data);
      if (received.length === 10) break;
    }
  })();
  for (let i = 0; i < 10; i++) {
    hub.publish("feed", i);
    await Promise.resolve();
  }
  await reading;
  assert.deepEqual(received, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(slow.closed, true);
  // The backlog is freed at once: only the notice is left.
  assert.equal(slow.buffered, 1);
  const rest = await take(slow, 5);
  assert.equal(rest.length, 1);
  assert.equal(rest[0]?.type, "dropped");
  assert.match((rest[0] as { reason: string }).reason, /too slow/);
  assert.equal((await slow.next()).done, true);
  const info = hub.list()[0]!;
  assert.equal(info.dropped, 1);
  assert.equal(info.subscribers, 0); // the fast one ended its loop
  hub.close();
});

Deno.test("ChannelHub counts and reports subscribers dropped as too slow, not those ended by close()", () => {
  const reports: Array<[string, string]> = [];
  const hub = new ChannelHub({
    bufferSize: 2,
    historySize: 0,
    onDrop: (channel, reason) => {
      reports.push([channel, reason]);
      throw new Error("a reporter's bug");
    },
  });
  hub.subscribe("feed");
  const byRoute = hub.subscribe("other");
  hub.subscribe("idle");
  for (let i = 0; i < 3; i++) hub.publish("feed", i); // the third overflows
  byRoute.drop("subscriber too slow: more than 4 bytes unsent");
  byRoute.drop("again"); // once only
  assert.equal(hub.droppedCount, 2);
  assert.deepEqual(reports, [
    ["feed", "subscriber too slow: more than 2 messages buffered"],
    ["other", "subscriber too slow: more than 4 bytes unsent"],
  ]);
  const dropped = Object.fromEntries(
    hub.list().map((c) => [c.name, c.dropped]),
  );
  assert.deepEqual(dropped, { feed: 1, other: 1, idle: 0 });
  hub.close(); // ends "idle" with a notice: shutting down, not too slow
  assert.equal(hub.droppedCount, 2);
  assert.equal(reports.length, 2);
});

Deno.test("droppedSubscriberLogger warns with the channel and the reason", () => {
  const { logger, entries } = recordingLogger();
  droppedSubscriberLogger(logger)("feed", "subscriber too slow: x");
  assert.deepEqual(entries, [[
    "warn",
    "Dropped a subscriber of channel {channel}: {reason}",
    { channel: "feed", reason: "subscriber too slow: x" },
  ]]);
});

Deno.test("ChannelHub keeps a bounded history and resumes after a sequence number", async () => {
  const hub = new ChannelHub({ historySize: 3 });
  for (let i = 1; i <= 5; i++) hub.publish("news", `m${i}`);
  assert.deepEqual(hub.list()[0]!.history.map((m) => m.seq), [3, 4, 5]);
  const sub = hub.subscribe("news", { afterSeq: 3 });
  hub.publish("news", "m6");
  assert.deepEqual(dataOf(await take(sub, 3)), ["m4", "m5", "m6"]);
  hub.close();
});

Deno.test("ChannelHub replays the whole history to a subscriber resuming after a seq beyond the channel's last (its numbering started again)", async () => {
  // A page that saw seq 900 before the gateway restarted resumes with
  // Last-Event-ID 900: the messages published since (seq 1 and 2) are new to
  // it, and were never replayed.
  const hub = new ChannelHub({ historySize: 10 });
  hub.publish("news", "after restart 1");
  hub.publish("news", "after restart 2");
  const sub = hub.subscribe("news", { afterSeq: 900 });
  hub.publish("news", "live");
  assert.deepEqual(dataOf(await take(sub, 3)), [
    "after restart 1",
    "after restart 2",
    "live",
  ]);
  const caughtUp = hub.subscribe("news", { afterSeq: 3 });
  hub.publish("news", "next");
  assert.deepEqual(dataOf(await take(caughtUp, 1)), ["next"]);
  hub.close();
});

Deno.test("ChannelHub tells a resume point of another epoch as a restart, even once the new numbering passed its seq: the whole history, restarted true", async () => {
  const hub = new ChannelHub({ historySize: 10 });
  for (let i = 1; i <= 5; i++) hub.publish("news", `m${i}`);
  const epoch = hub.list()[0]!.epoch;
  assert.match(epoch, /^[0-9a-f]{8}$/);
  const other = hub.subscribe("news", { afterSeq: 3, afterEpoch: "0ld3p0ch" });
  assert.equal(other.restarted, true);
  assert.equal(other.epoch, epoch);
  assert.deepEqual(
    (await take(other, 5)).map((e) =>
      e.type === "message" ? [e.message.seq, e.message.epoch] : e
    ),
    [1, 2, 3, 4, 5].map((seq) => [seq, epoch]),
  );
  const same = hub.subscribe("news", { afterSeq: 3, afterEpoch: epoch });
  assert.equal(same.restarted, false);
  assert.deepEqual(dataOf(await take(same, 2)), ["m4", "m5"]);
  // Beyond the last seq, without an epoch: a restart too.
  assert.equal(hub.subscribe("news", { afterSeq: 900 }).restarted, true);
  assert.equal(hub.subscribe("news", { afterSeq: 3 }).restarted, false);
  hub.close();
});

Deno.test("ChannelHub refuses invalid channel names", () => {
  const hub = new ChannelHub();
  assert.throws(() => hub.publish("bad name", 1), TypeError);
  assert.throws(() => hub.subscribe("x".repeat(129)), TypeError);
  assert.equal(ChannelHub.isValidName("scores.v1:eu-west_2"), true);
});

Deno.test("ChannelHub forgets the least recently used idle channel beyond maxChannels", () => {
  const hub = new ChannelHub({ maxChannels: 2 });
  const sub = hub.subscribe("kept");
  hub.publish("a", 1);
  hub.publish("b", 1);
  assert.deepEqual(hub.list().map((c) => c.name).sort(), ["b", "kept"]);
  sub.close();
});

Deno.test("ChannelHub forgets an idle channel without history before one with, past maxChannels: subscriptions to new names keep no one's history from being forgotten", () => {
  const hub = new ChannelHub({ maxChannels: 3 });
  hub.publish("acme", { n: 1 });
  const epoch = hub.list()[0]!.epoch;
  // A client subscribing to one new name after another (each left at once).
  for (let i = 0; i < 10; i++) hub.subscribe(`flood-${i}`).close();
  const acme = hub.list().find((c) => c.name === "acme");
  assert.equal(acme?.epoch, epoch);
  assert.deepEqual(acme?.history.map((m) => m.data), [{ n: 1 }]);
  assert.equal(hub.list().length, 3);
  // With no empty one left, the least recently used idle one goes.
  hub.publish("b", 1);
  hub.publish("c", 1);
  hub.publish("d", 1);
  assert.deepEqual(hub.list().map((c) => c.name).sort(), ["b", "c", "d"]);
});

Deno.test("ChannelHub.close ends subscribers with a dropped notice and refuses new ones; a publish then reaches no one", async () => {
  const hub = new ChannelHub();
  const sub = hub.subscribe("x");
  const pending = sub.next();
  hub.close("server shutting down");
  assert.deepEqual((await pending).value, {
    type: "dropped",
    reason: "server shutting down",
  });
  assert.throws(() => hub.subscribe("x"), TypeError);
  // A call in flight in the drain's grace still publishes: to no one.
  assert.equal(hub.publish("x", { a: 1 }).delivered, 0);
});

Deno.test("channelsPlugin publishes from the publish host handler", async () => {
  const hub = new ChannelHub();
  const plugin = channelsPlugin({ hub, maxMessageBytes: 64 });
  const publish = plugin.handlers!.publish!;
  const sub = hub.subscribe("events");
  const call = {} as Parameters<typeof publish>[1];
  const answer = await publish({ channel: "events", msg: { a: 1 } }, call);
  const [got] = await take(sub, 1);
  assert.match(String((answer as { epoch?: unknown }).epoch), /^[0-9a-f]{8}$/);
  assert.deepEqual(answer, {
    channel: "events",
    seq: 1,
    // The numbering the subscribers see, as POST /v1/channels/{name} answers.
    epoch: got!.type === "message" ? got!.message.epoch : undefined,
    delivered: 1,
  });
  assert.deepEqual(dataOf([got!]), [{ a: 1 }]);
  assert.throws(() => publish({ msg: 1 }, call), /channel must be a string/);
  assert.throws(
    () => publish({ channel: "events", msg: "x".repeat(100) }, call),
    /over the limit of 64/,
  );
  hub.close();
});

Deno.test("sseResponse streams events and closes the source when the client cancels", async () => {
  const hub = new ChannelHub();
  const sub = hub.subscribe("s");
  async function* events() {
    for await (const ev of sub) {
      if (ev.type === "message") {
        yield { event: "message", id: ev.message.seq, data: ev.message.data };
      }
    }
  }
  const res = sseResponse(events());
  assert.equal(
    res.headers.get("content-type"),
    "text/event-stream; charset=utf-8",
  );
  hub.publish("s", { x: 1 });
  const reader = res.body!.getReader();
  const { value } = await reader.read();
  assert.equal(
    new TextDecoder().decode(value),
    'event: message\nid: 1\ndata: {"x":1}\n\n',
  );
  await reader.cancel();
  assert.equal(sub.closed, true);
  assert.equal(hub.list()[0]!.subscribers, 0);
});

Deno.test("ChannelHub bounds the histories of all channels together by maxHistoryBytes, oldest first", () => {
  const hub = new ChannelHub({ historySize: 50, maxHistoryBytes: 1000 });
  const big = "x".repeat(98); // JSON: 100 characters
  for (let c = 0; c < 4; c++) {
    for (let i = 0; i < 5; i++) hub.publish(`ch${c}`, big);
  }
  assert.equal(hub.historyBytes, 1000);
  // 20 published, 10 kept: the oldest channels lost theirs first.
  assert.deepEqual(
    hub.list().map((ch) => [ch.name, ch.history.length]),
    [["ch0", 0], ["ch1", 0], ["ch2", 5], ["ch3", 5]],
  );
  // A message larger than the budget is delivered but not kept.
  const sub = hub.subscribe("ch3");
  const { delivered } = hub.publish("ch3", "y".repeat(2000));
  assert.equal(delivered, 1);
  assert.equal(hub.list().find((ch) => ch.name === "ch3")!.history.length, 5);
  assert.equal(hub.historyBytes, 1000);
  // Many small messages on one channel: its historySize still applies, and the
  // bookkeeping stays bounded (the forgotten ones are not counted).
  for (let i = 0; i < 5000; i++) hub.publish("busy", i);
  assert.equal(hub.list().find((ch) => ch.name === "busy")!.history.length, 50);
  assert.ok(hub.historyBytes <= 1000);
  sub.close();
  hub.close();
});

Deno.test("ChannelHub drops a subscriber whose unread messages pass maxBufferBytes", async () => {
  const hub = new ChannelHub({ bufferSize: 100, maxBufferBytes: 250 });
  const slow = hub.subscribe("news");
  const big = "x".repeat(98);
  assert.equal(hub.publish("news", big).delivered, 1); // taken by nobody yet: buffered
  assert.equal(hub.publish("news", big).delivered, 1);
  assert.equal(hub.publish("news", big).delivered, 0); // 300 > 250: dropped
  const events = [];
  for await (const ev of slow) events.push(ev);
  assert.deepEqual(events.map((e) => e.type), ["dropped"]);
  assert.match(
    (events[0] as { reason: string }).reason,
    /more than 250 bytes of messages buffered/,
  );
  // A reader that keeps up is never dropped, whatever the sizes.
  const fast = hub.subscribe("news");
  for (let i = 0; i < 10; i++) {
    hub.publish("news", big);
    assert.equal((await fast.next()).value?.type, "message");
  }
  fast.close();
  hub.close();
});

Deno.test("ChannelHub writes bytes published from TypeScript as base64 for subscribers, as a model's, without changing the caller's value", () => {
  const hub = new ChannelHub({ historySize: 4 });
  const img = new Uint8Array([1, 2, 3]);
  const buf = new Uint8Array([255]).buffer;
  const { message } = hub.publish("frames", { img, buf, n: 10n ** 20n });
  assert.equal(
    JSON.stringify(hub.wireData(message)),
    '{"img":"AQID","buf":"/w==","n":100000000000000000000}',
  );
  // The stored message is the caller's, untouched.
  assert.equal((message.data as { img: Uint8Array }).img, img);
  assert.equal(JSON.stringify(img), '{"0":1,"1":2,"2":3}');
  // Only one scan for messages without bytes: the same value goes on.
  const plain = { x: {} };
  assert.equal(hub.wireData(hub.publish("frames", plain).message), plain);
  hub.close();
});

Deno.test("ChannelHub writes all the bytes of a message as base64, past the 256 containers a host handler's result is looked into", () => {
  const hub = new ChannelHub({ historySize: 4 });
  // 300 frames with bytes each, and bytes after 300 empty objects.
  const frames = Array.from({ length: 300 }, (_, i) => ({
    i,
    img: new Uint8Array([1, 2, 3]),
  }));
  const text = JSON.stringify(hub.wireData(hub.publish("f", frames).message));
  assert.equal(
    text,
    JSON.stringify(frames.map(({ i }) => ({ i, img: "AQID" }))),
  );
  const late = {
    list: Array.from({ length: 300 }, () => ({})),
    img: new Uint8Array([255]),
  };
  assert.equal(
    JSON.stringify(hub.wireData(hub.publish("f", late).message)),
    JSON.stringify({ list: late.list, img: "/w==" }),
  );
  hub.close();
});

Deno.test('ChannelHub publishes large bytes from TypeScript without writing them as JSON\'s {"0":…} first', () => {
  // 64 MB: as {"0":0,…} more text than a string holds (the publish failed
  // with a SerializationError after seconds of JSON.stringify).
  const hub = new ChannelHub({ historySize: 1, maxHistoryBytes: 2 ** 28 });
  const img = new Uint8Array(64 * 1024 * 1024);
  img[img.length - 1] = 255;
  const { message } = hub.publish("frames", { img });
  const text = JSON.stringify(hub.wireData(message));
  assert.equal(
    text.length,
    '{"img":""}'.length + Math.ceil(img.length / 3) * 4,
  );
  assert.ok(text.endsWith('AA/w=="}'));
  hub.close();
});

Deno.test("ChannelHub refuses NaN and infinities with a SerializationError naming the place, instead of publishing null", () => {
  const hub = new ChannelHub();
  for (
    const [data, message] of [
      [{ x: NaN }, /^Cannot publish: x is NaN \(JSON has no NaN/],
      [{ a: [1, Infinity] }, /^Cannot publish: a\[1\] is Infinity \(/],
      [-Infinity, /^Cannot publish: the message is -Infinity \(/],
    ] as const
  ) {
    assert.throws(() => hub.publish("news", data), (err: Error) => {
      assert.equal(err.name, "SerializationError");
      assert.match(err.message, message);
      return true;
    });
  }
  // Nothing published, no channel made; null itself is a message.
  assert.deepEqual(hub.list(), []);
  assert.equal(hub.publish("news", { x: null }).message.seq, 1);
});

Deno.test("ChannelHub replays the kept history to a resuming subscriber whatever its bytes: a replay larger than maxBufferBytes is no slow subscriber", async () => {
  // Before: the replay was pushed as live messages are, so a history larger
  // than a subscriber's maxBufferBytes (50 messages of 1 MiB, the body
  // limit, against 16 MiB) dropped the subscriber as too slow the moment it
  // resumed (a resume across a restart replays the whole history), and again
  // at each reconnect. Live messages after it are bounded as before.
  const drops: string[] = [];
  const hub = new ChannelHub({
    historySize: 10,
    maxBufferBytes: 1000,
    onDrop: (_channel, reason) => drops.push(reason),
  });
  const big = "x".repeat(400);
  for (let i = 1; i <= 5; i++) hub.publish("news", `${i}${big}`);
  const sub = hub.subscribe("news", { afterSeq: 0, afterEpoch: "0badc0de" });
  assert.equal(sub.restarted, true);
  const replayed = await take(sub, 5);
  assert.deepEqual(replayed.map((e) => e.type), Array(5).fill("message"));
  assert.deepEqual(drops, []);
  // Caught up: a live message is delivered; a backlog past the bound is not.
  hub.publish("news", "live");
  assert.deepEqual(dataOf(await take(sub, 1)), ["live"]);
  for (let i = 0; i < 5; i++) hub.publish("news", big);
  assert.equal(drops.length, 1);
  hub.close();
});

Deno.test("ChannelHub with tenantOf bounds each tenant's channels, subscribers and history bytes on their own, and channels of no tenant only by the hub's", () => {
  const hub = new ChannelHub({
    tenantOf: (name) => /^(a|b)\./.exec(name)?.[1],
    tenantMaxChannels: 2,
    tenantMaxSubscribers: 3,
    tenantMaxHistoryBytes: 100,
  });
  try {
    const a1 = hub.subscribe("a.1");
    hub.subscribe("a.2");
    assert.throws(() => hub.subscribe("a.3"), {
      name: "ChannelLimitError",
      code: "CHANNEL_LIMIT",
      details: { bound: "tenantMaxChannels", limit: 2 },
    });
    // Nothing made of the refused one.
    assert.deepEqual(hub.list().map((c) => c.name), ["a.1", "a.2"]);
    hub.subscribe("a.1");
    assert.throws(() => hub.subscribe("a.2"), {
      details: { bound: "tenantMaxSubscribers", limit: 3 },
    });
    // A closed subscription frees its place, and an idle channel its.
    a1.close();
    hub.subscribe("a.2").close();
    for (const sub of [0, 1, 2]) hub.subscribe(`b.${sub % 2}`);
    // No tenant's: the hub's bounds only.
    for (let i = 0; i < 10; i++) hub.subscribe(`news${i}`);
    // History: a's oldest go past its 100, b's and news's stay.
    hub.publish("b.0", "b");
    hub.publish("news0", "n");
    for (let i = 0; i < 10; i++) hub.publish("a.1", "x".repeat(28) + i);
    const byName = new Map(hub.list().map((c) => [c.name, c.history]));
    assert.deepEqual(byName.get("a.1")?.map((m) => m.seq), [8, 9, 10]);
    assert.equal(byName.get("b.0")?.length, 1);
    assert.equal(byName.get("news0")?.length, 1);
    assert.equal(hub.historyBytes, 3 * 31 + 3 + 3);
    // One larger than the share alone: delivered, not kept, and the
    // tenant's other history stays.
    hub.publish("a.1", "y".repeat(200));
    assert.deepEqual(
      hub.list().find((c) => c.name === "a.1")?.history.map((m) => m.seq),
      [8, 9, 10],
    );
    // A refused subscription makes no channel.
    hub.subscribe("a.1");
    assert.throws(() => hub.subscribe("a.9"), {
      details: { bound: "tenantMaxSubscribers", limit: 3 },
    });
    assert.ok(!hub.list().some((c) => c.name === "a.9"));
  } finally {
    hub.close();
  }
});

Deno.test("ChannelHub, full, forgets a tenant's own idle channel for its new one before another's older one", () => {
  const hub = new ChannelHub({
    maxChannels: 3,
    tenantOf: (name) => /^(a|b)\./.exec(name)?.[1],
  });
  try {
    hub.publish("b.old", 1);
    hub.publish("a.old", 1);
    hub.publish("news", 1);
    hub.publish("a.new", 1);
    assert.deepEqual(hub.list().map((c) => c.name).sort(), [
      "a.new",
      "b.old",
      "news",
    ]);
    // No tenant's channel: the least recently used, as before.
    hub.publish("other", 1);
    assert.deepEqual(hub.list().map((c) => c.name).sort(), [
      "a.new",
      "news",
      "other",
    ]);
  } finally {
    hub.close();
  }
});

Deno.test("ChannelHub's publishRefusal tells a tenant's new channel past its bound before a publish, and a publish with tenantBounds: false is held to none of the tenant's bounds", () => {
  const hub = new ChannelHub({
    tenantOf: (name) => /^(a|b)\./.exec(name)?.[1],
    tenantMaxChannels: 1,
    tenantMaxHistoryBytes: 100,
  });
  try {
    assert.equal(hub.publishRefusal("a.one"), undefined);
    const sub = hub.subscribe("a.one");
    // At its bound, all with subscribers: a new one is refused; an existing
    // one, another tenant's, no one's, or the operator's, is not.
    assert.equal(hub.publishRefusal("a.two")?.name, "ChannelLimitError");
    assert.throws(() => hub.publish("a.two", 1), { name: "ChannelLimitError" });
    assert.equal(hub.publishRefusal("a.one"), undefined);
    assert.equal(hub.publishRefusal("b.one"), undefined);
    assert.equal(hub.publishRefusal("news"), undefined);
    assert.equal(
      hub.publishRefusal("a.two", { tenantBounds: false }),
      undefined,
    );
    hub.publish("a.one", "mine");
    // The operator's messages (60 characters each) go past a's 100 without
    // pushing a's own out, and are forgotten by the hub's bounds only.
    const big = "x".repeat(58);
    for (let i = 0; i < 5; i++) {
      hub.publish("a.two", big, { tenantBounds: false });
    }
    const history = new Map(
      hub.list().map((ch) => [ch.name, ch.history.map((m) => m.data)]),
    );
    assert.deepEqual(history.get("a.one"), ["mine"]);
    assert.equal(history.get("a.two")?.length, 5);
    // a's own publishes still count: its 100 hold one more of 60, not two.
    hub.publish("a.one", big);
    hub.publish("a.one", big);
    assert.deepEqual(
      hub.list().find((ch) => ch.name === "a.one")?.history.map((m) => m.data),
      [big],
    );
    sub.close();
  } finally {
    hub.close();
  }
});

Deno.test("ChannelHub, full of channels with subscribers, has the holder of the most give one up (its subscribers dropped with a notice) to a tenant or the operator holding fewer: N holders keep maxChannels / N each", async () => {
  const hub = new ChannelHub({
    maxChannels: 10,
    tenantMaxChannels: 5,
    tenantOf: (name) => /^([abc])\./.exec(name)?.[1],
  });
  try {
    const subs = new Map<string, ReturnType<ChannelHub["subscribe"]>>();
    const subscribe = (name: string) => subs.set(name, hub.subscribe(name));
    // a and b at their share take the whole hub.
    for (const t of ["a", "b"]) {
      for (let i = 0; i < 5; i++) subscribe(`${t}.${i}`);
    }
    // c: room is made from the largest holder, down to an even share.
    subscribe("c.0");
    subscribe("c.1");
    subscribe("c.2");
    assert.throws(() => hub.subscribe("c.3"), RangeError, "c at its share");
    const count = (t: string) =>
      hub.list().filter((ch) => ch.name.startsWith(`${t}.`)).length;
    assert.deepEqual([count("a"), count("b"), count("c")], [3, 4, 3]);
    // The dropped subscribers were told (a's least recently used first).
    const dropped = (await subs.get("a.0")!.next()).value;
    assert.equal(dropped?.type, "dropped");
    assert.match(
      (dropped as { reason: string }).reason,
      /^channel forgotten: the hub's 10 channels all have subscribers/,
    );
    // The operator's channel too (before: refused, as c's were).
    subscribe("news");
    assert.deepEqual([count("a"), count("b"), count("c")], [3, 3, 3]);
  } finally {
    hub.close();
  }
});

Deno.test("ChannelHub past maxHistoryBytes forgets the history of the holder of the most first, not the oldest of anyone's: a small tenant's and the operator's messages stay", () => {
  const hub = new ChannelHub({
    maxHistoryBytes: 1000,
    // Above the hub's: the hub's bound is the one reached.
    tenantMaxHistoryBytes: 5000,
    tenantOf: (name) => /^([ab])\./.exec(name)?.[1],
  });
  try {
    hub.publish("b.keep", { b: 1 });
    hub.publish("news", { op: 1 });
    const big = "x".repeat(90);
    for (let i = 0; i < 30; i++) hub.publish("a.flood", { i, big });
    const history = new Map(
      hub.list().map((ch) => [ch.name, ch.history.map((m) => m.data)]),
    );
    assert.deepEqual(history.get("b.keep"), [{ b: 1 }]);
    assert.deepEqual(history.get("news"), [{ op: 1 }]);
    // a's newest, within what the others leave of the 1000.
    const flood = history.get("a.flood") as { i: number }[];
    assert.equal(flood.at(-1)?.i, 29);
    assert.ok(flood.length >= 8 && flood.length < 11, String(flood.length));
    assert.ok(hub.historyBytes <= 1000);
  } finally {
    hub.close();
  }
});

Deno.test("ChannelHub's defaults: 10 tenants at their 100 channels with subscribers fill the hub's 1000, and an 11th tenant and the operator still get an even share (1000 / 12 each at least)", () => {
  const ids = Array.from({ length: 11 }, (_, i) => `t${i}`);
  const hub = new ChannelHub({
    tenantOf: (name) => /^(t\d+)\./.exec(name)?.[1],
  });
  try {
    const fill = (prefix: string, max: number): number => {
      let n = 0;
      try {
        while (n < max) hub.subscribe(`${prefix}${n++}`);
      } catch (err) {
        if (!(err instanceof RangeError)) throw err;
        n--;
      }
      return n;
    };
    for (const id of ids.slice(0, 10)) assert.equal(fill(`${id}.c`, 100), 100);
    const late = fill("t10.c", 100);
    const operator = fill("news", 1000);
    const held = (t: string) =>
      hub.list().filter((ch) => ch.name.startsWith(`${t}.`)).length;
    const shares = ids.map(held);
    assert.equal(hub.list().length, 1000);
    assert.ok(late >= Math.floor(1000 / 12), `the 11th tenant got ${late}`);
    assert.ok(
      operator >= Math.floor(1000 / 12),
      `the operator got ${operator}`,
    );
    assert.ok(shares.every((n) => n >= Math.floor(1000 / 12)), String(shares));
  } finally {
    hub.close();
  }
});

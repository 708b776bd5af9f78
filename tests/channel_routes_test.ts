// The channel routes' resume across a restart of the gateway (a real one, two
// processes' worth: one gateway stopped, another started): a client that sent
// the epoch of its resume point learns that the numbering started again, even
// once the new numbering passed its seq; one that sent none reads what it did.
import assert from "node:assert/strict";
import { SseReader, startGateway } from "./_gateway_harness.ts";
import { webSocketProtocols } from "../src/gateway/web_socket_protocols.ts";

/** Publishes `n` messages `${prefix}1`... to `news`; returns their answers. */
async function publish(
  gw: Awaited<ReturnType<typeof startGateway>>,
  prefix: string,
  n: number,
) {
  const out = [];
  for (let i = 1; i <= n; i++) {
    const res = await gw.fetch("/v1/channels/news", {
      method: "POST",
      body: JSON.stringify(`${prefix}${i}`),
    });
    out.push(await res.json());
  }
  return out;
}

/** The first `n` events of an SSE subscription, the stream then cancelled. */
async function events(res: Response, n: number) {
  assert.equal(res.status, 200);
  const reader = new SseReader(res.body!);
  const out = [];
  try {
    for (let i = 0; i < n; i++) out.push(await reader.next());
  } finally {
    await reader.cancel();
  }
  return out;
}

/** A WebSocket's first `n` frames, parsed; the socket then closed. */
function frames(url: string, protocols: string[], n: number) {
  return new Promise<Array<Record<string, unknown>>>((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    const out: Array<Record<string, unknown>> = [];
    ws.onmessage = (e) => {
      out.push(JSON.parse(e.data));
      if (out.length === n) ws.close();
    };
    ws.onclose = () => resolve(out);
    ws.onerror = () => reject(new Error("the WebSocket failed"));
  });
}

Deno.test("channelRoutes: a resume point of another epoch (the gateway restarted, its new numbering past the client's seq) replays the whole history after a restart marker; without an epoch, as before", async () => {
  let epoch: string;
  {
    await using before = await startGateway();
    const published = await publish(before, "old", 3);
    epoch = published[2].epoch;
    assert.match(epoch, /^[0-9a-f]{8}$/);
    // ?epoch= (empty: none known yet) asks for ids that carry it.
    const seen = await events(
      await before.fetch("/v1/channels/news?epoch=&lastEventId=1"),
      2,
    );
    assert.deepEqual(seen.map((e) => [e?.event, e?.id, e?.data]), [
      ["message", `${epoch}:2`, "old2"],
      ["message", `${epoch}:3`, "old3"],
    ]);
  }
  await using after = await startGateway();
  // The new numbering passes the client's seq 3.
  const published = await publish(after, "new", 5);
  const newEpoch = published[0].epoch;
  assert.notEqual(newEpoch, epoch);
  assert.deepEqual(published[4], {
    channel: "news",
    seq: 5,
    epoch: newEpoch,
    delivered: 0,
  });
  // Its Last-Event-ID as the EventSource sends it back: before, the whole
  // new numbering's 1 to 3 were missed without a word (4 and 5 replayed).
  const resumed = await events(
    await after.fetch("/v1/channels/news", {
      headers: { "last-event-id": `${epoch}:3` },
    }),
    6,
  );
  assert.deepEqual(resumed.map((e) => [e?.event, e?.id, e?.data]), [
    ["restart", `${newEpoch}:0`, { channel: "news", epoch: newEpoch }],
    ...[1, 2, 3, 4, 5].map((i) => ["message", `${newEpoch}:${i}`, `new${i}`]),
  ]);
  // Of the same epoch: a plain resume, no marker.
  const same = await events(
    await after.fetch(`/v1/channels/news?lastEventId=${newEpoch}:4`),
    1,
  );
  assert.deepEqual(same.map((e) => [e?.event, e?.id, e?.data]), [
    ["message", `${newEpoch}:5`, "new5"],
  ]);
  // An old client (a plain seq, no epoch): the ids and events of before.
  const old = await events(
    await after.fetch("/v1/channels/news", {
      headers: { "last-event-id": "3" },
    }),
    2,
  );
  assert.deepEqual(old.map((e) => [e?.event, e?.id, e?.data]), [
    ["message", "4", "new4"],
    ["message", "5", "new5"],
  ]);
  // A WebSocket: each frame has its epoch; ?epoch= with ?lastEventId=
  // (a page's WebSocket sends no Last-Event-ID) gets the marker first.
  const url = `${after.url.replace(/^http/, "ws")}/v1/channels/news`;
  const protocols = webSocketProtocols(after.token);
  const ws = await frames(
    `${url}?lastEventId=3&epoch=${epoch}`,
    protocols,
    6,
  );
  // seq 0: a page keeping each frame's epoch and seq resumes from the new
  // numbering's start (before, the frame had no seq, and such a page resumed
  // with its old seq under the new epoch: the new numbering up to it lost).
  assert.deepEqual(ws[0], {
    type: "restart",
    channel: "news",
    epoch: newEpoch,
    seq: 0,
  });
  assert.deepEqual(
    ws.slice(1).map((f) => [f.type, f.seq, f.epoch, f.data]),
    [1, 2, 3, 4, 5].map((i) => ["message", i, newEpoch, `new${i}`]),
  );
  // Listed with its epoch, and each history message with its own.
  const listed = (await (await after.fetch("/v1/channels?history=1")).json())
    .channels[0];
  assert.equal(listed.epoch, newEpoch);
  assert.equal(listed.history[0].epoch, newEpoch);
  for (const bad of [`${epoch}:`, ":3", "a b:3"]) {
    const res = await after.fetch("/v1/channels/news", {
      headers: { "last-event-id": bad },
    });
    assert.equal(res.status, 400, bad);
    await res.body?.cancel();
  }
  const badEpoch = await after.fetch("/v1/channels/news?epoch=a.b");
  assert.equal(badEpoch.status, 400);
  await badEpoch.body?.cancel();
});

Deno.test("channelRoutes: an EventSource that got the restart marker and reconnects before any message gets no second marker", async () => {
  // The marker had no id, so an EventSource kept the Last-Event-ID of the
  // old numbering and sent it again at its next reconnect: a channel with
  // nothing published since the restart told the page a second time (and
  // at each reconnect) that it had restarted.
  await using gw = await startGateway();
  const open = (lastEventId: string) =>
    gw.fetch("/v1/channels/quiet?epoch=", {
      headers: { "last-event-id": lastEventId },
    });
  // What an EventSource sends back: the last id it saw, if any.
  let lastEventId = "0badc0de:3"; // of a numbering before a restart
  const first = await open(lastEventId);
  const reader = new SseReader(first.body!);
  const marker = await reader.next();
  await reader.cancel();
  assert.equal(marker?.event, "restart");
  const { epoch } = marker?.data as { epoch: string };
  lastEventId = marker?.id ?? lastEventId;
  // Reconnected (a proxy's timeout, a network change), then one message.
  const again = await open(lastEventId);
  assert.equal(again.status, 200);
  const next = new SseReader(again.body!);
  try {
    const published = await gw.fetch("/v1/channels/quiet", {
      method: "POST",
      body: JSON.stringify("hello"),
    });
    assert.equal(published.status, 200);
    await published.body?.cancel();
    const event = await next.next();
    assert.deepEqual([event?.event, event?.id, event?.data], [
      "message",
      `${epoch}:1`,
      "hello",
    ]);
  } finally {
    await next.cancel();
  }
});

Deno.test("channelRoutes: a resume replays a kept history larger than a subscriber's buffer (SSE) and the WebSocket's 4 MiB of unsent bytes whole, not dropping the subscriber", async () => {
  // Before: 30 messages of 700 kB (within the 1 MiB body limit and the
  // history's bounds) dropped an SSE subscriber resuming from 0 at once (16
  // MiB of buffered messages) and a WebSocket one after 6 frames (4 MiB
  // unsent): a resume across a restart replays the whole history, and the
  // page was dropped again at each reconnect.
  await using gw = await startGateway();
  const big = "x".repeat(700_000);
  for (let i = 1; i <= 30; i++) {
    const res = await gw.fetch("/v1/channels/news", {
      method: "POST",
      body: JSON.stringify(`${i}${big}`),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  const sse = await events(
    await gw.fetch("/v1/channels/news?lastEventId=0"),
    30,
  );
  assert.deepEqual(
    sse.map((e) => [e?.event, e?.id]),
    Array.from({ length: 30 }, (_, i) => ["message", `${i + 1}`]),
  );
  const url = `${gw.url.replace(/^http/, "ws")}/v1/channels/news`;
  const ws = await frames(
    `${url}?lastEventId=0`,
    webSocketProtocols(gw.token),
    30,
  );
  assert.deepEqual(
    ws.map((f) => [f.type, f.seq]),
    Array.from({ length: 30 }, (_, i) => ["message", i + 1]),
  );
});

/**
 * A tenant's share of the channels: a tenant's channels (named by its
 * token's id) together keep at most `channels.tenantMaxChannels` channels,
 * `tenantMaxSubscribers` subscribers and `tenantMaxHistoryBytes` of
 * history, so that one tenant cannot take the hub's bounds from the others
 * (before, 1000 subscriptions of one tenant refused every new channel, and
 * its large messages pushed out the others' history). Refusals are 429
 * `ChannelLimitError` naming the bound; operators' channels are unbounded
 * by them.
 */
import assert from "node:assert/strict";
import { tempDir } from "./_harness.ts";
import { SseReader, startGateway, withLogs } from "./_gateway_harness.ts";
import { within } from "./_token_streams.ts";
import {
  A,
  B,
  bearer,
  OPERATOR,
  TENANT_A,
  TENANT_B,
  TENANT_PUBLISHER,
} from "./_tenants.ts";

/** Counts its calls (one worker: every call reaches the same instance). */
const COUNT: Record<string, string> = {
  "count.py": `class Count:
    def __init__(self):
        self.calls = 0

    def execute(self, msg):
        self.calls += 1
        return {"calls": self.calls}
`,
};

async function tokenFileIn(dir: string): Promise<string> {
  const path = `${dir}/tokens`;
  await Deno.writeTextFile(
    path,
    `${OPERATOR}\n${TENANT_A} tenant\n${TENANT_B} tenant\n`,
    { mode: 0o600 },
  );
  return path;
}

/** A refusal's status and error, its body read. */
async function refusal(
  res: Response,
): Promise<{ status: number; type: string; message: string }> {
  // A 200 is a subscription (its body read by the caller): not a refusal.
  assert.equal(res.status, 429, "refused with 429");
  const { error } = await res.json();
  return { status: res.status, type: error.type, message: error.message };
}

Deno.test("serve bounds a tenant's channels and their subscribers (429 ChannelLimitError naming the bound, SSE, WebSocket and POST), and the other tenant and the operator go on", async () => {
  await using dir = await tempDir("pyproxy-tenant-bounds-test-");
  const tokenFile = await tokenFileIn(dir.path);
  await withLogs(async () => {
    await using gw = await startGateway({
      tokenFile,
      channels: { tenantMaxChannels: 3, tenantMaxSubscribers: 4 },
    }, { ...TENANT_PUBLISHER, ...COUNT });
    const subs: SseReader[] = [];
    const subscribe = async (channel: string, token: string) => {
      const res = await gw.fetch(`/v1/channels/${channel}`, {
        headers: bearer(token),
      });
      if (res.status === 200) subs.push(new SseReader(res.body!));
      return res;
    };
    try {
      // A holds three channels with subscribers: its share.
      for (const n of [0, 1, 2]) {
        assert.equal((await subscribe(`${A}.c${n}`, TENANT_A)).status, 200);
      }
      const fourth = await refusal(await subscribe(`${A}.c3`, TENANT_A));
      assert.equal(fourth.status, 429);
      assert.equal(fourth.type, "ChannelLimitError");
      assert.match(
        fourth.message,
        /^Cannot create channel "[0-9a-f]{16}\.c3": this tenant has 3 channels, all with subscribers, its bound \(channels\.tenantMaxChannels 3\)/,
      );
      // A publish that would make one: refused alike, nothing kept.
      const posted = await refusal(
        await gw.fetch(`/v1/channels/${A}.c4`, {
          method: "POST",
          body: '{"x":1}',
          headers: bearer(TENANT_A),
        }),
      );
      assert.equal(posted.status, 429);
      assert.match(posted.message, /tenantMaxChannels/);
      // An execute's ?publish=: refused before its model runs (before
      // tenants30 the call ran, and its result was lost to the 429).
      const executed = await refusal(
        await gw.fetch(`/v1/models/count/execute?publish=${A}.c4`, {
          method: "POST",
          body: '{"x":1}',
          headers: bearer(TENANT_A),
        }),
      );
      assert.equal(executed.type, "ChannelLimitError");
      assert.match(executed.message, /tenantMaxChannels 3/);
      const counted = await gw.fetch("/v1/models/count/execute", {
        method: "POST",
        body: "{}",
        headers: bearer(TENANT_A),
      });
      assert.deepEqual(
        await counted.json(),
        { calls: 1 },
        "the model ran once",
      );
      // A model's host.publish for the tenant: HostError, as any refusal.
      const hosted = await gw.fetch("/v1/models/tenant_pub/execute", {
        method: "POST",
        body: JSON.stringify({ topic: "c6", data: 1 }),
        headers: bearer(TENANT_A),
      });
      assert.equal(hosted.status, 422);
      const { error: hostError } = await hosted.json();
      assert.equal(hostError.exception, "HostError");
      assert.match(hostError.message, /tenantMaxChannels/);
      // A WebSocket's handshake: refused before the upgrade.
      const ws = new WebSocket(
        `${gw.url.replace("http", "ws")}/v1/channels/${A}.c5`,
        ["pyproxy.v1", `pyproxy.bearer.${TENANT_A}`],
      );
      const closed = new Promise((resolve) => (ws.onclose = resolve));
      // (Subscribed after the upgrade, the refusal left the handshake
      // unanswered: the client waited for ever.)
      const opened = new Promise<boolean>((resolve) => {
        ws.onopen = () => resolve(true);
        ws.onerror = () => resolve(false);
      });
      try {
        assert.equal(
          await within(opened, "A's refused WebSocket handshake"),
          false,
          "A's fourth channel over a WebSocket",
        );
      } finally {
        ws.close();
        await within(closed, "A's refused WebSocket");
      }

      // More subscribers of its own channels, up to its share.
      assert.equal((await subscribe(`${A}.c0`, TENANT_A)).status, 200);
      const fifth = await refusal(await subscribe(`${A}.c1`, TENANT_A));
      assert.equal(fifth.status, 429);
      assert.equal(fifth.type, "ChannelLimitError");
      assert.match(
        fifth.message,
        /: this tenant's channels have 4 subscribers, their bound \(channels\.tenantMaxSubscribers 4\)/,
      );

      // B's share is its own: A's use takes none of it.
      for (const n of [0, 1, 2]) {
        assert.equal((await subscribe(`${B}.c${n}`, TENANT_B)).status, 200);
      }
      assert.equal((await subscribe(`${B}.c0`, TENANT_B)).status, 200);
      // The operator's channels have no tenant's bounds.
      for (const n of [0, 1, 2, 3, 4, 5]) {
        assert.equal((await subscribe(`news${n}`, OPERATOR)).status, 200);
      }
      // Neither refusal told A anything of B's or the operator's use.
      for (const m of [fourth.message, fifth.message]) {
        assert.ok(!m.includes(B) && !m.includes("news"), m);
      }

      // A subscription of A's ended: its place is free again.
      await subs[3]!.cancel();
      let again: Response | undefined;
      for (let i = 0; i < 200; i++) {
        again = await subscribe(`${A}.c1`, TENANT_A);
        if (again.status === 200) break;
        await again.body?.cancel();
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.equal(again?.status, 200, "after one of A's subscriptions ended");
    } finally {
      for (const sub of subs) await sub.cancel();
    }
  });
});

Deno.test("serve keeps a tenant's history within its share (its own oldest forgotten, not another tenant's nor the operator's) and forgets its idle channels for a new one", async () => {
  await using dir = await tempDir("pyproxy-tenant-bounds-test-");
  const tokenFile = await tokenFileIn(dir.path);
  await withLogs(async () => {
    await using gw = await startGateway({
      tokenFile,
      channels: { tenantMaxChannels: 2, tenantMaxHistoryBytes: 2000 },
    });
    const publish = async (channel: string, token: string, data: unknown) => {
      const res = await gw.fetch(`/v1/channels/${channel}`, {
        method: "POST",
        body: JSON.stringify(data),
        headers: bearer(token),
      });
      assert.equal(res.status, 200, channel);
      await res.body?.cancel();
    };
    const big = "x".repeat(500);
    await publish(`${B}.keep`, TENANT_B, { b: 1 });
    for (let i = 0; i < 10; i++) {
      await publish(`${A}.flood`, TENANT_A, { i, big });
    }
    for (let i = 0; i < 10; i++) await publish("news", OPERATOR, { i, big });
    const history = async () => {
      const res = await gw.fetch("/v1/channels?history=50", {
        headers: bearer(OPERATOR),
      });
      const { channels } = await res.json();
      return new Map<string, { i?: number; b?: number }[]>(
        channels.map((
          ch: { name: string; history: { data: { i?: number } }[] },
        ) => [ch.name, ch.history.map((m) => m.data)]),
      );
    };
    const kept = await history();
    // A's three newest (~520 characters each) fit its 2000.
    assert.deepEqual(kept.get(`${A}.flood`)?.map((d) => d.i), [7, 8, 9]);
    assert.deepEqual(kept.get(`${B}.keep`), [{ b: 1 }]);
    assert.equal(kept.get("news")?.length, 10);

    // Past its two channels, its idle one is forgotten, not B's.
    await publish(`${A}.second`, TENANT_A, { i: 100 });
    await publish(`${A}.third`, TENANT_A, { i: 101 });
    const after = await history();
    assert.equal(after.has(`${A}.flood`), false);
    assert.deepEqual(after.get(`${A}.third`), [{ i: 101 }]);
    assert.deepEqual(after.get(`${B}.keep`), [{ b: 1 }]);
  });
});

Deno.test("serve holds the operator's publishes to a tenant's channel to none of the tenant's bounds (a new channel past its share, history not counted in its share), and a tenant's own publishes still are", async () => {
  await using dir = await tempDir("pyproxy-tenant-bounds-test-");
  const tokenFile = await tokenFileIn(dir.path);
  await withLogs(async () => {
    await using gw = await startGateway({
      tokenFile,
      channels: { tenantMaxChannels: 1, tenantMaxHistoryBytes: 2000 },
    });
    const publish = (channel: string, token: string, data: unknown) =>
      gw.fetch(`/v1/channels/${channel}`, {
        method: "POST",
        body: JSON.stringify(data),
        headers: bearer(token),
      });
    const subs: SseReader[] = [];
    try {
      // A's one channel, with a subscriber: its share is used.
      const res = await gw.fetch(`/v1/channels/${A}.own`, {
        headers: bearer(TENANT_A),
      });
      assert.equal(res.status, 200);
      subs.push(new SseReader(res.body!));
      const kept = await publish(`${A}.own`, TENANT_A, { mine: 1 });
      assert.equal(kept.status, 200);
      await kept.body?.cancel();
      // A's own new channel: refused, as before.
      const refused = await publish(`${A}.more`, TENANT_A, { x: 1 });
      assert.equal(refused.status, 429);
      await refused.body?.cancel();
      // The operator's new channel of A's: made (before: 429), for A's page.
      const big = "x".repeat(500);
      for (let i = 0; i < 10; i++) {
        const op = await publish(`${A}.notice`, OPERATOR, { i, big });
        assert.equal(op.status, 200, `the operator's publish ${i}`);
        await op.body?.cancel();
      }
      // A ?publish= of the operator's: its call runs and publishes.
      const executed = await gw.fetch(
        `/v1/models/echo/execute?publish=${A}.result`,
        { method: "POST", body: '{"x":1}', headers: bearer(OPERATOR) },
      );
      assert.equal(executed.status, 200);
      await executed.body?.cancel();
      const list = await gw.fetch("/v1/channels?history=50", {
        headers: bearer(OPERATOR),
      });
      const history = new Map<string, unknown[]>(
        (await list.json()).channels.map((
          ch: { name: string; history: { data: unknown }[] },
        ) => [ch.name, ch.history.map((m) => m.data)]),
      );
      // The operator's ~5 KB on A's channels pushed none of A's own out of
      // its 2000 (before: A's message went first).
      assert.deepEqual(history.get(`${A}.own`), [{ mine: 1 }]);
      assert.equal(history.get(`${A}.notice`)?.length, 10);
      assert.equal(history.get(`${A}.result`)?.length, 1);
    } finally {
      for (const sub of subs) await sub.cancel();
    }
  });
});

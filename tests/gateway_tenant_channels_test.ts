/**
 * A tenant's channels: a tenant's token (a token file's `<token> tenant`)
 * subscribes and publishes only to the channels named by its token's id
 * (SSE, WebSocket, HEAD, `POST`, an execute's `?publish=`); a model names
 * them from `host.caller()`; a poll that marks a token ends its
 * subscriptions to channels not its own. Operators' tokens are unchanged.
 */
import assert from "node:assert/strict";
import { TOKEN_FILE_INTERVAL_FLOOR } from "../src/gateway/_token_file_interval.ts";
import { tempDir } from "./_harness.ts";
import {
  SseReader,
  startGateway,
  until,
  withLogs,
} from "./_gateway_harness.ts";
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

async function writeTokens(path: string, text: string): Promise<void> {
  await Deno.writeTextFile(path, text, { mode: 0o600 });
}

/** A WebSocket subscription, open (or the close of its refused handshake). */
function webSocket(
  url: string,
  channel: string,
  token: string,
): {
  ws: WebSocket;
  opened: Promise<boolean>;
  closed: Promise<CloseEvent>;
} {
  const ws = new WebSocket(
    `${url.replace("http", "ws")}/v1/channels/${channel}`,
    ["pyproxy.v1", `pyproxy.bearer.${token}`],
  );
  const closed = new Promise<CloseEvent>((resolve) => (ws.onclose = resolve));
  const opened = new Promise<boolean>((resolve) => {
    ws.onopen = () => resolve(true);
    ws.onerror = () => resolve(false);
  });
  return { ws, opened, closed };
}

Deno.test("serve confines a tenant's token to the channels named by its id (subscribe over SSE, WebSocket and HEAD, publish, ?publish=: 403 ForbiddenToken, logged), a model publishes to them from host.caller(), and operators' tokens keep every channel", async () => {
  await using dir = await tempDir("pyproxy-tenant-channels-test-");
  const tokenFile = `${dir.path}/tokens`;
  await writeTokens(
    tokenFile,
    `${OPERATOR}\n${TENANT_A} tenant\n${TENANT_B} tenant\n`,
  );
  await withLogs(async (records) => {
    await using gw = await startGateway({ tokenFile }, TENANT_PUBLISHER);
    const refused = async (
      path: string,
      init: RequestInit,
      message: RegExp,
    ) => {
      const res = await gw.fetch(path, init);
      assert.equal(res.status, 403, `${init.method ?? "GET"} ${path}`);
      if (init.method === "HEAD") return await res.body?.cancel();
      const { error } = await res.json();
      assert.equal(error.type, "ForbiddenToken");
      assert.match(error.message, message);
      // Its own id, the rule; nothing of the other's channel.
      assert.ok(error.message.includes(A), error.message);
      assert.ok(!error.message.includes(TENANT_A), "no token");
    };
    const other = `${B}.events`;
    await refused(
      `/v1/channels/${other}`,
      { headers: bearer(TENANT_A) },
      /^Cannot subscribe to channel "[0-9a-f]{16}\.events": this token is a tenant's/,
    );
    await refused(`/v1/channels/${other}`, {
      method: "HEAD",
      headers: bearer(TENANT_A),
    }, /./);
    // A name of no one's (a shared "news") is the operator's.
    await refused(
      "/v1/channels/news",
      { headers: bearer(TENANT_A) },
      /subscribe/,
    );
    await refused(`/v1/channels/${other}`, {
      method: "POST",
      body: '{"forged":1}',
      headers: bearer(TENANT_A),
    }, /^Cannot publish to channel/);
    // ?publish= would put A's result into B's channel: refused before the call.
    await refused(`/v1/models/echo/execute?publish=${other}`, {
      method: "POST",
      body: '{"forged":1}',
      headers: bearer(TENANT_A),
    }, /^Cannot publish to channel/);
    // The WebSocket handshake too (its token as a subprotocol).
    const denied = webSocket(gw.url, other, TENANT_A);
    assert.equal(await denied.opened, false);
    await denied.closed;

    // B's own channel: B's page follows it; A's attempts reached nothing.
    const res = await gw.fetch(`/v1/channels/${other}`, {
      headers: bearer(TENANT_B),
    });
    assert.equal(res.status, 200);
    const bSub = new SseReader(res.body!);
    const bWs = webSocket(gw.url, `${B}:ws`, TENANT_B);
    try {
      assert.equal(await bWs.opened, true);
      const frame = new Promise<MessageEvent>((resolve) =>
        bWs.ws.onmessage = resolve
      );
      // The model publishes to the caller's channel: host.caller() is B's id.
      const call = await gw.fetch("/v1/models/tenant_pub/execute", {
        method: "POST",
        body: JSON.stringify({ topic: "events", data: { done: 1 } }),
        headers: bearer(TENANT_B),
      });
      assert.equal(call.status, 200);
      assert.equal((await call.json()).channel, other);
      const first = await within(bSub.next(), "B's first message");
      assert.deepEqual(first?.data, { done: 1 });
      // B publishes to its own (POST, ?publish=).
      const posted = await gw.fetch(`/v1/channels/${B}:ws`, {
        method: "POST",
        body: '{"own":1}',
        headers: bearer(TENANT_B),
      });
      assert.equal(posted.status, 200);
      await posted.body?.cancel();
      assert.deepEqual(
        JSON.parse((await within(frame, "B's WebSocket frame")).data).data,
        { own: 1 },
      );
      const own = await gw.fetch(
        `/v1/models/echo/execute?publish=${other}`,
        { method: "POST", body: '{"b":2}', headers: bearer(TENANT_B) },
      );
      assert.equal(own.status, 200);
      await own.body?.cancel();
      assert.deepEqual((await within(bSub.next(), "?publish="))?.data, {
        model: "echo",
        result: { b: 2 },
      });
      // The operator's token: any channel, as before.
      for (const path of [`/v1/channels/${other}`, "/v1/channels/news"]) {
        const op = await gw.fetch(path, {
          method: "POST",
          body: '{"op":1}',
          headers: bearer(OPERATOR),
        });
        assert.equal(op.status, 200, path);
        await op.body?.cancel();
      }
      assert.deepEqual((await within(bSub.next(), "operator's"))?.data, {
        op: 1,
      });
      const opSub = await gw.fetch(`/v1/channels/${other}`, {
        method: "HEAD",
        headers: bearer(OPERATOR),
      });
      assert.equal(opSub.status, 200);
    } finally {
      bWs.ws.close();
      await bWs.closed;
      await bSub.cancel();
    }
    // Logged once (then one line a minute), with the token's id only.
    const lines = records.map((r) => r.message.join(""));
    assert.deepEqual(
      lines.filter((l) => l.startsWith("Refused a tenant's")),
      [
        `Refused a tenant's token ${A} (403 ForbiddenToken) on GET /v1/channels/${other}: not its channel`,
      ],
    );
    assert.ok(!lines.some((l) => l.includes(TENANT_A)), "no token logged");
  }, "info");
});

Deno.test("serve ends the subscriptions to other channels of a token a token file's poll marks a tenant's (WebSocket 1008 \"not this token's channel\", SSE ended), and keeps those to its own", async () => {
  await using dir = await tempDir("pyproxy-tenant-channels-test-");
  const tokenFile = `${dir.path}/tokens`;
  await writeTokens(tokenFile, `${OPERATOR}\n${TENANT_A}\n`);
  const floor = TOKEN_FILE_INTERVAL_FLOOR.ms;
  TOKEN_FILE_INTERVAL_FLOOR.ms = 1;
  try {
    await withLogs(async (records) => {
      await using gw = await startGateway({ tokenFile, tokenFileInterval: 5 });
      const sse = async (channel: string) => {
        const res = await gw.fetch(`/v1/channels/${channel}`, {
          headers: bearer(TENANT_A),
        });
        assert.equal(res.status, 200, channel);
        return new SseReader(res.body!);
      };
      // Unmarked: every channel, as before.
      const news = await sse("news");
      const own = await sse(`${A}.events`);
      const ws = webSocket(gw.url, "news", TENANT_A);
      try {
        assert.equal(await ws.opened, true);
        await writeTokens(tokenFile, `${OPERATOR}\n${TENANT_A} tenant\n`);
        const close = await within(ws.closed, "the WebSocket");
        assert.equal(close.code, 1008);
        assert.equal(close.reason, "not this token's channel");
        assert.deepEqual(await within(news.all(), "the SSE stream"), []);
        // Its own channel's subscription goes on.
        const posted = await gw.fetch(`/v1/channels/${A}.events`, {
          method: "POST",
          body: '{"kept":1}',
          headers: bearer(OPERATOR),
        });
        assert.equal(posted.status, 200);
        await posted.body?.cancel();
        assert.deepEqual((await within(own.next(), "its own"))?.data, {
          kept: 1,
        });
        // The log says why: the token is still accepted (before: "whose
        // token is no longer accepted").
        assert.deepEqual(
          records.map((r) => r.message.join("")).filter((m) =>
            m.startsWith("Ended ")
          ),
          [
            "Ended 2 channel subscription(s) whose token may no longer follow their channel (now a tenant's)",
          ],
        );
      } finally {
        ws.ws.close();
        await ws.closed;
        await news.cancel();
        await own.cancel();
      }
    }, "info");
  } finally {
    TOKEN_FILE_INTERVAL_FLOOR.ms = floor;
  }
});

Deno.test("serve keeps a tenant publishing to many channels of its own to its share of the hub: another tenant's channel and its history stay", async () => {
  await using dir = await tempDir("pyproxy-tenant-channels-test-");
  const tokenFile = `${dir.path}/tokens`;
  await writeTokens(
    tokenFile,
    `${OPERATOR}\n${TENANT_A} tenant\n${TENANT_B} tenant\n`,
  );
  await using gw = await startGateway({ tokenFile });
  const post = async (channel: string, body: string, token: string) => {
    const res = await gw.fetch(`/v1/channels/${channel}`, {
      method: "POST",
      body,
      headers: bearer(token),
    });
    assert.equal(res.status, 200, channel);
    await res.body?.cancel();
  };
  await post(`${B}.orders`, '{"order":42}', TENANT_B);
  // The hub's 1000 channels, all A's: before, B's was forgotten (the
  // least recently used without subscribers), its order with it.
  for (let i = 0; i < 1000; i++) await post(`${A}x${i}`, "1", TENANT_A);
  const res = await gw.fetch(`/v1/channels/${B}.orders?lastEventId=0`, {
    headers: bearer(TENANT_B),
  });
  assert.equal(res.status, 200);
  const sub = new SseReader(res.body!);
  try {
    assert.deepEqual((await within(sub.next(), "B's kept order"))?.data, {
      order: 42,
    });
  } finally {
    await sub.cancel();
  }
  // A's newest channels are kept (a tenth of the hub's), its older ones not.
  const list = await gw.fetch("/v1/channels?history=0", {
    headers: bearer(OPERATOR),
  });
  const names = (await list.json()).channels.map((c: { name: string }) =>
    c.name
  );
  assert.equal(names.filter((n: string) => n.startsWith(A)).length, 100);
  assert.ok(names.includes(`${A}x999`));
});

Deno.test("serve refuses a subscription past a tenant's share of the hub (its 100 channels all followed) with 429, a WebSocket's before its handshake", async () => {
  await using dir = await tempDir("pyproxy-tenant-channels-test-");
  const tokenFile = `${dir.path}/tokens`;
  await writeTokens(tokenFile, `${OPERATOR}\n${TENANT_A} tenant\n`);
  await using gw = await startGateway({ tokenFile });
  const subs: SseReader[] = [];
  try {
    for (let i = 0; i < 100; i++) {
      const res = await gw.fetch(`/v1/channels/${A}s${i}`, {
        headers: bearer(TENANT_A),
      });
      assert.equal(res.status, 200, `subscription ${i}`);
      subs.push(new SseReader(res.body!));
    }
    const sse = await gw.fetch(`/v1/channels/${A}s100`, {
      headers: bearer(TENANT_A),
    });
    assert.equal(sse.status, 429);
    const refused = (await sse.json()).error;
    assert.equal(refused.type, "ChannelLimitError");
    assert.match(
      refused.message,
      /^Cannot create channel "[0-9a-f]{16}s100": this tenant has 100 channels, all with subscribers, its bound \(channels\.tenantMaxChannels 100\)/,
    );
    // Before: upgraded, then refused: the handshake hung (Deno), or the
    // socket opened with no subscription behind it (Bun).
    const ws = webSocket(gw.url, `${A}w`, TENANT_A);
    assert.equal(await within(ws.opened, "the refused handshake"), false);
    await within(ws.closed, "the refused WebSocket");
    // Another's channel is still made.
    const other = await gw.fetch("/v1/channels/news", {
      headers: bearer(OPERATOR),
    });
    assert.equal(other.status, 200);
    await other.body?.cancel();
  } finally {
    for (const sub of subs) await sub.cancel();
  }
});

/** Publishes to the channel its input names (a tenant's input steers it). */
const NAMED_PUBLISHER: Record<string, string> = {
  "named_pub.py": `from pyproxy import host, HostError


class NamedPub:
    def execute(self, msg):
        try:
            return host.publish(msg["channel"], msg["data"])
        except HostError as exc:
            return {"refused": exc.remote_type, "message": exc.remote_message}
`,
  "named_batch.py": `from pyproxy import host, HostError


class NamedBatch:
    batch_size = 4
    batch_delay_ms = 200

    def execute_batch(self, msgs):
        out = []
        for msg in msgs:
            try:
                out.append(host.publish(msg["channel"], msg["data"]))
            except HostError as exc:
                out.append({"refused": exc.remote_type, "message": exc.remote_message})
        return out
`,
};

Deno.test("serve confines a model's host.publish in a tenant's call to that tenant's channels (another tenant's, or one of no one's: ChannelAccessError), batches to their callers', and leaves the operator's calls every channel", async () => {
  await using dir = await tempDir("pyproxy-tenant-channels-test-");
  const tokenFile = `${dir.path}/tokens`;
  await writeTokens(
    tokenFile,
    `${OPERATOR}\n${TENANT_A} tenant\n${TENANT_B} tenant\n`,
  );
  await withLogs(async () => {
    await using gw = await startGateway({ tokenFile }, NAMED_PUBLISHER);
    const run = async (
      model: string,
      token: string,
      channel: string,
      data: unknown,
    ) => {
      const res = await gw.fetch(`/v1/models/${model}/execute`, {
        method: "POST",
        body: JSON.stringify({ channel, data }),
        headers: bearer(token),
      });
      assert.equal(res.status, 200, `${model} ${channel}`);
      return await res.json();
    };
    // A's call steered to B's channel, or to a shared one: refused.
    for (const channel of [`${B}.events`, "news"]) {
      const refused = await run("named_pub", TENANT_A, channel, { forged: 1 });
      assert.equal(refused.refused, "ChannelAccessError", channel);
      assert.match(
        refused.message,
        /^Cannot publish to channel "[^"]+": the call is a tenant's/,
      );
      assert.ok(refused.message.includes(A), refused.message);
      // The channel it asked for, then its own id and the rule.
      const rule = refused.message.slice(
        `Cannot publish to channel "${channel}"`.length,
      );
      assert.ok(!rule.includes(B), "nothing of B");
    }
    // Its own: published.
    assert.equal(
      (await run("named_pub", TENANT_A, `${A}.events`, { own: 1 })).channel,
      `${A}.events`,
    );
    // The operator's call: any channel, B's too.
    for (const channel of [`${B}.events`, "news"]) {
      const op = await run("named_pub", OPERATOR, channel, { op: 1 });
      assert.equal(op.channel, channel);
    }
    // A batch of A's call and B's: each reaches its own, neither the other's
    // (a batch may publish to its callers' channels; no one's is refused).
    const [a, b] = await Promise.all([
      run("named_batch", TENANT_A, `${A}.batch`, { a: 1 }),
      run("named_batch", TENANT_B, "news", { b: 1 }),
    ]);
    assert.equal(a.channel, `${A}.batch`);
    assert.equal(b.refused, "ChannelAccessError");
    // What the channels hold: nothing A forged.
    const list = await gw.fetch("/v1/channels?history=50", {
      headers: bearer(OPERATOR),
    });
    const history = new Map<string, unknown[]>(
      (await list.json()).channels.map((
        ch: { name: string; history: { data: unknown }[] },
      ) => [ch.name, ch.history.map((m) => m.data)]),
    );
    assert.deepEqual(history.get(`${B}.events`), [{ op: 1 }]);
    assert.deepEqual(history.get("news"), [{ op: 1 }]);
    assert.deepEqual(history.get(`${A}.events`), [{ own: 1 }]);
  });
});

/** Publishes from a thread it leaves running (with the call's context),
 * once `msg.release` exists: after its call ended. Writes the publish's
 * result, or its refusal, to `msg.out`. */
const LATE_PUBLISHER: Record<string, string> = {
  "late_pub.py": `import contextvars
import json
import os
import threading
import time

from pyproxy import host


def _later(msg):
    deadline = time.monotonic() + 20
    while not os.path.exists(msg["release"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        out = host.publish(msg["channel"], msg["data"])
    except Exception as exc:
        out = {"refused": type(exc).__name__, "message": str(exc)}
    with open(msg["out"] + ".tmp", "w") as f:
        json.dump(out, f)
    os.rename(msg["out"] + ".tmp", msg["out"])


class LatePub:
    threaded = True

    def execute(self, msg):
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(_later, msg), daemon=True).start()
        return {"started": True}
`,
};

Deno.test("serve with tenants refuses a model's host.publish from code a call left running (its call over, its caller unknown, maybe a tenant's: ChannelAccessError), a channel of no one's too, which a tenant's call itself may not publish to", async () => {
  await using dir = await tempDir("pyproxy-tenant-channels-test-");
  const tokenFile = `${dir.path}/tokens`;
  await writeTokens(tokenFile, `${OPERATOR}\n${TENANT_A} tenant\n`);
  await withLogs(async () => {
    await using gw = await startGateway({ tokenFile }, LATE_PUBLISHER);
    const late = async (token: string, channel: string, n: number) => {
      const release = `${dir.path}/release${n}`;
      const out = `${dir.path}/out${n}`;
      const res = await gw.fetch(`/v1/models/late_pub/execute`, {
        method: "POST",
        body: JSON.stringify({ channel, data: { n }, release, out }),
        headers: bearer(token),
      });
      assert.equal(res.status, 200);
      await res.body?.cancel();
      // The call is over: now its thread publishes.
      await Deno.writeTextFile(release, "");
      await until(async () => {
        try {
          await Deno.stat(out);
          return true;
        } catch {
          return false;
        }
      }, `${out} written`);
      return JSON.parse(await Deno.readTextFile(out));
    };
    const a = await late(TENANT_A, "news", 1);
    // Outside its call, the Python side names the host's refusal in a
    // HostError: "Host replied ChannelAccessError: ...".
    assert.match(a.message, /ChannelAccessError/, JSON.stringify(a));
    const aOther = await late(TENANT_A, `other.events`, 2);
    assert.match(aOther.message, /ChannelAccessError/);
    // Its refusal says why.
    assert.match(a.message, /the call that sent it has ended/);
    // The operator's call's left code too: who made an ended call is not
    // known (within its call, the operator's publishes anywhere: above).
    const op = await late(OPERATOR, `${A}.events`, 3);
    assert.match(op.message, /ChannelAccessError/, JSON.stringify(op));
    const list = await gw.fetch("/v1/channels?history=50", {
      headers: bearer(OPERATOR),
    });
    const names = (await list.json()).channels.map((
      ch: { name: string },
    ) => ch.name);
    assert.ok(!names.includes("news"), String(names));
  });
});

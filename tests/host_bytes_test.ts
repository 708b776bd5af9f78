/**
 * Bytes in a model's host calls (docs/protocol.md §3 "Bytes", §7):
 * `host.call`, `host.cache`, `host.publish`, with real workers; and bytes
 * from a server started with `--insecure-no-auth` (§4).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { Session } from "../src/session.ts";
import { SerializationError } from "../src/errors.ts";
import { MemoryStore } from "../plugins/memory_store.ts";
import { RedisStore } from "../plugins/redis_store.ts";
import { sharedCache } from "../plugins/shared_cache.ts";
import type { CacheStore } from "../plugins/cache_store.ts";
import { BYTES_MARKER } from "../plugins/_cache_value.ts";
import { bytesAsBase64Json, stringifyForWire } from "../src/_binary.ts";
import { encodeFrame, startServer } from "./_harness.ts";
import { hasRedis, startRedis } from "./_redis_server.ts";
import { SseReader, startGateway } from "./_gateway_harness.ts";

const MODELS = new URL("../python/tests/models/", import.meta.url).pathname;
const ALL = Uint8Array.from({ length: 256 }, (_, i) => i);

interface Answer {
  result?: unknown;
  type: string;
  error?: string;
}

/** A pool with the `HostCall` model of bytes_model.py as `host`. */
async function hostPool(plugins: Plugin[], defaults = true): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    modelsDir: MODELS,
    handleSignals: false,
    plugins: defaults ? plugins : { defaults: false, use: plugins },
  });
  try {
    await pool.addModel("host", { file: "bytes_model.py", class: "HostCall" });
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

function handlers(
  table: Record<string, (args: unknown) => unknown>,
): Plugin {
  return { name: "testHandlers", handlers: table };
}

Deno.test("host.call: a handler gets bytes as Uint8Arrays (all 256 values, empty, nested) and a Uint8Array it returns is bytes to the model", async () => {
  const seen: unknown[] = [];
  await using pool = await hostPool([handlers({
    thumb(args) {
      seen.push(args);
      const { image } = args as { image: Uint8Array };
      return { small: image.slice().reverse(), n: image.length };
    },
    raw: (args) => args,
  })]);
  const got = await pool.execute<Answer>("host", {
    cmd: "thumb",
    args: {
      image: ALL,
      empty: new Uint8Array(0),
      list: ["x", ALL.subarray(1, 3)],
    },
  });
  const args = seen[0] as {
    image: Uint8Array;
    empty: Uint8Array;
    list: [string, Uint8Array];
  };
  assert.equal(args.image.constructor, Uint8Array);
  assert.deepEqual([...args.image], [...ALL]);
  assert.equal(args.empty.constructor, Uint8Array);
  assert.equal(args.empty.length, 0);
  assert.deepEqual([args.list[0], [...args.list[1]]], ["x", [1, 2]]);
  // The model saw bytes (`type` "dict" of a result holding them; the pool gets them back as bytes).
  assert.equal(got.type, "dict");
  const result = got.result as { small: Uint8Array; n: number };
  assert.equal(result.n, 256);
  assert.deepEqual([...result.small], [...ALL].reverse());
  // A whole bytes argument, and a handler returning an ArrayBuffer, a DataView, empty bytes.
  for (
    const [value, expected] of [
      [ALL.buffer, [...ALL]],
      [new DataView(ALL.buffer, 4, 2), [4, 5]],
      [new Uint8Array(0), []],
    ] as const
  ) {
    const back = await pool.execute<Answer>("host", {
      cmd: "raw",
      args: value,
    });
    assert.equal(back.type, "bytes");
    assert.deepEqual([...(back.result as Uint8Array)], expected);
  }
  // Bytes under keys Python writes as text (1, None, 2.5).
  const keyed = await pool.execute<Answer>("host", {
    cmd: "raw",
    args: ALL.subarray(0, 2),
    intKeys: true,
  });
  const k = keyed.result as Record<string, unknown>;
  assert.deepEqual([...(k["1"] as Uint8Array)], [0, 1]);
  assert.deepEqual([...((k["null"] as Uint8Array[])[0]!)], [0, 1]);
  assert.deepEqual([...((k["2.5"] as { x: Uint8Array }).x)], [0, 1]);
  // A JSON-only call is unchanged.
  assert.deepEqual(
    await pool.execute("host", { cmd: "raw", args: { a: [1, "{}"] } }),
    { result: { a: [1, "{}"] }, type: "dict" },
  );
});

Deno.test("host.call: a handler returning bytes over a detached ArrayBuffer fails that call alone with a SerializationError", async () => {
  await using pool = await hostPool([handlers({
    detached() {
      const image = new Uint8Array(8);
      structuredClone(image.buffer, { transfer: [image.buffer] });
      return { image };
    },
    detachedSigned() {
      const signed = new Int8Array(8);
      structuredClone(signed.buffer, { transfer: [signed.buffer] });
      return { signed };
    },
    raw: (args) => args,
  })]);
  const got = await pool.execute<Answer>("host", { cmd: "detached", args: {} });
  assert.equal(got.type, "HostError");
  assert.match(got.error!, /SerializationError/);
  assert.match(
    got.error!,
    /result\.image is a Uint8Array whose ArrayBuffer is detached/,
  );
  // An article that fits the type ("is a Int8Array" before).
  const signed = await pool.execute<Answer>("host", {
    cmd: "detachedSigned",
    args: {},
  });
  assert.match(
    signed.error!,
    /result\.signed is an Int8Array whose ArrayBuffer is detached/,
  );
  const again = await pool.execute<Answer>("host", { cmd: "raw", args: ALL });
  assert.deepEqual([...(again.result as Uint8Array)], [...ALL]);
});

Deno.test("host.call: 50 MB of bytes go both ways through spill files raw; without spill-over the frame limit gives a clear error", async () => {
  const big = new Uint8Array(50 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big[i] = i % 251;
  const md5 = (data: Uint8Array) =>
    createHash("md5").update(data).digest("hex");
  const echo = handlers({
    echo(args) {
      const { data } = args as { data: Uint8Array };
      return { data, md5: md5(data) };
    },
    big: () => big,
  });
  {
    await using pool = await hostPool([echo]);
    const got = await pool.execute<Answer>("host", {
      cmd: "echo",
      args: { data: big },
    });
    const result = got.result as { data: Uint8Array; md5: string };
    assert.equal(result.md5, md5(big));
    assert.equal(result.data.length, big.length);
    assert.equal(md5(result.data), md5(big));
  }
  {
    await using pool = await hostPool([echo], false);
    // Python → host: refused in Python, nothing sent.
    const up = await pool.execute<Answer>("host", {
      cmd: "echo",
      args: { data: big.subarray(0, 1024) },
    });
    assert.equal(
      (up.result as { md5: string }).md5,
      md5(big.subarray(0, 1024)),
    );
    const call = await pool.execute<Answer>("host", { cmd: "big", args: null });
    assert.equal(call.type, "HostError");
    assert.match(
      call.error!,
      /SerializationError: Cannot send message: \d+ bytes exceed the server's frame limit of 67108864 \(spill-over sends larger messages through files\)/,
    );
  }
});

async function cacheRoundTrip(pool: Pool, store: CacheStore): Promise<void> {
  const cases: [string, unknown, string][] = [
    ["all", ALL, "bytes"],
    ["empty", new Uint8Array(0), "bytes"],
    [
      "nested",
      { png: ALL.subarray(0, 3), list: [1, ALL.subarray(3, 4)] },
      "dict",
    ],
    // Strings stay strings: one that is base64, one that starts with the marker.
    ["b64", "AAEC", "str"],
    ["marker", `${BYTES_MARKER}{"value":"AA==","$bytes":[["value"]]}`, "str"],
    ["obj", { $bytes: [["value"]], value: "AA==" }, "dict"],
  ];
  for (const [key, value, type] of cases) {
    const got = await pool.execute<Answer>("host", {
      cache: "set",
      key,
      value,
    });
    assert.equal(got.type, type, key);
    assert.deepEqual(got.result, value, key);
    // TypeScript reads what Python stored, with its types.
    assert.deepEqual(await store.get(key), value, key);
  }
  // And Python reads bytes TypeScript stored.
  await store.set("fromTs", { b: new Uint8Array([7, 8]) });
  const py = await pool.execute<Answer>("host", {
    cmd: "cache.get",
    args: { key: "fromTs" },
  });
  assert.deepEqual([...(py.result as { b: Uint8Array }).b], [7, 8]);
}

Deno.test("host.cache keeps bytes bytes in the memory store, and strings strings (base64-looking, or starting with the marker)", async () => {
  const store = new MemoryStore();
  await using pool = await hostPool([sharedCache({ store, closeStore: true })]);
  await cacheRoundTrip(pool, store);
});

Deno.test({
  name:
    "host.cache keeps bytes bytes in the Redis store, and strings strings (base64-looking, or starting with the marker)",
  ignore: !hasRedis(),
  async fn() {
    await using server = await startRedis();
    const store = new RedisStore({ port: server.port, prefix: "hb:" });
    await using pool = await hostPool([
      sharedCache({ store, closeStore: true }),
    ]);
    await cacheRoundTrip(pool, store);
  },
});

Deno.test("Cache stores refuse bytes over a detached ArrayBuffer and a marked value they cannot read", async () => {
  const store = new MemoryStore();
  const b = new Uint8Array(4);
  structuredClone(b.buffer, { transfer: [b.buffer] });
  await assert.rejects(
    store.set("k", { b }),
    (err: unknown) =>
      err instanceof SerializationError && /detached/.test(err.message),
  );
  assert.equal(await store.get("k"), undefined);
  if (hasRedis()) {
    await using server = await startRedis();
    await using redis = new RedisStore({ port: server.port, prefix: "" });
    await using raw = new RedisStore({ port: server.port, prefix: "" });
    await raw.set("bad", "x");
    // Another writer's text that starts with the marker: a clear error, not a guess.
    await using conn = await Deno.connect({ port: server.port });
    const text = `${BYTES_MARKER}{"value":"%%","$bytes":[["value"]]}`;
    await conn.write(
      new TextEncoder().encode(
        `*3\r\n$3\r\nSET\r\n$3\r\nbad\r\n$${text.length}\r\n${text}\r\n`,
      ),
    );
    await conn.read(new Uint8Array(16));
    await assert.rejects(
      redis.get("bad"),
      (err: unknown) =>
        err instanceof SerializationError && /is not base64/.test(err.message),
    );
  }
});

Deno.test("host.publish with bytes: a gateway channel's SSE subscriber gets them as base64 strings", async () => {
  await using gw = await startGateway({}, {
    "pub_bytes.py": `from pyproxy import host


class PubBytes:
    threaded = True

    def execute(self, msg):
        return host.publish("pics", {"png": bytes(range(256)), "empty": b"", "n": 1})
`,
  });
  const res = await gw.fetch("/v1/channels/pics");
  const sse = new SseReader(res.body!);
  try {
    const exec = await gw.fetch("/v1/models/pub_bytes/execute", {
      method: "POST",
      body: "{}",
    });
    assert.equal(exec.status, 200, await exec.clone().text());
    assert.equal((await exec.json()).delivered, 1);
    const msg = await sse.next();
    assert.deepEqual([msg?.event, msg?.id, msg?.data], ["message", "1", {
      png: btoa(String.fromCharCode(...ALL)),
      empty: "",
      n: 1,
    }]);
  } finally {
    await sse.cancel();
  }
});

Deno.test("A server started with --insecure-no-auth reads and writes bytes: the host sends the optional auth to ask for them", async () => {
  await using server = await startServer({
    args: ["--insecure-no-auth"],
    files: {
      "bytes_model.py": await Deno.readTextFile(`${MODELS}bytes_model.py`),
    },
  });
  await using session = await Session.connect({ port: server.port });
  assert.equal(session.serverInfo.auth, "none");
  await session.addModel("raw", { file: "bytes_model.py", class: "Raw" });
  const back = await session.execute<Uint8Array>("raw", ALL);
  assert.equal(back.constructor, Uint8Array);
  assert.deepEqual([...back], [...ALL]);
  const nested = await session.execute<{ as: string; data: Uint8Array }>(
    "raw",
    { as: "bytearray", data: new Uint8Array([1, 2]) },
  );
  assert.deepEqual([...(nested as unknown as Uint8Array)], [1, 2]);
});

Deno.test("A server without authentication that does not announce bytes gets no auth (an old server): the first message is the caller's", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const first = (async () => {
    const conn = await listener.accept();
    try {
      await conn.write(encodeFrame({
        event: "hello",
        version: 1,
        serverId: "old",
        pid: 1,
        auth: "none",
        batch: true,
      }));
      const buf = new Uint8Array(4096);
      let got = new Uint8Array(0);
      while (got.length < 25) {
        const n = await conn.read(buf);
        if (n === null) break;
        got = new Uint8Array([...got, ...buf.subarray(0, n)]);
      }
      const length = new DataView(got.buffer).getUint32(21);
      while (got.length < 41 + length) {
        const n = await conn.read(buf);
        if (n === null) break;
        got = new Uint8Array([...got, ...buf.subarray(0, n)]);
      }
      const msg = JSON.parse(
        new TextDecoder().decode(got.subarray(25, 25 + length)),
      );
      await conn.write(encodeFrame({ id: msg.id, ok: true, result: "pong" }));
      return msg;
    } finally {
      conn.close();
    }
  })();
  try {
    const session = await Session.connect({ port });
    try {
      await session.ping().catch(() => {});
    } finally {
      await session.close();
    }
    const msg = await first;
    assert.equal(msg.cmd, "ping");
  } finally {
    listener.close();
  }
});

Deno.test("bytesAsBase64Json: bytes become views writing base64 (or {} on the wire); the caller's value is never changed", () => {
  const image = new Uint8Array([1, 2, 3]);
  const result = { image, list: [1, image.buffer], text: "x" };
  const out = bytesAsBase64Json(result) as typeof result;
  assert.notEqual(out, result);
  assert.equal(result.image, image);
  assert.equal(Object.hasOwn(image, "toJSON"), false);
  assert.equal(JSON.stringify(result.image), '{"0":1,"1":2,"2":3}');
  assert.equal(
    JSON.stringify(out),
    '{"image":"AQID","list":[1,"AQID"],"text":"x"}',
  );
  assert.equal(stringifyForWire(out), '{"image":{},"list":[1,{}],"text":"x"}');
  // JSON-only values come back as they are, not copied.
  const plain = { a: [{ b: 1 }], c: null };
  assert.equal(bytesAsBase64Json(plain), plain);
  assert.equal(bytesAsBase64Json(null), null);
  // A detached one is left for the outbox to name; bytes past the budget stay as they are.
  const detached = new Uint8Array(2);
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  assert.equal(
    (bytesAsBase64Json({ detached }) as { detached: unknown }).detached,
    detached,
  );
  const far = [...Array.from({ length: 300 }, () => ({})), { image }];
  assert.equal((bytesAsBase64Json(far) as unknown[])[300], far[300]);
});

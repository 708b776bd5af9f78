import assert from "node:assert/strict";
import {
  ConfigError,
  ConnectionLostError,
  RemoteError,
  SerializationError,
} from "../src/errors.ts";
import { RespParser } from "../plugins/_resp.ts";
import { RedisStore } from "../plugins/redis_store.ts";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Connection, Runtime } from "../src/runtime/types.ts";
import { hasRedis, startRedis } from "./_redis_server.ts";

const redis = hasRedis();
if (!redis) {
  console.warn(
    "redis_store_test: redis-server is not installed; the RedisStore tests against a real server are skipped",
  );
}

Deno.test("RespParser parses replies split at every byte boundary", () => {
  const wire = new TextEncoder().encode(
    "+OK\r\n$4\r\nh\u00e9l\r\n:42\r\n$-1\r\n-ERR bad\r\n*2\r\n$1\r\n0\r\n*1\r\n$1\r\nk\r\n",
  );
  for (let cut = 1; cut < wire.length; cut++) {
    const parser = new RespParser();
    const out = [
      ...parser.push(wire.subarray(0, cut)),
      ...parser.push(wire.subarray(cut)),
    ];
    assert.equal(out.length, 6, `cut at ${cut}`);
    assert.deepEqual(out.slice(0, 4), ["OK", "hél", 42, null]);
    assert.ok(out[4] instanceof RemoteError);
    assert.equal((out[4] as RemoteError).message, "ERR bad");
    assert.deepEqual(out[5], ["0", ["k"]]);
  }
});

Deno.test("RespParser reassembles a large bulk string from many chunks", () => {
  const value = "v".repeat(300_000);
  const wire = new TextEncoder().encode(
    `$${value.length}\r\n${value}\r\n+PONG\r\n`,
  );
  const parser = new RespParser();
  const out = [];
  for (let i = 0; i < wire.length; i += 7_000) {
    out.push(...parser.push(wire.subarray(i, i + 7_000)));
  }
  assert.deepEqual(out, [value, "PONG"]);
});

Deno.test({
  name:
    "RedisStore gets, sets with ttl, deletes and clears its prefix on a real redis-server",
  ignore: !redis,
  async fn() {
    await using server = await startRedis();
    await using store = new RedisStore({ port: server.port, prefix: "t1:" });
    await using other = new RedisStore({ port: server.port, prefix: "t2:" });
    assert.equal(await store.ping(), "PONG");
    assert.equal(await store.get("k"), undefined);
    await store.set("k", { a: [1, "é", null] });
    assert.deepEqual(await store.get("k"), { a: [1, "é", null] });
    await store.set("n", null);
    assert.equal(await store.get("n"), null);
    await other.set("k", "other");
    assert.equal(await store.delete("k"), true);
    assert.equal(await store.delete("k"), false);
    assert.equal(await other.get("k"), "other");

    await store.set("short", 1, { ttl: 0.001 });
    await store.set("long", 2, { ttl: 60 });
    // PX 1 expires within milliseconds; poll redis instead of sleeping a fixed time.
    while ((await store.get("short")) !== undefined) {
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(await store.get("long"), 2);
    // A ttl past what Redis can count is as good as none.
    await store.set("ages", 3, { ttl: 1e20 });
    assert.equal(await store.get("ages"), 3);
    // A value written by something else: a typed error, not a bare SyntaxError.
    const raw = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    try {
      await raw.write(
        new TextEncoder().encode(
          "*3\r\n$3\r\nSET\r\n$7\r\nt1:junk\r\n$3\r\nabc\r\n",
        ),
      );
      const buf = new Uint8Array(16);
      const n = await raw.read(buf);
      assert.equal(
        new TextDecoder().decode(buf.subarray(0, n ?? 0)),
        "+OK\r\n",
      );
    } finally {
      raw.close();
    }
    await assert.rejects(
      store.get("junk"),
      (err: unknown) =>
        err instanceof SerializationError &&
        /Cannot read cache 'junk': the stored value is not JSON/.test(
          err.message,
        ),
    );

    await store.clear();
    assert.equal(await store.get("long"), undefined);
    assert.equal(await store.get("n"), undefined);
    assert.equal(await other.get("k"), "other");
  },
});

Deno.test({
  name: "RedisStore pipelines many commands and keeps their order",
  ignore: !redis,
  async fn() {
    await using server = await startRedis();
    await using store = new RedisStore({ port: server.port });
    await Promise.all(
      Array.from({ length: 2_000 }, (_, i) => store.set(`k${i}`, i)),
    );
    const values = await Promise.all(
      Array.from({ length: 2_000 }, (_, i) => store.get(`k${i}`)),
    );
    assert.deepEqual(values, Array.from({ length: 2_000 }, (_, i) => i));
    const big = "x".repeat(2_000_000);
    await store.set("big", big);
    assert.equal(await store.get("big"), big);
    await store.clear();
  },
});

Deno.test({
  name:
    "RedisStore fails clearly when redis goes away and reconnects when it is back",
  ignore: !redis,
  async fn() {
    await using server = await startRedis();
    await using store = new RedisStore({ port: server.port, timeout: 2_000 });
    await store.set("k", 1);
    await server.kill();
    const err = await store.get("k").then(() => undefined, (e) => e);
    assert.ok(err instanceof ConnectionLostError, String(err));
    assert.match(
      err.message,
      new RegExp(
        `redis at 127\\.0\\.0\\.1:${server.port}|127\\.0\\.0\\.1:${server.port}`,
      ),
    );
    await server.restart();
    assert.equal(await store.ping(), "PONG");
    assert.equal(await store.get("k"), undefined); // a fresh server without persistence
    await store.set("k", 2);
    assert.equal(await store.get("k"), 2);
  },
});

Deno.test({
  name: "RedisStore reports a redis error reply with the command name",
  ignore: !redis,
  async fn() {
    await using server = await startRedis();
    await using store = new RedisStore({
      port: server.port,
      password: "wrong",
    });
    const err = await store.get("k").then(() => undefined, (e) => e);
    assert.ok(err instanceof RemoteError, String(err));
    assert.match(err.message, /Cannot connect to redis .*AUTH failed/);
  },
});

Deno.test({
  name:
    "RedisStore refuses keys with a lone surrogate instead of merging them into one redis key",
  ignore: !redis,
  async fn() {
    await using server = await startRedis();
    await using store = new RedisStore({ port: server.port });
    // UTF-8 turns both into "a\uFFFD": they used to read and overwrite each other's value.
    for (const key of ["a\uD800", "a\uDC00"]) {
      await assert.rejects(store.set(key, 1), (err) => {
        assert.ok(err instanceof TypeError, String(err));
        assert.match(err.message, /lone UTF-16 surrogate/);
        return true;
      });
      await assert.rejects(store.get(key), TypeError);
      await assert.rejects(store.delete(key), TypeError);
    }
    // Well-formed non-ASCII keys (a surrogate pair included) stay distinct.
    await store.set("é\u{1F600}", 1);
    await store.set("e\u{1F600}", 2);
    assert.equal(await store.get("é\u{1F600}"), 1);
    assert.equal(await store.get("e\u{1F600}"), 2);
    await store.clear();
  },
});

Deno.test("RedisStore rejects a bad timeout, port or db with a ConfigError when it is made", () => {
  // A timeout of 0, NaN or -1 used to become a 1 ms timer: commands failed (or not) by luck.
  for (
    const options of [
      { timeout: 0 },
      { timeout: NaN },
      { timeout: -1 },
      { port: 70000 },
      { port: 1.5 },
      { db: -1 },
      { db: 1.5 },
    ]
  ) {
    assert.throws(() => new RedisStore(options), (err) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.details.field, Object.keys(options)[0]);
      return true;
    }, JSON.stringify(options));
  }
  new RedisStore({ timeout: 1, port: 1, db: 0 });
});

Deno.test("RedisStore fails a command at once when the connection drops between its setup and the command", async () => {
  // A server that answers the AUTH and closes in the same breath: the
  // connection is gone before the GET is queued.
  const written: string[] = [];
  const runtime = {
    ...defaultRuntime(),
    connect(): Promise<Connection> {
      const readable = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new TextEncoder().encode("+OK\r\n"));
          c.close();
        },
      });
      const writable = new WritableStream<Uint8Array>({
        write(chunk) {
          written.push(new TextDecoder().decode(chunk));
        },
      });
      return Promise.resolve({ readable, writable, close() {} });
    },
  } as Runtime;
  // With the command left queued, it waited for this timeout instead.
  await using store = new RedisStore({
    runtime,
    password: "p",
    timeout: 60_000,
  });
  await assert.rejects(
    store.get("k"),
    (err: unknown) =>
      err instanceof ConnectionLostError &&
      /Cannot run redis GET: the connection to .* was lost/.test(err.message),
  );
  assert.deepEqual(written, ["*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n"]);
});

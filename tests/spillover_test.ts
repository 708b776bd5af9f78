import assert from "node:assert/strict";
import { modelsDir, readyAgain, startPoolWithModel } from "./_pool_harness.ts";
import { ConfigError, SerializationError, SpillError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { MAX_JSON_DEPTH } from "../src/_json_check.ts";
import type { Plugin, WireMessage } from "../src/plugin.ts";
import { spillover, type SpilloverPlugin } from "../plugins/spillover.ts";
import { reconnect } from "../plugins/reconnect.ts";
import { sharedCache } from "../plugins/shared_cache.ts";
import { jsonSizeBound } from "../plugins/_json_size.ts";
import { jsonPieces } from "../plugins/_json_pieces.ts";
import { nonFiniteReason } from "../src/_non_finite.ts";
import fc from "fast-check";
import { createHash } from "node:crypto";
import { defaultRuntime } from "../src/runtime/mod.ts";
import type { Runtime } from "../src/runtime/types.ts";

const encoder = new TextEncoder();

function startPool(plugins: Plugin[], workers = 1): Promise<Pool> {
  return startPoolWithModel(plugins, {
    name: "spill_echo",
    file: "spill_echo.py",
  }, workers);
}

/** Files (recursively) under the spill directory. */
async function spillFiles(spill: SpilloverPlugin): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await walk(`${dir}/${e.name}`);
      else out.push(`${dir}/${e.name}`);
    }
  };
  await walk(spill.dir!);
  return out;
}

/** Puts the request id into executeModel messages and pads `msg.data` so the encoded request is `target` bytes. */
function sizer(): Plugin & { target: number | undefined } {
  const plugin = {
    name: "test.sizer",
    target: undefined as number | undefined,
    onRequest(msg: WireMessage): void {
      if (msg.cmd !== "executeModel") return;
      const inner = msg.msg as Record<string, unknown>;
      inner.reqId = msg.id;
      if (plugin.target === undefined) return;
      inner.data = "";
      inner.data = "y".repeat(
        plugin.target - encoder.encode(JSON.stringify(msg)).length,
      );
    },
  };
  return plugin;
}

function flipByte(path: string): void {
  const bytes = Deno.readFileSync(path);
  const at = bytes.length >> 1;
  bytes[at] = bytes[at]! ^ 1;
  Deno.writeFileSync(path, bytes);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test("spillover's size bound is never below the encoded size and exact for plain ASCII", () => {
  fc.assert(
    fc.property(
      fc.jsonValue(),
      fc.oneof(fc.constant(Infinity), fc.nat(2_000)),
      (value, limit) => {
        const size = encoder.encode(JSON.stringify(value)).length;
        const bound = jsonSizeBound(value, limit);
        // At most the limit means at least the size: no large message is kept inline.
        assert.ok(bound > limit || bound >= size, `${bound} for ${size}`);
      },
    ),
    { numRuns: 2_000 },
  );
  // Extreme numbers: the coarse walk counts 25 characters for any of them.
  for (const n of [-0.0000012345678901234567, -Number.MAX_VALUE, -5e-324]) {
    assert.ok(jsonSizeBound([n], Infinity) >= JSON.stringify([n]).length);
  }
  const ascii = {
    id: 3,
    cmd: "executeModel",
    name: "x",
    msg: { a: [1, 2.5, true, null, "abc"], b: {}, c: [] },
  };
  const exact = JSON.stringify(ascii).length;
  // Within a limit that the coarse walk passes, the precise walk gives the exact size.
  assert.equal(jsonSizeBound(ascii, exact), exact);
  assert.ok(jsonSizeBound(ascii, Infinity) > exact, "coarse when far within");
  assert.equal(
    jsonSizeBound({ a: undefined, b: [undefined], f: () => 1 }, 12),
    '{"b":[null]}'.length,
  );
  assert.ok(
    jsonSizeBound({ big: "x".repeat(1_000_000), more: "y" }, 100) > 100,
  );
  assert.equal(jsonSizeBound({ d: new Date(0) }, 1_000), Infinity);
});

Deno.test("spillover's jsonPieces joins to exactly JSON.stringify, large strings and toJSON included, or refuses NaN and infinities", () => {
  const same = (value: unknown) =>
    assert.equal([...jsonPieces(value)].join(""), JSON.stringify(value) ?? "");
  fc.assert(fc.property(fc.jsonValue(), same), { numRuns: 1_000 });
  fc.assert(
    fc.property(fc.anything(), (value) => {
      try {
        JSON.stringify(value);
      } catch {
        return; // bigints: both throw
      }
      // JSON.stringify writes them as null; sent so, {x: NaN} reached Python as None.
      if (nonFiniteReason(value, "null") !== undefined) {
        assert.throws(() => [...jsonPieces(value)], TypeError);
        return;
      }
      same(value);
    }),
    { numRuns: 1_000 },
  );
  // Surrogate pairs straddling every piece boundary, escapes and control characters in a long string.
  const long = 'a\u{1F600}"\\\n\u0001\u20ac'.repeat(40_000) + "\ud800";
  for (const value of [long, "x" + long, { a: [long, undefined, () => 1] }]) {
    same(value);
  }
  same({
    d: new Date(0),
    n: { toJSON: (key: string) => key + "!" },
    big: { toJSON: () => "z".repeat(300_000) },
    boxed: new String("s".repeat(100_000)),
    u: undefined,
  });
  for (
    const nan of [NaN, [1, Infinity], {
      a: -Infinity,
      pad: "p".repeat(300_000),
    }]
  ) {
    assert.throws(() => [...jsonPieces({ nan })], TypeError);
  }
  const cycle: Record<string, unknown> = { pad: "p".repeat(300_000) };
  cycle.self = cycle;
  assert.throws(() => [...jsonPieces(cycle)], TypeError);
  assert.throws(() => [...jsonPieces({ b: 1n })], TypeError);
  assert.deepEqual([...jsonPieces(undefined)], []);
  assert.ok(
    [...jsonPieces({ s: "q".repeat(1_000_000) })].every((p) =>
      p.length <= 64 * 1024
    ),
  );
});

/** `{a: {a: ... value}}`, `levels` objects deep. */
function nested(levels: number, value: unknown = 1): unknown {
  for (let i = 0; i < levels; i++) value = { a: value };
  return value;
}

Deno.test("spillover's size bound refuses nesting deeper than MAX_JSON_DEPTH and bigints, without overflowing", () => {
  // The message is level 1: MAX_JSON_DEPTH levels in all pass, one more does not.
  assert.ok(jsonSizeBound(nested(MAX_JSON_DEPTH), 1 << 20) < 1 << 20);
  for (const levels of [MAX_JSON_DEPTH + 1, 5000, 100_000]) {
    assert.throws(
      () => jsonSizeBound(nested(levels), 1 << 20),
      /nested deeper than 900 levels/,
    );
  }
  // The depth counts from where the value sits in its message.
  assert.throws(() => jsonSizeBound(nested(10), 1 << 20, MAX_JSON_DEPTH - 5));
  assert.throws(() => jsonSizeBound({ n: 1n }, 1 << 20), TypeError);
  assert.throws(
    () => [...jsonPieces({ s: "s".repeat(100_000), d: nested(5000) })],
    /nested deeper/,
  );
});

// The two tests of a pool with spillover({ threshold: 1024 }) alone, as steps on one such pool
// (a Python server start each, otherwise); the first checks that nothing was spilled yet, so it
// goes first.
Deno.test("spillover refusing messages that are not JSON, on one pool with a 1 KiB threshold", async (t) => {
  const spill = spillover({ threshold: 1024 });
  const pool = await startPool([spill]);
  try {
    await t.step(
      "spillover: a BigInt, a cycle, nesting too deep or a getter that throws fails with SerializationError, blaming no plugin",
      () => spilloverBigIntCycleNestingToo(pool, spill),
    );
    await t.step(
      "spillover: a toJSON that throws is a SerializationError, as without the plugin, small or large",
      () => spilloverToJSONThatThrowsSerializationError(pool, spill),
    );
  } finally {
    await pool.close();
  }
});

/** A step of "spillover refusing messages that are not JSON, on one pool with a 1 KiB threshold": spillover: a BigInt, a cycle, nesting too deep or a getter that throws fails with SerializationError, blaming no plugin */
async function spilloverBigIntCycleNestingToo(
  pool: Pool,
  spill: SpilloverPlugin,
): Promise<void> {
  const cycle: Record<string, unknown> = { pad: "p".repeat(100) };
  cycle.self = cycle;
  const big = { data: "x".repeat(4096), n: 2n };
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ op: "len", n: 1n }, /msg\.n is a BigInt/],
    [big, /msg\.n is a BigInt/],
    [{ op: "len", c: cycle }, /msg\.c\.self is circular/],
    [{ op: "len", d: nested(5000) }, /msg\.d\.a\.a.* nested deeper than 900/],
    // A getter that throws as it is read (was a PluginError blaming
    // spillover: the look for the cause read it again and threw).
    [{
      op: "len",
      get x(): number {
        throw new Error("unreadable");
      },
    }, /reading it threw \(unreadable\)/],
  ];
  for (const [msg, message] of cases) {
    await assert.rejects(pool.execute("spill_echo", msg), (err) => {
      assert.ok(err instanceof SerializationError, String(err));
      assert.equal(err.code, "SERIALIZATION");
      assert.match(err.message, /^Cannot send executeModel: /);
      assert.match(err.message, message);
      return true;
    });
  }
  // Found before anything was spilled or hashed: no file, no hash thread.
  assert.equal(spill.stats.spilledOut, 0);
  assert.equal(spill.stats.hashedOffThread, 0);
  assert.equal(spill.pendingBytes, 0);
  // The deepest message the limit allows still reaches Python and back.
  const deep = nested(MAX_JSON_DEPTH - 3);
  assert.deepEqual(
    await pool.execute("spill_echo", { op: "echo", d: deep }),
    { op: "echo", d: deep },
  );
}

/** A step of "spillover refusing messages that are not JSON, on one pool with a 1 KiB threshold": spillover: a toJSON that throws is a SerializationError, as without the plugin, small or large */
async function spilloverToJSONThatThrowsSerializationError(
  pool: Pool,
  spill: SpilloverPlugin,
): Promise<void> {
  const bad = {
    toJSON() {
      throw new Error("tj");
    },
  };
  for (const msg of [{ t: bad }, { t: bad, pad: "p".repeat(4096) }]) {
    await assert.rejects(pool.execute("spill_echo", msg), (err) => {
      assert.ok(err instanceof SerializationError, String(err));
      assert.equal(
        err.message,
        "Cannot send executeModel: it is not JSON (tj)",
      );
      return true;
    });
  }
  assert.equal(spill.pendingBytes, 0);
  assert.deepEqual(
    await pool.execute("spill_echo", { op: "echo", n: 1 }),
    { op: "echo", n: 1 },
  );
}

Deno.test("spillover: a bad threshold or maxBytes is a ConfigError, and so is a dir where no directory can be made", async () => {
  for (
    const options of [{ threshold: 0 }, { threshold: 1.5 }, { maxBytes: 0 }, {
      maxBytes: NaN,
    }, { dir: "" }]
  ) {
    assert.throws(() => spillover(options), (err) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.code, "CONFIG_INVALID");
      return true;
    });
  }
  const file = await Deno.makeTempFile({ prefix: "pyproxy-spill-test-" });
  try {
    await assert.rejects(
      Pool.start({
        workers: 1,
        handleSignals: false,
        plugins: [spillover({ dir: `${file}/spill` })],
      }),
      (err) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(err.message, /^Cannot start spillover plugin: dir: /);
        assert.equal(err.details.field, "dir");
        return true;
      },
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("spillover without read and write access to its directory (Deno's lists, Runtime.mayAccess) is off for the default one and a ConfigError for a dir given, never a prompt", async () => {
  const base = defaultRuntime();
  const asked: string[] = [];
  const runtime: Runtime = {
    ...base,
    mayAccess: (path) => {
      asked.push(path);
      return false;
    },
  };
  const file = await Deno.makeTempDir({ prefix: "pyproxy-spill-test-" });
  try {
    await assert.rejects(
      Pool.start({
        workers: 1,
        runtime,
        handleSignals: false,
        plugins: { defaults: false, use: [spillover({ dir: file })] },
      }),
      (err) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.match(
          err.message,
          /no read and write access to '.*'.*not asked/,
        );
        assert.equal(err.details.field, "dir");
        return true;
      },
    );
    assert.ok(asked.includes(file), String(asked));
    // The default directory: no spill-over, the calls go in frames.
    const spill = spillover({ threshold: 1024 });
    await using pool = await Pool.start({
      workers: 1,
      runtime,
      modelsDir: new URL("../python/tests/models/", import.meta.url).pathname,
      handleSignals: false,
      plugins: { defaults: false, use: [spill] },
    });
    await pool.addModel("spill_echo", { file: "spill_echo.py" });
    assert.equal(spill.dir, undefined);
    const data = "x".repeat(64 * 1024);
    const result = await pool.execute("spill_echo", { op: "echo", data }) as {
      data: string;
    };
    assert.equal(result.data, data);
    assert.equal(spill.stats.spilledOut, 0);
    assert.equal(spill.stats.spilledIn, 0);
  } finally {
    await Deno.remove(file, { recursive: true });
  }
});

Deno.test("spillover round-trips 20 MB both ways through a private directory", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const pool = await startPool([spill]);
  let dir: string | undefined;
  try {
    dir = spill.dir!;
    const shm = await Deno.stat("/dev/shm").then(
      (s) => s.isDirectory,
      () => false,
    );
    if (shm) assert.ok(dir.startsWith("/dev/shm/pyproxy-spill-"), dir);
    assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
    const data = 'ab\u20ac\n"'.repeat(4 * 1024 * 1024); // 20 MiB of characters, multi-byte and escaped ones
    const result = await pool.execute("spill_echo", { op: "echo", data }) as {
      data: string;
    };
    assert.equal(result.data.length, data.length);
    assert.ok(result.data === data);
    assert.equal(spill.stats.spilledOut, 1);
    assert.equal(spill.stats.spilledIn, 1);
    assert.ok(spill.stats.bytesOut > 20 * 1024 * 1024);
    assert.equal(spill.stats.failures, 0);
    assert.deepEqual(await spillFiles(spill), []);
    assert.equal(spill.pendingBytes, 0);
  } finally {
    await pool.close();
  }
  assert.equal(spill.dir, undefined);
  assert.equal(
    await exists(dir!),
    false,
    "the spill directory is removed at close",
  );
});

Deno.test("spillover: a call in flight when pool.close() starts still spills its large answer; the directory goes once the workers have stopped", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const pool = await startPool([spill]);
  const gate = await Deno.makeTempFile({ prefix: "pyproxy-spill-gate-" });
  await Deno.remove(gate);
  let dir: string | undefined;
  try {
    dir = spill.dir!;
    const call = pool.execute("spill_echo", {
      op: "gated_make",
      gate,
      n: 1024 * 1024,
    }) as Promise<{ data: string }>;
    for (let i = 0; i < 3000 && !(await exists(`${gate}.started`)); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    // The close's grace: the call runs on, and its answer (1 MiB, over the
    // threshold) is written to a spill file once the gate opens (the
    // directory removed as the close began failed it: "Cannot write spill
    // file").
    const closed = pool.close();
    await Deno.writeTextFile(gate, "open");
    const result = await call;
    assert.equal(result.data.length, 1024 * 1024);
    assert.equal(spill.stats.spilledIn, 1);
    await closed;
  } finally {
    await pool.close();
    await Deno.remove(`${gate}.started`).catch(() => {});
    await Deno.remove(gate).catch(() => {});
  }
  assert.equal(spill.dir, undefined);
  assert.equal(await exists(dir!), false, "removed once the pool closed");
});

Deno.test("spillover spills a request one byte above the threshold, not at it", async () => {
  const threshold = 4096;
  const spill = spillover({ threshold });
  const size = sizer();
  const pool = await startPool([size, spill]);
  try {
    size.target = threshold;
    const atResult = await pool.execute("spill_echo", { op: "len" }) as {
      len: number;
    };
    assert.equal(spill.stats.spilledOut, 0);
    size.target = threshold + 1;
    const aboveResult = await pool.execute("spill_echo", { op: "len" }) as {
      len: number;
    };
    assert.equal(spill.stats.spilledOut, 1);
    assert.equal(aboveResult.len, atResult.len + 1);
    size.target = threshold + 1000;
    await pool.execute("spill_echo", { op: "len" });
    assert.equal(spill.stats.spilledOut, 2);
    assert.deepEqual(await spillFiles(spill), []);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover beside the defaults: the plugins added after it see a large call's message, not its $spill stub, and what they add counts in its size check", async () => {
  const threshold = 4096;
  const spill = spillover({ threshold });
  const requests: WireMessage[] = [];
  const replies: WireMessage[] = [];
  const after: Plugin = {
    name: "test.after",
    onRequest(msg) {
      if (msg.cmd === "executeModel" || "$spill" in msg) requests.push(msg);
    },
    onReply(msg) {
      if ("ok" in msg) replies.push(msg);
    },
  };
  const size = sizer();
  await using dir = await modelsDir();
  // An array: the defaults, spillover() replacing the default one at its
  // place, then the plugins added.
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    plugins: [spill, after, size],
  });
  await pool.addModel("spill_echo", {
    source: await Deno.readTextFile(
      new URL("../python/tests/models/spill_echo.py", import.meta.url),
    ),
  });
  const data = "x".repeat(2 * threshold);
  await pool.execute("spill_echo", { op: "echo", data }, {
    requestId: "big-1",
    headers: { "x-tenant": "t1" },
  });
  assert.equal(spill.stats.spilledOut, 1);
  assert.equal(spill.stats.spilledIn, 1);
  assert.equal(requests.length, 1);
  const { cmd, name, requestId, headers } = requests[0]!;
  assert.deepEqual({ cmd, name, requestId, headers }, {
    cmd: "executeModel",
    name: "spill_echo",
    requestId: "big-1",
    headers: { "x-tenant": "t1" },
  });
  assert.equal((requests[0]!.msg as { data: string }).data.length, data.length);
  const reply = replies.at(-1)!;
  assert.equal("$spill" in reply, false);
  assert.equal((reply.result as { data: string }).data, data);
  // A plugin after it that makes a call's message larger: it spills.
  size.target = threshold + 1;
  await pool.execute("spill_echo", { op: "len" });
  assert.equal(spill.stats.spilledOut, 2);
  assert.deepEqual(await spillFiles(spill), []);
});

Deno.test("spillover reads a reply one byte above the threshold from a file, not one at it", async () => {
  const threshold = 4096;
  const spill = spillover({ threshold });
  const pool = await startPool([sizer(), spill]);
  try {
    const at = await pool.execute("spill_echo", {
      op: "sized",
      size: threshold,
    }) as { data: string };
    assert.equal(spill.stats.spilledIn, 0);
    const above = await pool.execute("spill_echo", {
      op: "sized",
      size: threshold + 1,
    }) as { data: string };
    assert.equal(spill.stats.spilledIn, 1);
    assert.equal(spill.stats.bytesIn, threshold + 1);
    assert.equal(above.data.length, at.data.length + 1);
    assert.deepEqual(await spillFiles(spill), []);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover under a frame limit below its threshold: what is above the limit spills both ways (it could not be sent inline)", async () => {
  // The default threshold (1 MiB) over a 4096-byte frame limit: a 100 KB
  // request or answer failed "configure spill-over" with spill-over on.
  const spill = spillover();
  const size = sizer();
  const pool = await Pool.start({
    workers: 1,
    modelsDir: new URL("../python/tests/models/", import.meta.url).pathname,
    handleSignals: false,
    maxFrameSize: 4096,
    plugins: { defaults: false, use: [size, spill] },
  });
  try {
    await pool.addModel("spill_echo", { file: "spill_echo.py" });
    size.target = 100_000;
    const request = await pool.execute("spill_echo", { op: "len" }) as {
      len: number;
    };
    assert.ok(request.len >= 99_000, String(request.len));
    assert.equal(spill.stats.spilledOut, 1);
    // Small requests from here on: they stay inline.
    size.target = 1000;
    const answer = await pool.execute("spill_echo", {
      op: "sized",
      size: 100_000,
    }) as { data: string };
    // `sized` answers a message of that many bytes in all.
    assert.ok(answer.data.length >= 99_000, String(answer.data.length));
    assert.equal(spill.stats.spilledIn, 1);
    await pool.execute("spill_echo", { op: "len" });
    assert.equal(spill.stats.spilledOut, 1);
    assert.deepEqual(await spillFiles(spill), []);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover carries large host callbacks from Python and their replies through files", async () => {
  const spill = spillover({ threshold: 1024 });
  const cache = sharedCache();
  const pool = await startPool([spill, cache]);
  try {
    await pool.addModel("cache_ops", { file: "cache_ops.py" });
    // (The model's source came back in its addModel reply: counted from here.)
    const out0 = spill.stats.spilledOut;
    const in0 = spill.stats.spilledIn;
    const big = "v\u00e9".repeat(100_000);
    // executeModel (host → Python) and cache.set (Python → host) are both spilled.
    await pool.execute("cache_ops", { op: "set", key: "big", value: big });
    assert.equal(spill.stats.spilledOut - out0, 1);
    assert.equal(spill.stats.spilledIn - in0, 1);
    assert.ok(await cache.store.get("big") === big);
    // The cache.get reply (host → Python) and the model's result (Python → host) are both spilled.
    const got = await pool.execute("cache_ops", { op: "get", key: "big" }) as {
      value: string;
    };
    assert.ok(got.value === big);
    assert.equal(spill.stats.spilledOut - out0, 2);
    assert.equal(spill.stats.spilledIn - in0, 2);
    assert.deepEqual(await spillFiles(spill), []);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover rejects a corrupted reply file with SpillError and deletes it", async () => {
  const spill = spillover({ threshold: 1024 });
  const seen: string[] = [];
  let armed = false; // once the model is loaded (its addModel reply may spill)
  const corrupt: Plugin = {
    name: "test.corrupt",
    onReply(msg) {
      const ref = msg.$spill as { path: string } | undefined;
      if (ref === undefined || !armed) return;
      seen.push(ref.path);
      flipByte(ref.path);
    },
  };
  const pool = await startPool([corrupt, spill]);
  armed = true;
  const failures0 = spill.stats.failures;
  try {
    await assert.rejects(
      pool.execute("spill_echo", { op: "make", n: 10_000 }),
      (err: unknown) =>
        err instanceof SpillError && /crc32 mismatch/.test(err.message),
    );
    assert.equal(seen.length, 1);
    assert.equal(await exists(seen[0]!), false);
    assert.equal(spill.stats.failures - failures0, 1);
    // The session survives: the next call works.
    assert.deepEqual(await pool.execute("spill_echo", { op: "make", n: 3 }), {
      data: "xxx",
    });
  } finally {
    await pool.close();
  }
});

Deno.test("spillover refuses a reply path outside the spill directory and leaves that file alone", async () => {
  const spill = spillover({ threshold: 1024 });
  // Every copy made (a reply may spill more than once), removed at the end.
  const made: string[] = [];
  let outside: string | undefined;
  let armed = false;
  const redirect: Plugin = {
    name: "test.redirect",
    onReply(msg) {
      const ref = msg.$spill as
        | { path: string; size: number; md5: string }
        | undefined;
      if (ref === undefined || !armed) return;
      // A valid copy (same size and md5) next to the spill directory, reached through "..".
      const name = `outside-${crypto.randomUUID()}.json`;
      outside = `${spill.dir!.slice(0, spill.dir!.lastIndexOf("/"))}/${name}`;
      made.push(outside);
      Deno.copyFileSync(ref.path, outside);
      return { ...msg, $spill: { ...ref, path: `${spill.dir}/../${name}` } };
    },
  };
  const pool = await startPool([redirect, spill]);
  armed = true; // once the model is loaded (its addModel reply may spill)
  try {
    await assert.rejects(
      pool.execute("spill_echo", { op: "make", n: 10_000 }),
      (err: unknown) =>
        err instanceof SpillError &&
        /outside the spill directory/.test(err.message),
    );
    assert.equal(await exists(outside!), true);
  } finally {
    await pool.close();
    for (const path of made) await Deno.remove(path).catch(() => {});
  }
});

Deno.test("spillover: a corrupted request file fails on the server with SpillError and is deleted", async () => {
  const spill = spillover({ threshold: 1024 });
  const seen: string[] = [];
  const corrupt: Plugin = {
    name: "test.corrupt",
    onRequest(msg) {
      const ref = msg.$spill as { path: string } | undefined;
      if (ref === undefined) return;
      seen.push(ref.path);
      flipByte(ref.path);
    },
  };
  const pool = await startPool([spill, corrupt]);
  try {
    await assert.rejects(
      pool.execute("spill_echo", { op: "len", data: "z".repeat(50_000) }),
      (err: unknown) =>
        err instanceof SpillError && /crc32 mismatch/.test(err.message),
    );
    assert.equal(seen.length, 1);
    assert.equal(await exists(seen[0]!), false);
    assert.equal(spill.pendingBytes, 0);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover leaves no file behind when a worker is killed mid-spill", async () => {
  const spill = spillover({ threshold: 1024 });
  const pool = await startPool([
    spill,
    reconnect({ heartbeatInterval: 0, backoff: { initial: 1, jitter: 0 } }),
  ]);
  const events = pool.events()[Symbol.asyncIterator]();
  try {
    const pid = pool.status().workers[0]!.pid!;
    Deno.kill(pid, "SIGSTOP"); // the server cannot read the file we are about to write
    const call = pool.execute("spill_echo", {
      op: "len",
      data: "z".repeat(100_000),
    });
    const failed = call.then(() => undefined, (err) => err);
    while (spill.stats.spilledOut === 0) {
      await new Promise((r) => setTimeout(r, 1));
    }
    const before = await spillFiles(spill);
    assert.equal(before.length, 1);
    // What a dying server may leave: its own half-sent reply file.
    const workerDir = before[0]!.slice(0, before[0]!.lastIndexOf("/"));
    Deno.writeFileSync(`${workerDir}/py-c1-99.json`, encoder.encode("{}"));
    Deno.kill(pid, "SIGKILL");
    assert.ok(await failed instanceof Error);
    for (;;) {
      const { value, done } = await events.next();
      assert.ok(!done);
      if (value.type === "worker-state" && value.to === "ready") break;
    }
    assert.deepEqual(await spillFiles(spill), []);
    assert.equal(spill.pendingBytes, 0);
    // The restarted worker has a fresh directory and spills again.
    const result = await pool.execute("spill_echo", {
      op: "len",
      data: "z".repeat(100_000),
    });
    assert.deepEqual(result, {
      len: 100_000,
      md5: (result as { md5: string }).md5,
    });
    assert.deepEqual(await spillFiles(spill), []);
  } finally {
    await events.return?.();
    await pool.close();
  }
});

Deno.test("spillover refuses to spill past maxBytes while the server has not consumed earlier files", async () => {
  const spill = spillover({ threshold: 1024, maxBytes: 10_000 });
  const pool = await startPool([spill]);
  const pid = pool.status().workers[0]!.pid!;
  try {
    Deno.kill(pid, "SIGSTOP");
    // Both spills open their file before reserving bytes, so either may be the one refused: settle both
    // at once and check that exactly one was refused and the other completes once the server runs again.
    const calls = ["a", "b"].map((ch) =>
      pool.execute("spill_echo", { op: "len", data: ch.repeat(6_000) }).then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error }),
      )
    );
    const refused = await Promise.race(calls);
    assert.equal(
      refused.ok,
      false,
      "the first call to settle must be the refused one",
    );
    const err = (refused as { error: unknown }).error;
    // The documented error itself, not a PluginError wrapping it.
    assert.ok(err instanceof SpillError, String(err));
    assert.equal(err.code, "SPILL_FAILED");
    assert.equal(err.details.maxBytes, 10_000);
    assert.match((err as Error).message, /maxBytes/);
    Deno.kill(pid, "SIGCONT");
    const settled = await Promise.all(calls);
    assert.equal(settled.filter((c) => !c.ok).length, 1);
    const done = settled.find((c) => c.ok);
    assert.equal((done?.value as { len: number } | undefined)?.len, 6_000);
    assert.equal(spill.pendingBytes, 0);
    assert.equal(
      ((await pool.execute("spill_echo", {
        op: "len",
        data: "c".repeat(6_000),
      })) as { len: number }).len,
      6_000,
    );
  } finally {
    try {
      Deno.kill(pid, "SIGCONT");
    } catch { /* exited */ }
    await pool.close();
  }
});

Deno.test("spillover removes the directory of a dead host at start and keeps a live host's", async () => {
  const parent = await Deno.makeTempDir({ prefix: "spill-parent-" });
  try {
    const dead = `${parent}/pyproxy-spill-999999999-abc`; // above any pid_max
    const live = `${parent}/pyproxy-spill-1-abc`; // pid 1 always runs
    for (const dir of [dead, live]) {
      await Deno.mkdir(`${dir}/w1-1`, { recursive: true });
      await Deno.writeTextFile(`${dir}/w1-1/h-1.json`, "{}");
    }
    const spill = spillover({ dir: parent });
    const pool = await startPool([spill]);
    try {
      assert.ok(
        spill.dir!.startsWith(
          `${await Deno.realPath(parent)}/pyproxy-spill-${Deno.pid}-`,
        ),
      );
      assert.equal(await exists(dead), false);
      assert.equal(await exists(`${live}/w1-1/h-1.json`), true);
    } finally {
      await pool.close();
    }
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});

/** Stands for a host that offers neither CRC-32s nor string segments: configure goes out without them. */
const noNewForms: Plugin = {
  name: "test.noNewForms",
  onRequest(msg) {
    if (msg.cmd !== "configure") return;
    const spill = msg.spill as Record<string, unknown> | null;
    if (spill) {
      delete spill.crc32;
      delete spill.strings;
    }
  },
};

Deno.test("spillover hashes large files on a second thread once it runs, with the same results (md5: no CRC-32 offered)", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const pool = await startPool([noNewForms, spill]);
  try {
    // 3 Mi characters, 8 MiB as JSON (16 bytes each 6): twice the off-thread size (4 MiB).
    const data = 'é€x"\\\u0001'.repeat(512 * 1024);
    // The thread starts in the background on the first large message; until then hashing stays here.
    for (let i = 0; i < 40 && spill.stats.hashedOffThread < 4; i++) {
      const result = await pool.execute("spill_echo", { op: "echo", data }) as {
        data: string;
      };
      assert.ok(result.data === data);
    }
    assert.ok(spill.stats.hashedOffThread >= 4, "both ways, off the thread");
    assert.equal(spill.stats.failures, 0);
    assert.deepEqual(await spillFiles(spill), []);
  } finally {
    await pool.close();
  }
});

/** Records the `$spill` references of requests (after spillover) and replies (before it). */
function refRecorder(): {
  before: Plugin;
  after: Plugin;
  requests: Record<string, unknown>[];
  replies: Record<string, unknown>[];
} {
  const requests: Record<string, unknown>[] = [];
  const replies: Record<string, unknown>[] = [];
  return {
    requests,
    replies,
    before: {
      name: "test.replyRefs",
      onReply(msg) {
        if (msg.$spill !== undefined) {
          replies.push(msg.$spill as Record<string, unknown>);
        }
      },
    },
    after: {
      name: "test.requestRefs",
      onRequest(msg) {
        if (msg.$spill !== undefined) {
          requests.push(msg.$spill as Record<string, unknown>);
        }
      },
    },
  };
}

Deno.test("spillover: both sides send CRC-32s and raw string segments once configure agreed on them", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const rec = refRecorder();
  const pool = await startPool([rec.before, spill, rec.after]);
  try {
    // Multi-byte text, an astral character and a leading U+FEFF: raw UTF-8 both ways.
    const data = "\uFEFFp\u20ac\u{1F600}".repeat(300_000);
    const result = await pool.execute("spill_echo", {
      op: "echo",
      data,
      small: "s",
    }) as { data: string; small: string };
    assert.ok(result.data === data);
    assert.equal(result.small, "s");
    assert.equal(rec.requests.length, 1);
    assert.equal(rec.replies.length, 1);
    const [request, reply] = [rec.requests[0]!, rec.replies[0]!];
    for (const ref of [request, reply]) {
      assert.equal(ref.md5, undefined);
      assert.equal(ref.md5Parts, undefined);
      assert.equal(typeof ref.crc32, "number");
      const strings = ref.strings as { at: unknown[]; length: number }[];
      assert.equal(strings.length, 1);
      assert.equal(strings[0]!.length, encoder.encode(data).length);
      assert.ok((ref.json as number) < 1000);
    }
    assert.deepEqual(
      (reply.strings as { at: unknown[] }[])[0]!.at,
      ["result", "data"],
    );
    assert.equal(
      (request.strings as { at: unknown[] }[])[0]!.at.at(-1),
      "data",
    );
    assert.equal(spill.stats.hashedOffThread, 0);
    assert.equal(spill.stats.failures, 0);
    assert.deepEqual(await spillFiles(spill), []);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover: a long string with a lone surrogate stays in the JSON, both ways", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const rec = refRecorder();
  const pool = await startPool([rec.before, spill, rec.after]);
  try {
    const data = "a".repeat(100_000) + "\ud800" + "b".repeat(100_000);
    const other = "c".repeat(100_000);
    const result = await pool.execute("spill_echo", {
      op: "echo",
      data,
      other,
    });
    assert.deepEqual(result, { op: "echo", data, other });
    for (const ref of [...rec.requests, ...rec.replies]) {
      const strings = ref.strings as { at: unknown[] }[];
      // Only the well-formed string travels raw.
      assert.equal(strings.length, 1);
      assert.equal(strings[0]!.at.at(-1), "other");
    }
    assert.equal(rec.requests.length + rec.replies.length, 2);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover: replies full of escapes (1.5 MB of line ends, lone surrogates) read from files round-trip equal", async () => {
  // With the default forms (the line ends may travel as a raw segment) and without them (every
  // reply is JSON for SpillJsonReader). Such replies took seconds each, the host's event loop
  // blocked, while the reader rescanned the chunk after each escape.
  for (const forms of [[], [noNewForms]]) {
    const spill = spillover(); // the default threshold: 1 MiB
    const rec = refRecorder();
    const pool = await startPool([...forms, rec.before, spill, rec.after]);
    try {
      const cases = [
        { char: "ab\n", n: 500_000 }, // 1.5 MB of characters, 2 MB of JSON
        { char: "\ud800x", n: 250_000 }, // lone surrogates: always escaped in the JSON
        { char: 'q"\\\t', n: 300_000 },
      ];
      for (const { char, n } of cases) {
        const result = await pool.execute("spill_echo", {
          op: "make",
          char,
          n,
        }) as { data: string };
        assert.ok(result.data === char.repeat(n), JSON.stringify(char));
      }
      assert.equal(spill.stats.spilledIn, cases.length);
      assert.equal(rec.replies.length, cases.length);
      if (forms.length > 0) {
        // Read by SpillJsonReader, then (it gives up on long escaped literals) by JSON.parse.
        assert.ok(rec.replies.every((ref) => ref.strings === undefined));
      }
      assert.equal(spill.stats.failures, 0);
      assert.deepEqual(await spillFiles(spill), []);
    } finally {
      await pool.close();
    }
  }
});

Deno.test("spillover: both sides send part hashes (one md5 per MiB) when the host offers no CRC-32", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const rec = refRecorder();
  const pool = await startPool([noNewForms, rec.before, spill, rec.after]);
  try {
    const data = "p\u20ac".repeat(1024 * 1024); // 4 MiB of UTF-8: 5 parts with the JSON around it
    const result = await pool.execute("spill_echo", { op: "echo", data }) as {
      data: string;
    };
    assert.ok(result.data === data);
    for (const ref of [...rec.requests, ...rec.replies]) {
      assert.equal(ref.md5, undefined);
      assert.equal(ref.partSize, 1024 * 1024);
      const parts = ref.md5Parts as string[];
      assert.equal(parts.length, Math.ceil((ref.size as number) / (1 << 20)));
      assert.ok(parts.every((p) => /^[0-9a-f]{32}$/.test(p)));
      assert.equal(ref.crc32, undefined);
      assert.equal(ref.strings, undefined);
    }
    assert.equal(rec.requests.length, 1);
    assert.equal(rec.replies.length, 1);
    assert.equal(spill.stats.failures, 0);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover: a server that leaves partSize, crc32 and strings out of its configure reply gets whole-file md5s", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const rec = refRecorder();
  // Stands for a server without part hashes: its reply to configure has no partSize.
  const oldServer: Plugin = {
    name: "test.oldServer",
    onReply(msg) {
      const result = msg.result as { spill?: Record<string, unknown> } | null;
      if (msg.ok === true && result?.spill?.dir !== undefined) {
        delete result.spill.partSize;
        delete result.spill.crc32;
        delete result.spill.strings;
      }
    },
  };
  const pool = await startPool([oldServer, spill, rec.after]);
  try {
    const data = "w".repeat(3 * 1024 * 1024);
    const result = await pool.execute("spill_echo", { op: "echo", data }) as {
      data: string;
    };
    assert.ok(result.data === data);
    assert.equal(rec.requests.length, 1);
    assert.match(String(rec.requests[0]!.md5), /^[0-9a-f]{32}$/);
    assert.equal(rec.requests[0]!.md5Parts, undefined);
    assert.equal(rec.requests[0]!.crc32, undefined);
    assert.equal(rec.requests[0]!.strings, undefined);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover reads a whole-file md5 reference, and refuses a wrong one", async () => {
  const spill = spillover({ threshold: 1024 });
  let wrong = false;
  // Stands for a peer that hashes whole files: the reference gets the file's md5 instead of its parts.
  const whole: Plugin = {
    name: "test.whole",
    onReply(msg) {
      const ref = msg.$spill as Record<string, unknown> | undefined;
      if (ref === undefined) return;
      const bytes = Deno.readFileSync(ref.path as string);
      const md5 = createHash("md5").update(bytes).digest("hex");
      const { partSize: _, md5Parts: __, ...rest } = ref;
      return {
        ...msg,
        $spill: {
          ...rest,
          md5: wrong ? "0".repeat(32) : md5,
        },
      };
    },
  };
  const pool = await startPool([whole, spill]);
  try {
    const result = await pool.execute("spill_echo", { op: "make", n: 10_000 });
    assert.deepEqual(result, { data: "x".repeat(10_000) });
    wrong = true;
    await assert.rejects(
      pool.execute("spill_echo", { op: "make", n: 10_000 }),
      (err: unknown) =>
        err instanceof SpillError && /md5 mismatch/.test(err.message),
    );
  } finally {
    await pool.close();
  }
});

Deno.test("spillover: one instance serves one pool at a time; a second pool is a ConfigError and leaves the first one's directories alone", async () => {
  // Worker ids repeat from pool to pool: a second start with the same instance used to remove the first
  // pool's w1 directory and point `dir` at its own, so both pools' large calls failed with SpillError.
  const spill = spillover({ threshold: 64 * 1024 });
  const big = "x".repeat(200_000);
  const len = async (pool: Pool) =>
    (await pool.execute("spill_echo", { op: "len", data: big }) as {
      len: number;
    }).len;
  const a = await startPool([spill]);
  try {
    const dir = spill.dir;
    await assert.rejects(startPool([spill]), (err) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.match(err.message, /spillover\(\) once per pool/);
      return true;
    });
    assert.equal(spill.dir, dir);
    assert.equal(await len(a), big.length);
    assert.equal(spill.stats.spilledOut, 1);
  } finally {
    await a.close();
  }
  // Free again once its pool closed.
  const b = await startPool([spill]);
  try {
    assert.equal(await len(b), big.length);
  } finally {
    await b.close();
  }
});

Deno.test("spillover deletes a late reply's file unread: nobody waits for it, and reading it would hold up the replies behind it", async () => {
  const spill = spillover({ threshold: 1024 });
  const controller = new AbortController();
  let late: string | undefined;
  // Gives the call up as its spilled reply arrives, and corrupts the file: a
  // read would count a failure.
  const giveUp: Plugin = {
    name: "test.give-up",
    onReply(msg) {
      const ref = msg.$spill as { path: string } | undefined;
      if (ref === undefined || late !== undefined || !armed) return;
      late = ref.path;
      flipByte(ref.path);
      controller.abort();
    },
  };
  let armed = false;
  const pool = await startPool([giveUp, spill]);
  armed = true; // once the model is loaded (its addModel reply may spill)
  try {
    await assert.rejects(
      pool.execute("spill_echo", { op: "make", n: 10_000 }, {
        signal: controller.signal,
      }),
      { name: "CancelledError" },
    );
    assert.ok(late !== undefined, "the reply was spilled");
    // The deletion is not awaited by the read loop: wait for it.
    for (let i = 0; i < 200 && await exists(late); i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(await exists(late), false);
    assert.equal(spill.stats.dropped, 1);
    assert.equal(spill.stats.failures, 0, "the file was never read");
    // The connection goes on.
    const big = await pool.execute("spill_echo", { op: "make", n: 5000 });
    assert.equal((big as { data: string }).data.length, 5000);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover stops writing a request given up on while it is being spilled: the file is removed and nothing is sent", async () => {
  const spill = spillover({ threshold: 1024 });
  const controller = new AbortController();
  const rt = defaultRuntime();
  let writes = 0;
  let armed = false;
  // Gives the call up as the first chunk of its file is written.
  const runtime: Runtime = {
    ...rt,
    openWrite: async (path) => {
      const file = await rt.openWrite(path);
      return {
        write: async (chunk) => {
          await file.write(chunk);
          writes++;
          if (armed) controller.abort();
        },
        close: () => file.close(),
      };
    },
  };
  const pool = await Pool.start({
    workers: 1,
    modelsDir: new URL("../python/tests/models/", import.meta.url).pathname,
    handleSignals: false,
    runtime,
    plugins: { defaults: false, use: [spill] },
  });
  try {
    await pool.addModel("spill_echo", { file: "spill_echo.py" });
    armed = true;
    // ~12 MB: six chunks of 2 MiB.
    await assert.rejects(
      pool.execute("spill_echo", { data: "x".repeat(12_000_000) }, {
        signal: controller.signal,
      }),
      { name: "CancelledError" },
    );
    armed = false;
    // The writer stops at its next chunk and removes the file: wait for that.
    for (let i = 0; i < 200 && spill.stats.abandoned === 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(spill.stats.abandoned, 1);
    assert.equal(spill.stats.spilledOut, 0, "never sent");
    assert.ok(writes <= 2, `${writes} chunks written`);
    // The writer removes its file, then releases the file's bytes.
    for (
      let i = 0;
      i < 200 &&
      (spill.pendingBytes > 0 || (await spillFiles(spill)).length > 0);
      i++
    ) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(await spillFiles(spill), []);
    assert.equal(spill.pendingBytes, 0);
    // The worker and the connection go on.
    const big = await pool.execute("spill_echo", { op: "make", n: 5000 });
    assert.equal((big as { data: string }).data.length, 5000);
    assert.equal(pool.status().workers[0]!.restarts, 0);
  } finally {
    await pool.close();
  }
});

Deno.test("spillover gives a restarted worker a new directory when the pool's one vanished and was made again (by another user)", async () => {
  const spill = spillover({ threshold: 64 * 1024 });
  const big = "x".repeat(200_000);
  const pool = await startPoolWithModel([
    spill,
    reconnect({ backoff: { initial: 10, max: 50 }, heartbeatInterval: 0 }),
  ], { name: "spill_echo", file: "spill_echo.py" });
  let planted: string | undefined;
  try {
    // A /tmp cleaner removes the directory; another user makes one by that
    // name, open to them: a worker directory made in it would be theirs to
    // fill with links where the host is about to write.
    planted = spill.dir!;
    await Deno.remove(planted, { recursive: true });
    await Deno.mkdir(planted);
    await Deno.chmod(planted, 0o777);
    const back = readyAgain(pool, "w1");
    pool.killWorker("w1");
    await back;
    assert.notEqual(spill.dir, planted);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(planted)), []);
    assert.equal(
      (await pool.execute("spill_echo", { op: "len", data: big }) as {
        len: number;
      }).len,
      big.length,
    );
    assert.equal(spill.stats.spilledOut, 1);
    assert.equal((Deno.statSync(spill.dir!).mode ?? 0) & 0o777, 0o700);
  } finally {
    await pool.close();
    if (planted !== undefined) {
      await Deno.remove(planted, { recursive: true }).catch(() => {});
    }
  }
});

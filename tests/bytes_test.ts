/**
 * Bytes as a value (docs/protocol.md §3 "Bytes", §8 bytes segments):
 * `Uint8Array`s in `pool.execute` and in results, with real workers.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import {
  ConfigError,
  ProtocolError,
  SerializationError,
} from "../src/errors.ts";
import { startServer } from "./_harness.ts";
import { decodeBytes, mayHoldBytes, withBase64 } from "../src/_binary.ts";
import type { SessionMessage } from "../src/session_types.ts";
import { Outbox } from "../src/_session_outbox.ts";
import { spillover } from "../plugins/spillover.ts";
import { setImmediate } from "node:timers";

const MODELS = new URL("../python/tests/models/", import.meta.url).pathname;
const ALL = Uint8Array.from({ length: 256 }, (_, i) => i);
/** One value of each kind that is bytes. */
const BYTES_KINDS: ReadonlyArray<ArrayBufferView | ArrayBuffer> = [
  ALL,
  new Uint8Array(0),
  ALL.buffer,
  new DataView(ALL.buffer),
  Buffer.from("x"),
];

async function bytesPool(plugins?: Plugin[]): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    modelsDir: MODELS,
    handleSignals: false,
    ...(plugins === undefined
      ? {}
      : { plugins: { defaults: false, use: plugins } }),
  });
  try {
    for (const name of ["Echo", "Raw", "Batch", "Stream"]) {
      await pool.addModel(`b${name}`, { file: "bytes_model.py", class: name });
    }
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

// Steps on one pool started as `bytesPool()`: each of these tests started its
// own (a pool and its Python worker) and needs no fresh one.
Deno.test("Pool.execute of bytes, top-level, nested, batched and streamed, on one pool", async (t) => {
  await using pool = await bytesPool();
  await t.step(
    "Pool.execute sends Uint8Array, Buffer, ArrayBuffer and DataView as bytes and gets bytes back, top-level and nested",
    () => poolExecuteSendsUint8arrayBuffer(pool),
  );
  await t.step(
    "Pool.execute of bytes works for a batching model and a stream",
    () => poolExecuteBytesWorksFor(pool),
  );
});

/** A step of "Pool.execute of bytes, top-level, nested, batched and streamed, on one pool": Pool.execute sends Uint8Array, Buffer, ArrayBuffer and DataView as bytes and gets bytes back, top-level and nested */
async function poolExecuteSendsUint8arrayBuffer(pool: Pool): Promise<void> {
  // All 256 byte values, and empty bytes, as the whole msg.
  for (const data of [ALL, new Uint8Array(0)]) {
    const back = await pool.execute<Uint8Array>("bRaw", data);
    assert.equal(back.constructor, Uint8Array);
    assert.deepEqual([...back], [...data]);
  }
  const got = await pool.execute<{
    msg: Record<string, unknown>;
    type: string;
  }>("bEcho", {
    img: ALL,
    list: [new Uint8Array(0), "x", { deep: Buffer.from("hi") }],
    ab: ALL.buffer,
    dv: new DataView(ALL.buffer, 1, 2),
    sub: ALL.subarray(250),
    text: "{}",
  });
  assert.equal(got.type, "dict");
  const m = got.msg;
  assert.deepEqual([...(m.img as Uint8Array)], [...ALL]);
  const list = m.list as [Uint8Array, string, { deep: Uint8Array }];
  assert.deepEqual([list[0].length, list[1], [...list[2].deep]], [0, "x", [
    104,
    105,
  ]]);
  assert.deepEqual([...(m.ab as Uint8Array)], [...ALL]);
  assert.deepEqual([...(m.dv as Uint8Array)], [1, 2]);
  assert.deepEqual([...(m.sub as Uint8Array)], [250, 251, 252, 253, 254, 255]);
  assert.equal(m.text, "{}");
  // Written as JSON (a gateway response), result bytes are their base64.
  assert.equal(JSON.stringify(m.dv), '"AQI="');
  // A plain call is as before.
  assert.deepEqual(await pool.execute("bRaw", { x: [{}, { "0": 1 }] }), {
    x: [{}, { "0": 1 }],
  });
}

/** A step of "Pool.execute of bytes, top-level, nested, batched and streamed, on one pool": Pool.execute of bytes works for a batching model and a stream */
async function poolExecuteBytesWorksFor(pool: Pool): Promise<void> {
  const results = await Promise.all(
    [1, 2, 3].map((i) =>
      pool.execute<{ reversed: Uint8Array }>("bBatch", {
        data: new Uint8Array([i, 0, 255]),
      })
    ),
  );
  assert.deepEqual(results.map((r) => [...r.reversed]), [
    [255, 0, 1],
    [255, 0, 2],
    [255, 0, 3],
  ]);
  const items: number[][] = [];
  for await (
    const item of pool.executeStream<Uint8Array>("bStream", { n: 3 })
  ) {
    assert.ok(item instanceof Uint8Array);
    items.push([...item]);
  }
  assert.deepEqual(items, [[0, 0, 0], [1, 1, 1], [2, 2, 2]]);
}

Deno.test("Pool.execute of 20 MB of bytes goes through spill files raw, both ways (no base64)", async () => {
  const seen: { out?: SessionMessage; in?: SessionMessage } = {};
  // Hooks run in the plugins' order, both ways: each spy sees the stubs.
  const spyOut: Plugin = {
    name: "spyOut",
    onRequest(msg) {
      if (msg.cmd === "executeModel") seen.out = msg;
    },
  };
  const spyIn: Plugin = {
    name: "spyIn",
    onReply(msg) {
      if (msg.$spill !== undefined) seen.in = structuredClone(msg);
    },
  };
  await using pool = await bytesPool([spyIn, spillover(), spyOut]);
  const big = new Uint8Array(20 * 1024 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 255;
  const back = await pool.execute<Uint8Array>("bRaw", big);
  assert.equal(back.length, big.length);
  assert.ok(back.every((v, i) => v === big[i]), "same bytes");
  const out = seen.out?.$spill as { bytes?: unknown[]; size: number };
  assert.deepEqual(out.bytes, [{
    at: ["msg"],
    offset: out.size - big.length,
    length: big.length,
  }]);
  const reply = seen.in?.$spill as { bytes?: unknown[]; size: number };
  assert.deepEqual(reply.bytes, [{
    at: ["result"],
    offset: reply.size - big.length,
    length: big.length,
  }]);
});

// Steps on one pool started as `bytesPool([])`: each of these tests started its
// own (a pool and its Python worker) and needs no fresh one.
Deno.test("Bytes inline as base64 and in pool.eval, without the spill-over plugin, on one pool", async (t) => {
  await using pool = await bytesPool([]);
  await t.step(
    "Pool.execute and executeStream read bytes of several MB inline as base64 (no spill-over plugin)",
    () => poolExecuteAndExecutestreamRead(pool),
  );
  await t.step(
    "pool.eval takes bytes in locals and gives bytes back in its value",
    () => poolEvalTakesBytesIn(pool),
  );
});

/** A step of "Bytes inline as base64 and in pool.eval, without the spill-over plugin, on one pool": Pool.execute and executeStream read bytes of several MB inline as base64 (no spill-over plugin) */
async function poolExecuteAndExecutestreamRead(pool: Pool): Promise<void> {
  await pool.addModel("big", { file: "chaos_bytes_model.py", class: "Big" });
  const size = 6 * 1024 * 1024; // 8 MiB of base64 text
  const check = (bytes: Uint8Array) => {
    assert.equal(bytes.length, size);
    assert.deepEqual([bytes[0], bytes[255], bytes[size - 1]], [0, 255, 255]);
  };
  check(await pool.execute<Uint8Array>("big", { size }, { timeout: 30_000 }));
  let items = 0;
  for await (
    const item of pool.executeStream<Uint8Array>("big", { size, stream: true })
  ) {
    check(item);
    items++;
  }
  assert.equal(items, 2);
}

Deno.test("A Uint8Array a result gave, passed back into pool.execute, goes as bytes again (not as its base64 text), inline or spilled", async () => {
  for (const plugins of [[], [spillover({ threshold: 1024 })]]) {
    await using pool = await bytesPool(plugins);
    const back = await pool.execute<Uint8Array>("bRaw", new Uint8Array([1, 2]));
    assert.equal(JSON.stringify(back), '"AQI="'); // as JSON elsewhere: base64
    const big = "x".repeat(4096); // spilled with the spill-over plugin
    const got = await pool.execute<{ msg: Record<string, unknown> }>(
      "bEcho",
      { img: back, list: [back], big },
    );
    assert.deepEqual(got.msg.img, new Uint8Array([1, 2]));
    assert.deepEqual(got.msg.list, [new Uint8Array([1, 2])]);
    const whole = await pool.execute<{ type: string }>("bEcho", back);
    assert.equal(whole.type, "bytes");
  }
});

Deno.test("A Uint8Array a result gave goes as bytes in a message with a BigInt too (the exact-integer writer)", async () => {
  await using pool = await Pool.start({
    workers: 1,
    modelsDir: MODELS,
    handleSignals: false,
    integers: "bigint",
    plugins: { defaults: false, use: [] },
  });
  await pool.addModel("bEcho", { file: "bytes_model.py", class: "Echo" });
  await pool.addModel("bRaw", { file: "bytes_model.py", class: "Raw" });
  const back = await pool.execute<Uint8Array>("bRaw", new Uint8Array([1, 2]));
  const got = await pool.execute<{ msg: Record<string, unknown> }>("bEcho", {
    img: back,
    n: 2n ** 64n,
  });
  assert.deepEqual(got.msg, { img: new Uint8Array([1, 2]), n: 2n ** 64n });
});

/** A step of "Bytes inline as base64 and in pool.eval, without the spill-over plugin, on one pool": pool.eval takes bytes in locals and gives bytes back in its value */
async function poolEvalTakesBytesIn(pool: Pool): Promise<void> {
  const value = await pool.eval("{'reversed': x[::-1], 'n': len(x)}", {
    locals: { x: new Uint8Array([1, 2, 3]) },
  }).result;
  assert.deepEqual(value, { reversed: new Uint8Array([3, 2, 1]), n: 3 });
}

Deno.test("Pool.execute of bytes over a detached ArrayBuffer rejects once with a SerializationError naming them (inline or spilled); a SharedArrayBuffer is bytes", async () => {
  for (const plugins of [undefined, [spillover({ threshold: 1024 })]]) {
    await using pool = await bytesPool(plugins);
    const buffer = new ArrayBuffer(4);
    const view = new Uint8Array(buffer);
    structuredClone(buffer, { transfer: [buffer] }); // detaches it
    const big = "x".repeat(4096); // spilled with the spill-over plugin
    for (const msg of [{ view }, { big, list: [view] }, { big, buffer }]) {
      const err = await pool.execute("bEcho", msg, { timeout: 60_000 }).then(
        () => assert.fail("sent"),
        (err: unknown) => err,
      );
      assert.ok(err instanceof SerializationError, String(err));
      assert.match(err.message, /detached/);
      if (plugins === undefined) {
        assert.match(err.message, /msg\.(view|list\[0\]|buffer) is a/);
      }
    }
    // Nothing left waiting (nor timing out later), and the session goes on.
    assert.equal(pool.status().inFlight, 0);
    const shared = new Uint8Array(new SharedArrayBuffer(3)).fill(7);
    const got = await pool.execute<{ msg: Record<string, Uint8Array> }>(
      "bEcho",
      { big, view: shared, whole: shared.buffer },
    );
    assert.deepEqual([...got.msg.view!], [7, 7, 7]);
    assert.deepEqual([...got.msg.whole!], [7, 7, 7]);
  }
});

Deno.test('Outbox refuses a $bytes argument, and bytes for a server that does not read them; never sends {"0":…}', () => {
  const sink = new WritableStream<Uint8Array>();
  const outbox = new Outbox(sink, () => Promise.resolve(), () => {});
  const refused = (msg: SessionMessage, pattern: RegExp) => {
    const err = outbox.push(msg);
    assert.ok(err instanceof SerializationError, String(err));
    assert.match(err.message, pattern);
  };
  // Before the server's hello said "bytes": true.
  for (const value of BYTES_KINDS) {
    refused(
      { id: 1, cmd: "executeModel", msg: { deep: [value] } },
      /holds bytes .* this Python server does not read them/,
    );
  }
  outbox.bytes = true;
  refused(
    { id: 2, cmd: "executeModel", msg: "AA==", $bytes: [["msg"]] },
    /'\$bytes' is a field/,
  );
  refused(
    { id: 3, cmd: "executeModel", msg: {}, $bytes: [] },
    /'\$bytes' is a field/,
  );
  assert.equal(
    outbox.push({ id: 4, cmd: "executeModel", msg: ALL }),
    undefined,
  );
  void outbox.close(0);
});

/** Bytes whose `toJSON` counts the times `JSON.stringify` was given them as they are. */
function spiedBytes(
  length: number,
): { bytes: Uint8Array; stringified: () => number } {
  const bytes = Uint8Array.from({ length }, (_, i) => i & 255);
  let calls = 0;
  // {} as on the wire (jsonAsBase64's): mayHoldBytes finds it, as {"0":…}.
  Object.defineProperty(bytes, "toJSON", { value: () => (calls++, {}) });
  return { bytes, stringified: () => calls };
}

Deno.test("Bytes among a call's fields go as base64 at once, never stringified as they are first (a 900 KB image took 0.8 s on Bun)", async () => {
  // JSON.stringify wrote such bytes index by index ({"0":…}, ~1.1 MB of
  // text for 100 KB) only for mayHoldBytes to find them: 100 KB in
  // pool.execute took 100 ms on Bun, 20 ms on Deno; now 3 ms.
  const written: Uint8Array[] = [];
  const outbox = new Outbox(new WritableStream<Uint8Array>(), (data) => {
    written.push(data.slice());
    return Promise.resolve();
  }, () => {});
  outbox.bytes = true;
  const field = spiedBytes(6);
  const whole = spiedBytes(3);
  assert.equal(
    outbox.push({ id: 1, cmd: "executeModel", msg: { image: field.bytes } }),
    undefined,
  );
  assert.equal(
    outbox.push({ id: 2, cmd: "executeModel", msg: whole.bytes }),
    undefined,
  );
  assert.equal(field.stringified(), 0);
  assert.equal(whole.stringified(), 0);
  // The flush runs from a setImmediate queued at the first push: after it, this one.
  await new Promise((resolve) => setImmediate(resolve));
  await outbox.close(1000);
  const text = new TextDecoder().decode(
    Uint8Array.from(written.flatMap((w) => [...w])),
  );
  assert.ok(
    text.includes('"msg":{"image":"AAECAwQF"},"$bytes":[["msg","image"]]'),
    text,
  );
  assert.ok(text.includes('"msg":"AAEC","$bytes":[["msg"]]'), text);

  // Through a pool (spill-over on), and deeper or past the first 16 fields
  // the slow way, as before: the same bytes back each time.
  await using pool = await bytesPool();
  const direct = spiedBytes(100_000);
  const got = await pool.execute<{ msg: { image: Uint8Array } }>("bEcho", {
    label: "cat",
    image: direct.bytes,
  });
  assert.equal(direct.stringified(), 0);
  assert.deepEqual(got.msg.image, Uint8Array.from(direct.bytes));
  // A batching model's calls, sent as one executeBatch.
  const batch = [1, 2, 3, 4, 5].map(() => spiedBytes(1000));
  const reversed = await Promise.all(
    batch.map(({ bytes }) =>
      pool.execute<{ reversed: Uint8Array }>("bBatch", { data: bytes })
    ),
  );
  assert.deepEqual(batch.map((b) => b.stringified()), [0, 0, 0, 0, 0]);
  assert.deepEqual(
    reversed.map((r) => r.reversed),
    batch.map((b) => Uint8Array.from(b.bytes).reverse()),
  );
  const many: Record<string, unknown> = {};
  for (let i = 0; i < 16; i++) many[`f${i}`] = i;
  many.late = Uint8Array.from([1, 2, 3]);
  const nested = { deep: { list: [Uint8Array.from([4, 5])] } };
  for (const msg of [many, nested]) {
    const back = await pool.execute<{ msg: unknown }>("bEcho", msg);
    assert.deepEqual(back.msg, msg);
  }
});

Deno.test("decodeBytes puts Uint8Arrays at the named places and refuses bad lists, paths and base64", () => {
  const msg: Record<string, unknown> = {
    id: 1,
    result: { a: "AAH/", l: [1, ""] },
    $bytes: [["result", "a"], ["result", "l", 1]],
  };
  assert.equal(decodeBytes(msg), undefined);
  assert.equal("$bytes" in msg, false);
  const result = msg.result as { a: Uint8Array; l: [number, Uint8Array] };
  assert.deepEqual([...result.a], [0, 1, 255]);
  assert.equal(result.l[1].length, 0);
  assert.equal(JSON.stringify(result.a), '"AAH/"');
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ $bytes: "result" }, /must be a list of paths/],
    [{ $bytes: [[]] }, /not a non-empty list/],
    [{ r: ["x"], $bytes: [["r", -1]] }, /not a non-empty list/],
    [{ r: ["x"], $bytes: [["r", 1.5]] }, /not a non-empty list/],
    [{ $bytes: [["r"]] }, /does not exist/],
    [{ r: { a: "AA==" }, $bytes: [["r", 0]] }, /does not exist/],
    [{ r: ["AA=="], $bytes: [["r", "0"]] }, /does not exist/],
    [{ r: 5, $bytes: [["r"]] }, /is not a base64 string/],
    [{ r: null, $bytes: [["r"]] }, /is not a base64 string/],
    [{ r: "!!!!", $bytes: [["r"]] }, /is not base64/],
    [{ r: "AA", $bytes: [["r"]] }, /is not base64/],
    [{ r: "AA==\n", $bytes: [["r"]] }, /is not base64/],
    [{ r: {}, $bytes: [["r", "__proto__"]] }, /does not exist/],
  ];
  for (const [message, pattern] of bad) {
    const err = decodeBytes(message);
    assert.ok(err instanceof ProtocolError, JSON.stringify(message));
    assert.match(err.message, pattern, JSON.stringify(message));
  }
});

Deno.test("mayHoldBytes and withBase64: only texts of the shapes bytes give are walked, and only what holds bytes is copied", () => {
  for (const value of [...BYTES_KINDS, new Float32Array(2)]) {
    assert.ok(mayHoldBytes(JSON.stringify({ m: [value] })), String(value));
  }
  assert.equal(
    mayHoldBytes('{"id":1,"cmd":"x","msg":{"a":[1,2],"b":"{}"}}'),
    true,
  ); // a false positive: walked, none found
  assert.equal(
    mayHoldBytes('{"id":1,"cmd":"x","msg":{"a":[1,2],"b":"s"}}'),
    false,
  );
  const plain = { k: [1] };
  const out = withBase64({ id: 1, msg: { plain, b: [ALL.subarray(0, 3)] } });
  assert.deepEqual(out, {
    id: 1,
    msg: { plain, b: ["AAEC"] },
    $bytes: [["msg", "b", 0]],
  });
  assert.equal((out.msg as { plain: unknown }).plain, plain);
});

Deno.test("Session.execute sends bytes with their contentType over a real session (no pool, no spill-over); a bad contentType is a ConfigError", async () => {
  await using server = await startServer({
    files: {
      "bytes_model.py": await Deno.readTextFile(`${MODELS}bytes_model.py`),
    },
  });
  await using session = await server.connect();
  await session.addModel("bEcho", { file: "bytes_model.py", class: "Echo" });
  const got = await session.execute<{ msg: Uint8Array; contentType: string }>(
    "bEcho",
    ALL,
    { contentType: "audio/wav" },
  );
  assert.deepEqual([...got.msg], [...ALL]);
  assert.equal(got.contentType, "audio/wav");
  await assert.rejects(
    session.execute("bEcho", ALL, { contentType: "x\ny" }),
    (err: unknown) =>
      err instanceof ConfigError && /contentType/.test(err.message),
  );
  await using pool = await bytesPool();
  await assert.rejects(
    pool.execute("bEcho", ALL, { contentType: "" }),
    (err: unknown) =>
      err instanceof ConfigError && /contentType/.test(err.message),
  );
  assert.equal(
    (await pool.execute<{ contentType: string }>("bEcho", ALL, {
      contentType: "image/png; q=1",
    })).contentType,
    "image/png; q=1",
  );
});

Deno.test("A $bytes argument is refused when the message is spilled too", async () => {
  await using pool = await bytesPool([spillover({ threshold: 1000 })]);
  for (const size of [10, 5000]) {
    await assert.rejects(
      pool.request("executeModel", {
        name: "bRaw",
        msg: "A".repeat(size * 4),
        $bytes: [["msg"]],
      }),
      (err: unknown) =>
        err instanceof SerializationError &&
        /'\$bytes' is a field of the protocol/.test(err.message),
      String(size),
    );
  }
  // Bytes of the caller's below and above the threshold still go.
  for (const size of [10, 5000]) {
    const back = await pool.execute<Uint8Array>("bRaw", new Uint8Array(size));
    assert.equal(back.length, size);
  }
});

Deno.test("A call whose message throws as it is read (a getter, a Proxy trap) fails alone with a SerializationError; the pool's close leaves no unhandled rejection", async () => {
  // No plugins: the outbox is the first to read the message.
  await using pool = await bytesPool([]);
  const messages = [
    {
      image: ALL,
      get x(): never {
        throw new Error("boom");
      },
    },
    {
      a: 1,
      get x(): never {
        throw new Error("boom");
      },
    },
    new Proxy({}, {
      ownKeys() {
        throw new Error("ownKeys trap");
      },
    }),
  ];
  for (const msg of messages) {
    await assert.rejects(
      pool.execute("bEcho", msg),
      (err: Error) =>
        err instanceof SerializationError &&
        /reading it threw \((boom|ownKeys trap)\)/.test(err.message),
    );
  }
  assert.deepEqual(
    (await pool.execute<{ msg: unknown }>("bEcho", { a: 1 })).msg,
    { a: 1 },
  );
  // Thrown out of the outbox, each call's entry stayed in the session and
  // its close rejected it again, unhandled: this test failed with
  // "Uncaught (in promise) ConnectionLostError".
  await pool.close();
});

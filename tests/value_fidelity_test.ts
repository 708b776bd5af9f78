/**
 * Values through a real Python echo model, both ways (docs/models.md,
 * "What values become"): what comes back equals what went, or the call fails
 * with a typed error; never a silent change. Property tests with fast-check
 * (nested objects and arrays, lone surrogates, NUL, U+2028, long strings,
 * extreme doubles, keys such as `__proto__` and `$bytes`), then the cases
 * that used to change silently: NaN and infinities (`null` on the wire), a
 * gateway body's `1e400` (`Infinity` once parsed).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { SerializationError, UnsafeIntegerError } from "../src/errors.ts";
import { Pool } from "../src/pool.ts";
import { MAX_JSON_DEPTH } from "../src/_json_check.ts";
import { startGateway } from "./_gateway_harness.ts";
import { binaryUnit } from "./_binary_unit.ts";

const ECHO = "class Echo:\n    def execute(self, msg):\n        return msg\n";
/** What Python made of the message: its repr, and the type of msg["x"]. */
const SEEN =
  "class Seen:\n    def execute(self, msg):\n        return {'repr': repr(msg), 'type': type(msg.get('x')).__name__}\n";

/** Same value: `Object.is` for numbers (-0 is not 0), own keys in order, prototypes ignored. */
function same(a: unknown, b: unknown): boolean {
  if (typeof a !== "object" || a === null) return Object.is(a, b);
  if (typeof b !== "object" || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (let i = 0; i < ka.length; i++) {
    const k = ka[i]!;
    if (k !== kb[i]) return false;
    if (
      !same(
        (a as Record<string, unknown>)[k],
        (b as Record<string, unknown>)[k],
      )
    ) return false;
  }
  return true;
}

/** Whether `v` holds a number JSON cannot carry (NaN, ±Infinity). */
function holdsNonFinite(v: unknown): boolean {
  if (typeof v === "number") return !Number.isFinite(v);
  if (typeof v !== "object" || v === null) return false;
  return Object.values(v).some(holdsNonFinite);
}

/**
 * Whether `v` holds a whole number beyond ±(2^53 − 1) and below 1e21:
 * JSON.stringify writes its digits (from 1e21 on, an exponent: `1e+21`, a
 * float to Python), Python reads an exact int, and the reply's digits are
 * refused by a pool with `integers: "number"` (UnsafeIntegerError).
 */
function holdsUnsafeInteger(v: unknown): boolean {
  if (typeof v === "number") {
    return Number.isInteger(v) && !Number.isSafeInteger(v) &&
      Math.abs(v) < 1e21;
  }
  if (typeof v !== "object" || v === null) return false;
  return Object.values(v).some(holdsUnsafeInteger);
}

/** `-0` as `0`, recursively: `JSON.stringify(-0)` is `"0"` (docs/models.md). */
function withoutNegativeZero(v: unknown): unknown {
  if (Object.is(v, -0)) return 0;
  if (typeof v !== "object" || v === null) return v;
  if (Array.isArray(v)) return v.map(withoutNegativeZero);
  return Object.fromEntries(
    Object.entries(v).map(([k, x]) => [k, withoutNegativeZero(x)]),
  );
}

const SPECIAL_STRINGS = [
  "",
  "\ud800",
  "a\udc00b",
  "\udfff\ud800",
  "\u0000",
  "\u2028\u2029",
  "\ufeff",
  '"\\/\b\f\n\r\t',
  "😀",
];
const SPECIAL_KEYS = [
  "__proto__",
  "constructor",
  "prototype",
  "toString",
  "hasOwnProperty",
  "$bytes",
  "$spill",
  "",
  "0",
  "1",
  "-1",
  "null",
  "true",
  "NaN",
];
const SPECIAL_NUMBERS = [
  0,
  1e308,
  -1e308,
  1.7976931348623157e308,
  -1.7976931348623157e308,
  5e-324,
  -5e-324,
  2.2250738585072014e-308,
  2 ** 53 - 1,
  -(2 ** 53 - 1),
  2 ** 53 + 2, // a double, whole, beyond ±2^53: an exact int in Python
  0.1,
  1e21,
  1e-7,
  123456789.123456789,
];

// binaryUnit(): fast-check's own "binary" unit, which took ~1-3 s of CPU to
// build as this file loaded.
const string = fc.oneof(
  fc.string({ unit: binaryUnit(), maxLength: 12 }),
  fc.constantFrom(...SPECIAL_STRINGS),
);
const key = fc.oneof(
  fc.string({ unit: binaryUnit(), maxLength: 6 }),
  fc.constantFrom(...SPECIAL_KEYS),
);
const number = fc.oneof(
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 }),
  fc.constantFrom(...SPECIAL_NUMBERS),
);
/** JSON-able values; objects built with `Object.fromEntries`, so `__proto__` is an own key. */
const json = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    number,
    string,
    tie("array"),
    tie("object"),
  ),
  array: fc.array(tie("value"), { maxLength: 5 }),
  object: fc.uniqueArray(fc.tuple(key, tie("value")), {
    maxLength: 5,
    selector: ([k]) => k,
  }).map((entries) => Object.fromEntries(entries)),
})).value;

function echoPool(): Promise<Pool> {
  return Pool.start({ workers: 1, handleSignals: false });
}

Deno.test("Pool.execute echoes JSON-able values unchanged, or fails with UnsafeIntegerError for whole numbers beyond ±2^53", async () => {
  const pool = await echoPool();
  try {
    await pool.addModel("echo", { source: ECHO });
    await fc.assert(
      fc.asyncProperty(json, async (value) => {
        const sent = { v: value };
        const expected = withoutNegativeZero(sent);
        let got: unknown;
        try {
          got = await pool.execute("echo", sent);
        } catch (err) {
          if (err instanceof UnsafeIntegerError && holdsUnsafeInteger(sent)) {
            return;
          }
          throw err;
        }
        assert.ok(!holdsUnsafeInteger(sent), "no UnsafeIntegerError");
        assert.ok(
          same(got, expected),
          `${Deno.inspect(got)} is not ${Deno.inspect(expected)}`,
        );
      }),
      { numRuns: 300 },
    );
  } finally {
    await pool.close();
  }
});

Deno.test("Pool.execute with integers: 'bigint' gives whole numbers beyond ±2^53 back as their exact BigInt", async () => {
  const pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    integers: "bigint",
  });
  try {
    await pool.addModel("echo", { source: ECHO });
    // 1e21 and above are written with an exponent (1e+21): floats to Python, numbers back.
    const got = await pool.execute("echo", {
      x: 2 ** 53 + 2,
      y: 1e20,
      z: 1e21,
    });
    assert.deepEqual(got, {
      x: 9007199254740994n,
      y: 100000000000000000000n,
      z: 1e21,
    });
  } finally {
    await pool.close();
  }
});

Deno.test("Pool.execute refuses NaN and infinities with a SerializationError naming the place, instead of sending null", async () => {
  const pool = await echoPool();
  try {
    await pool.addModel("seen", { source: SEEN });
    for (
      const [msg, place, shown] of [
        [{ x: NaN }, "msg.x", "NaN"],
        [{ x: [1, null, Infinity] }, "msg.x[2]", "Infinity"],
        [
          { a: { b: [{ c: -Infinity }] }, n: null },
          "msg.a.b[0].c",
          "-Infinity",
        ],
        [{ x: new Float64Array([NaN]), y: { z: NaN } }, "msg.y.z", "NaN"],
        // Where JSON.stringify looks too (they went as None): a toJSON's
        // output and a boxed number.
        [{ t: { toJSON: () => [0, NaN] }, n: null }, "msg.t[1]", "NaN"],
        [{ x: [new Number(Infinity)] }, "msg.x[0]", "Infinity"],
      ] as const
    ) {
      await assert.rejects(
        pool.execute("seen", msg as Record<string, unknown>),
        (err: unknown) => {
          assert.ok(err instanceof SerializationError, String(err));
          assert.equal(err.code, "SERIALIZATION");
          assert.match(
            err.message,
            new RegExp(
              `^Cannot send executeModel: ${
                place.replace(/[.[\]]/g, "\\$&")
              } is ${shown} \\(JSON has no NaN or infinities`,
            ),
          );
          return true;
        },
      );
    }
    // The worker carries on; null, NaN's old stand-in, and bytes of NaNs go as before.
    assert.deepEqual(
      await pool.execute("seen", { x: null, b: new Float64Array([NaN]) }),
      {
        repr: "{'x': None, 'b': b'\\x00\\x00\\x00\\x00\\x00\\x00\\xf8\\x7f'}",
        type: "NoneType",
      },
    );
    // A Date's toJSON is what is sent (a string), whatever its number.
    assert.deepEqual(
      await pool.execute("seen", { x: new Date(NaN), n: null }),
      { repr: "{'x': None, 'n': None}", type: "NoneType" },
    );
  } finally {
    await pool.close();
  }
});

Deno.test("A host handler's result holding NaN fails the model's host.call with a HostError naming the place, not None", async () => {
  const pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    plugins: {
      use: [{
        name: "nan",
        handlers: {
          nan: () => ({ x: [1, NaN] }),
          big: () => ({ s: "y".repeat(2_000_000), x: Infinity }),
        },
      }],
    },
  });
  try {
    await pool.addModel("caller", {
      source: `from pyproxy import host
class Caller:
    def execute(self, msg):
        try:
            return {"got": repr(host.call(msg["cmd"], {}))}
        except Exception as e:
            return {"error": type(e).__name__, "message": str(e)}
`,
    });
    for (
      const [cmd, place] of [
        ["nan", "result.x[1] is NaN"],
        ["big", "result.x is Infinity"],
      ] as const
    ) {
      const got = await pool.execute("caller", { cmd }) as Record<
        string,
        string
      >;
      assert.equal(got.error, "HostError", JSON.stringify(got).slice(0, 300));
      assert.match(
        got.message!,
        new RegExp(
          `SerializationError: Cannot send the result of host command ${cmd}: ${
            place.replace(/[.[\]]/g, "\\$&")
          } \\(`,
        ),
      );
    }
  } finally {
    await pool.close();
  }
});

Deno.test("Pool.execute refuses NaN in a message large enough to be spilled to a file, and echoes long strings unchanged", async () => {
  const pool = await echoPool();
  try {
    await pool.addModel("echo", { source: ECHO });
    // Past the spill threshold (1 MiB): written piece by piece to a file.
    const long = "x\ud800\u0000\u2028".repeat(300_000);
    const got = await pool.execute("echo", { long, rows: [{ a: 1.5 }] });
    assert.ok(same(got, { long, rows: [{ a: 1.5 }] }));
    for (
      const [msg, place] of [
        [{ long, rows: [{ a: NaN }] }, "msg.rows[0].a"],
        [{ long, x: Infinity }, "msg.x"],
        [{
          rows: Array.from(
            { length: 100_000 },
            (_, i) => i === 99_999 ? NaN : i,
          ),
        }, "msg.rows[99999]"],
      ] as const
    ) {
      await assert.rejects(
        pool.execute("echo", msg as Record<string, unknown>),
        (err: unknown) => {
          assert.ok(err instanceof SerializationError, String(err));
          assert.ok(
            err.message.startsWith(`Cannot send executeModel: ${place} is `),
            err.message,
          );
          return true;
        },
      );
    }
  } finally {
    await pool.close();
  }
});

Deno.test("Pool.execute sends a message nested to MAX_JSON_DEPTH and back unchanged", async () => {
  const pool = await echoPool();
  try {
    await pool.addModel("echo", { source: ECHO });
    // The message object is level 1, msg level 2, deep's outer array 3, the object innermost.
    let deep: unknown = ["\ud800", -5e-324, { "__proto__": 1 }];
    for (let i = 0; i < MAX_JSON_DEPTH - 4; i++) deep = [deep];
    const got = await pool.execute("echo", { v: deep });
    assert.ok(same(got, { v: deep }));
    await assert.rejects(
      pool.execute("echo", { v: [deep] }),
      SerializationError,
    );
  } finally {
    await pool.close();
  }
});

Deno.test("Gateway echoes JSON bodies unchanged, and refuses a number beyond a double's range with a 400", async () => {
  await using gw = await startGateway({}, { "echo.py": ECHO, "seen.py": SEEN });
  const post = (body: string) =>
    gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
  await fc.assert(
    fc.asyncProperty(json, async (value) => {
      // A client's JSON text: -0 is already 0 there; NaN cannot be written.
      const text = JSON.stringify({ v: value });
      const res = await post(text);
      const answer = await res.text();
      assert.equal(res.status, 200, answer);
      assert.ok(
        same(JSON.parse(answer), JSON.parse(text)),
        `${answer} is not ${text}`,
      );
    }),
    { numRuns: 150 },
  );
  for (
    const literal of ["1e400", "-1E+309", "1.8e308", `1${"0".repeat(309)}.5`]
  ) {
    const res = await gw.fetch("/v1/models/seen/execute", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: `{"x":[${literal}],"n":1}`,
    });
    const { error } = await res.json();
    assert.equal(res.status, 400, JSON.stringify(error));
    assert.equal(error.type, "SerializationError");
    assert.match(
      error.message,
      /^Cannot send executeModel: msg\.x\[0\] is -?Infinity \(JSON has no NaN or infinities, and a number literal beyond ±1\.8e308 such as 1e400 reads as one/,
    );
  }
  // A channel's message too: its subscribers would have read null.
  const published = await gw.fetch("/v1/channels/news", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"x":{"y":1e400}}',
  });
  const refused = await published.json();
  assert.equal(published.status, 400, JSON.stringify(refused));
  assert.match(
    refused.error.message,
    /^Cannot publish: x\.y is Infinity \(JSON has no NaN/,
  );
  // What is within range arrives as the float it is.
  const res = await gw.fetch("/v1/models/seen/execute", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"x":1.7976931348623157e308}',
  });
  assert.deepEqual(await res.json(), {
    repr: "{'x': 1.7976931348623157e+308}",
    type: "float",
  });
});

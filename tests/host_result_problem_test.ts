/**
 * What a host handler's result becomes in Python (src/_host_result_problem.ts):
 * what JSON would turn into `{}` or `None` without a word fails the model's
 * `host.call` with a `SerializationError` naming the command and the place;
 * what JSON writes as meant passes. Real workers, `from pyproxy import host`.
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import type { Plugin } from "../src/plugin.ts";
import { hostResultProblem } from "../src/_host_result_problem.ts";

class Point {
  x = 1;
  #hidden = 2;
  get hidden(): number {
    return this.#hidden;
  }
}
class Money {
  toJSON(): string {
    return "12.50 EUR";
  }
}

const CALLER = `from pyproxy import host, HostError
class Caller:
    def execute(self, msg):
        try:
            return {"got": repr(host.call(msg["cmd"], {}))}
        except HostError as e:
            return {"type": e.remote_type, "message": e.remote_message}
`;

const handlers: Record<string, () => unknown> = {
  map: () => new Map([["a", 1]]),
  nestedSet: () => ({ rows: [{ tags: new Set(["x"]) }] }),
  fn: () => () => 1,
  method: () => ({ a: 1, "the f": () => 1 }),
  inArray: () => [1, Symbol("s")],
  error: () => ({ error: new Error("boom") }),
  promise: () => ({ later: Promise.resolve(1) }),
  asyncMap: () => Promise.resolve(new Map()),
  nan: () => ({ x: [1, NaN] }),
  big: () => ({ n: 2n ** 64n }),
  // What JSON writes as meant.
  undefinedInside: () => ({ a: undefined, b: [undefined, 1] }),
  nothing: () => undefined,
  instance: () => new Point(),
  toJSON: () => ({ price: new Money(), at: new Date(0) }),
  bytes: () => ({ b: new Uint8Array([1, 2]) }),
};

Deno.test("A host handler's Map, Set, function, symbol, Error or unawaited Promise fails host.call with a SerializationError naming the command and place", async () => {
  const plugin: Plugin = { name: "values", handlers };
  await using pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    plugins: { defaults: false, use: [plugin] },
  });
  await pool.addModel("caller", { source: CALLER });
  const call = (cmd: string) =>
    pool.execute("caller", { cmd }) as Promise<Record<string, string>>;
  for (
    const [cmd, place, what] of [
      [
        "map",
        "result",
        "is a Map (JSON writes it as {}: return Object.fromEntries(map)",
      ],
      [
        "nestedSet",
        "result.rows[0].tags",
        "is a Set (JSON writes it as {}: return [...set])",
      ],
      ["fn", "result", "is a function (JSON has no functions"],
      ["method", 'result["the f"]', "is a function"],
      ["inArray", "result[1]", "is a symbol"],
      [
        "error",
        "result.error",
        "is an Error (JSON writes it as {}: throw it to fail the call",
      ],
      [
        "promise",
        "result.later",
        "is a Promise (JSON writes it as {}: await it",
      ],
      ["asyncMap", "result", "is a Map"],
      ["nan", "result.x[1]", "is NaN (JSON has no NaN or infinities"],
      [
        "big",
        "result.n",
        'is a BigInt (send a number or a string, or use integers: "bigint"',
      ],
    ] as const
  ) {
    const got = await call(cmd);
    assert.equal(
      got.type,
      "SerializationError",
      `${cmd}: ${JSON.stringify(got)}`,
    );
    assert.ok(
      got.message!.startsWith(
        `Cannot send the result of host command ${cmd}: ${place} ${what}`,
      ),
      `${cmd}: ${got.message}`,
    );
  }
  // The same worker goes on: what JSON writes as meant arrives.
  assert.deepEqual(
    await Promise.all(
      ["undefinedInside", "nothing", "instance", "toJSON", "bytes"].map((c) =>
        call(c)
      ),
    ),
    [
      { got: "{'b': [None, 1]}" },
      { got: "None" },
      { got: "{'x': 1}" },
      { got: "{'price': '12.50 EUR', 'at': '1970-01-01T00:00:00.000Z'}" },
      { got: "{'b': b'\\x01\\x02'}" },
    ],
  );
});

Deno.test("A host handler's BigInt reaches Python as an exact int in a pool with integers: 'bigint'", async () => {
  await using pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    integers: "bigint",
    plugins: { defaults: false, use: [{ name: "values", handlers }] },
  });
  await pool.addModel("caller", { source: CALLER });
  assert.deepEqual(await pool.execute("caller", { cmd: "big" }), {
    got: "{'n': 18446744073709551616}",
  });
});

Deno.test("hostResultProblem looks past values with toJSON and bytes, and stops at a cycle", () => {
  assert.equal(
    hostResultProblem({ d: new Date(), b: new Uint8Array(2) }),
    undefined,
  );
  assert.equal(hostResultProblem([1, "x", null, { a: [true] }]), undefined);
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  // JSON.stringify's own error (a cycle) says what is wrong there.
  assert.equal(hostResultProblem(cycle), undefined);
  assert.equal(
    hostResultProblem({ "a-b": [{ c: new WeakMap() }] }),
    'result["a-b"][0].c is a WeakMap or WeakSet (JSON writes it as {})',
  );
});

Deno.test("hostResultProblem walks an object that holds itself under several keys once, not until the depth limit", () => {
  let reads = 0;
  const wide: Record<string, unknown> = {};
  for (let i = 0; i < 4; i++) {
    Object.defineProperty(wide, `k${i}`, {
      enumerable: true,
      get() {
        // Cut only by the depth, the walk read them 4^900 times (a hung
        // event loop): stopped here for the test to fail rather than hang.
        if (++reads > 1000) throw new Error(`read ${reads} times`);
        return wide;
      },
    });
  }
  assert.equal(hostResultProblem({ rows: [wide] }), undefined);
  assert.equal(reads, 4);
  // A problem past a cycle is still found, by its place.
  const a: Record<string, unknown> = { m: new Map() };
  a.self = a;
  a.again = a;
  assert.equal(
    hostResultProblem({ a }),
    "result.a.m is a Map (JSON writes it as {}: return Object.fromEntries(map), or [...map] for its entries)",
  );
});

Deno.test("A host handler's result whose getter, proxy trap or then throws fails its host.call with that error; the worker and the host go on", async () => {
  const throwing: Record<string, () => unknown> = {
    getter: () => ({
      a: 1,
      get b(): number {
        throw new Error("getter boom");
      },
    }),
    // Rejected unhandled in the session: the host process ended.
    asyncGetter: () =>
      Promise.resolve({
        get b(): number {
          throw new Error("async getter boom");
        },
      }),
    proxy: () =>
      new Proxy({}, {
        get() {
          throw new Error("trap boom");
        },
      }),
    then: () => ({
      get then(): unknown {
        throw new Error("then boom");
      },
    }),
  };
  await using pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    plugins: {
      defaults: false,
      use: [{ name: "throwing", handlers: throwing }],
    },
  });
  await pool.addModel("caller", { source: CALLER });
  const call = (cmd: string) =>
    pool.execute("caller", { cmd }) as Promise<Record<string, string>>;
  for (
    const [cmd, message] of [
      ["getter", "Cannot run host command getter: getter boom"],
      ["asyncGetter", "Cannot run host command asyncGetter: async getter boom"],
      ["proxy", "Cannot run host command proxy: trap boom"],
      ["then", "Cannot run host command then: then boom"],
    ] as const
  ) {
    const got = await call(cmd);
    assert.equal(got.type, "HostError", `${cmd}: ${JSON.stringify(got)}`);
    assert.ok(got.message!.startsWith(message), `${cmd}: ${got.message}`);
  }
  assert.equal(pool.status().workers[0]!.restarts, 0);
});

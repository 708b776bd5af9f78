/**
 * The pool's `integers` option with real Python servers: integers beyond
 * ±2^53 arrive exactly as BigInt ("bigint") or fail with an
 * UnsafeIntegerError naming their path ("number", the default), in results,
 * stream items, batch items, eval values, host command arguments and
 * spilled messages.
 */
import assert from "node:assert/strict";
import { SerializationError, UnsafeIntegerError } from "../src/errors.ts";
import { Pool, type PoolOptions } from "../src/pool.ts";
import type { HostHandler } from "../src/plugin.ts";
import type { Session } from "../src/session.ts";
import { spillover } from "../plugins/spillover.ts";

const VALUES = "[2**63 - 1, -(2**63), 2**64 + 1, 10**400]";
const EXPECTED = [2n ** 63n - 1n, -(2n ** 63n), 2n ** 64n + 1n, 10n ** 400n];

const MODELS: Record<string, string> = {
  "long.py": `
import sys

sys.set_int_max_str_digits(0)


class Long:
    def __init__(self, options):
        pass

    def execute(self, msg):
        x = msg["x"]
        return {"type": type(x).__name__, "digits": len(str(x)) if isinstance(x, int) else None}
`,
  "big.py": `
from pyproxy import host

class Big:
    def __init__(self, options):
        pass

    def execute(self, msg):
        kind = msg.get("kind") if isinstance(msg, dict) else None
        if kind == "echo":
            return msg
        if kind == "call":
            return host.call("echo", msg["args"])
        if kind == "spill":
            return {"blob": "x" * 300000, "ids": ${VALUES}}
        if kind == "floats":
            return {"f": [0.12345678901234568, 1234567890123456.8, 9.007199254740993e15, -0.9999999999999999]}
        return {"values": ${VALUES}, "nested": {"id": 2**53 + 1, "list": [{"x": 2**53}]},
                "safe": [2**53 - 1, -(2**53 - 1)], "text": "id:12345678901234567890"}
`,
  "stream.py": `
class Stream:
    def __init__(self, options):
        pass

    def execute(self, msg):
        yield {"i": 0}
        for v in ${VALUES}:
            yield {"v": v}
`,
  "batched.py": `
class Batched:
    batch_size = 8
    batch_delay_ms = 50

    def __init__(self, options):
        pass

    def execute_batch(self, msgs):
        return [{"n": m["n"], "big": 2**64 + m["n"]} for m in msgs]
`,
};

async function modelsDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "pyproxy-integers-test-" });
  for (const [name, source] of Object.entries(MODELS)) {
    await Deno.writeTextFile(`${path}/${name}`, source);
  }
  return {
    path,
    [Symbol.asyncDispose]: () =>
      Deno.remove(path, { recursive: true }).catch(() => {}),
  };
}

async function startPool(
  dir: string,
  extra: PoolOptions,
  echo: HostHandler = (args) => args,
  sessions: Session[] = [],
): Promise<Pool> {
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir,
    handleSignals: false,
    plugins: {
      defaults: false,
      use: [spillover({ threshold: 64 * 1024 }), {
        name: "echo",
        handlers: { echo },
        onWorkerStart: (ev) => void sessions.push(ev.session),
      }],
    },
    ...extra,
  });
  try {
    await pool.addModel("big", { file: "big.py" });
    await pool.addModel("stream", { file: "stream.py" });
    await pool.addModel("batched", { file: "batched.py" });
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

// The two tests of an integers: 'bigint' pool, as steps on one such pool (a Python server
// start each, otherwise); the first counts the host callback's calls from none, so it goes first.
Deno.test("Pool integers: 'bigint' on one pool (each step its own calls)", async (t) => {
  await using dir = await modelsDir();
  const seen: unknown[] = [];
  await using pool = await startPool(dir.path, { integers: "bigint" }, (
    args,
  ) => {
    seen.push(args);
    return args;
  });
  await t.step(
    "Pool integers: 'bigint' round-trips 2**63-1, -(2**63), 2**64+1 and 10**400 exactly",
    () => poolIntegersBigintRoundTrips(pool, seen),
  );
  await t.step(
    "Pool integers: 'bigint' spills a message holding an integer of more than 32 Ki digits as that integer",
    () => poolIntegersBigintSpillsMessage(pool),
  );
});

/** A step of "Pool integers: 'bigint' on one pool (each step its own calls)": Pool integers: 'bigint' round-trips 2**63-1, -(2**63), 2**64+1 and 10**400 exactly */
async function poolIntegersBigintRoundTrips(
  pool: Pool,
  seen: unknown[],
): Promise<void> {
  // Results, nested in lists and dicts; safe integers stay numbers.
  assert.deepEqual(await pool.execute("big", {}), {
    values: EXPECTED,
    nested: { id: 2n ** 53n + 1n, list: [{ x: 2n ** 53n }] },
    safe: [2 ** 53 - 1, -(2 ** 53 - 1)],
    text: "id:12345678901234567890",
  });
  // BigInt arguments reach Python exactly and come back.
  const msg = {
    kind: "echo",
    values: EXPECTED,
    one: 2n ** 53n + 1n,
    small: 5n,
  };
  assert.deepEqual(await pool.execute("big", msg), { ...msg, small: 5 });
  // Host command arguments (Python → host) and results (host → Python).
  const args = { ids: EXPECTED, nested: [{ id: -(2n ** 63n) }] };
  assert.deepEqual(await pool.execute("big", { kind: "call", args }), args);
  assert.deepEqual(seen, [args]);
  // Stream items.
  const items = await Array.fromAsync(pool.executeStream("stream", {}));
  assert.deepEqual(items, [{ i: 0 }, ...EXPECTED.map((v) => ({ v }))]);
  // Batch items: each caller gets its own exact result.
  const batch = await Promise.all(
    [1, 2, 3].map((n) => pool.execute("batched", { n })),
  );
  assert.deepEqual(
    batch,
    [1, 2, 3].map((n) => ({ n, big: 2n ** 64n + BigInt(n) })),
  );
  // Eval values.
  assert.deepEqual(await pool.eval(`${VALUES}`).result, EXPECTED);
  // Spilled both ways (a reply and a request above the threshold).
  const spilled = await pool.execute<{ ids: unknown }>("big", {
    kind: "spill",
  });
  assert.deepEqual(spilled.ids, EXPECTED);
  const large = { kind: "echo", blob: "y".repeat(300_000), ids: EXPECTED };
  assert.deepEqual(await pool.execute("big", large), large);
}

/** A step of "Pool integers: 'bigint' on one pool (each step its own calls)": Pool integers: 'bigint' spills a message holding an integer of more than 32 Ki digits as that integer */
async function poolIntegersBigintSpillsMessage(pool: Pool): Promise<void> {
  await pool.addModel("long", { file: "long.py" });
  // Over the 64 KiB threshold, and written to the spill file in pieces: the
  // integer (a JSON.rawJSON of its digits there) is one of them.
  for (const digits of [40_000, 100]) {
    const x = BigInt("7".repeat(digits));
    assert.deepEqual(
      await pool.execute("long", { x, pad: "y".repeat(100_000) }),
      { type: "int", digits },
    );
    assert.deepEqual(
      await pool.execute("long", { x: [x], pad: "y".repeat(100_000) }),
      { type: "list", digits: null },
    );
  }
}

Deno.test("Pool integers: 'number' (the default) fails with an UnsafeIntegerError naming the path", async () => {
  await using dir = await modelsDir();
  const seen: unknown[] = [];
  await using pool = await startPool(dir.path, {}, (args) => {
    seen.push(args);
    return args;
  });
  const refused = (path: string, value: string) => (err: unknown) => {
    assert.ok(err instanceof UnsafeIntegerError, String(err));
    assert.equal(err.code, "UNSAFE_INTEGER");
    assert.equal(err.details.path, path);
    assert.equal(err.details.value, value);
    assert.ok(err.message.includes(`${path} is ${value}, beyond ±2^53`));
    assert.match(err.message, /integers: "bigint"/);
    return true;
  };
  await assert.rejects(
    pool.execute("big", {}),
    refused("result.values[0]", "9223372036854775807"),
  );
  // The worker carries on.
  assert.deepEqual(await pool.execute("big", { kind: "echo", n: 1 }), {
    kind: "echo",
    n: 1,
  });
  // A stream fails at the item that holds one, after the items before it.
  const stream = pool.executeStream("stream", {});
  assert.deepEqual(await stream.next(), { value: { i: 0 }, done: false });
  await assert.rejects(stream.next(), refused("data.v", "9223372036854775807"));
  // A batch item: the batch's reply is refused, so every call of the batch fails.
  await assert.rejects(
    pool.execute("batched", { n: 1 }),
    refused("result.results[0].big", "18446744073709551617"),
  );
  // An eval value, 10**400 shortened.
  await assert.rejects(
    pool.eval("10**400").result,
    refused("result.value", "10000000000000000000…(401 digits)"),
  );
  // A host command's arguments: Python gets the error, the handler never runs.
  await assert.rejects(
    pool.execute("big", { kind: "call", args: { id: 2 ** 53 + 2 } }),
    (err: Error) => {
      assert.match(err.message, /UnsafeIntegerError/);
      assert.match(err.message, /args\.id is 9007199254740994/);
      return true;
    },
  );
  assert.deepEqual(seen, []);
  // A spilled reply.
  await assert.rejects(
    pool.execute("big", { kind: "spill" }),
    refused("result.ids[0]", "9223372036854775807"),
  );
  // A BigInt to send is refused before anything is sent, small or spilled.
  for (const blob of ["", "y".repeat(300_000)]) {
    await assert.rejects(
      pool.execute("big", { kind: "echo", blob, id: 1n }),
      (err: Error) => {
        assert.ok(err instanceof SerializationError);
        assert.match(err.message, /msg\.id is a BigInt .*integers: "bigint"/);
        return true;
      },
    );
  }
});

Deno.test("Pool integers: floats of 17 digits are unchanged and not parsed twice", async () => {
  await using dir = await modelsDir();
  for (const integers of ["number", "bigint"] as const) {
    const sessions: Session[] = [];
    await using pool = await startPool(
      dir.path,
      { integers },
      undefined,
      sessions,
    );
    const session = sessions[0]!;
    const before = session.reparsed;
    assert.deepEqual(await pool.execute("big", { kind: "floats" }), {
      f: [
        0.12345678901234568,
        1234567890123456.8,
        9.007199254740993e15,
        -0.9999999999999999,
      ],
    });
    // The 16-digit integer part of 1234567890123456.8 matches the cheap test (and
    // finds nothing); the fractions do not.
    assert.equal(session.reparsed - before, 1);
    await pool.execute("big", { kind: "echo", f: 0.12345678901234568 });
    assert.equal(session.reparsed - before, 1);
  }
});

Deno.test("Pool integers: a value other than 'number' or 'bigint' is a ConfigError", async () => {
  await assert.rejects(
    Pool.start({
      workers: 1,
      handleSignals: false,
      integers: "string" as "number",
    }),
    /Cannot start pool: integers: expected "number" or "bigint"/,
  );
});

const DEEP = `
import sys
import time

from pyproxy import host

# Python's json goes as deep as the recursion limit lets it (3.13 decodes
# ~10000 levels by default): this model lets it go deeper than the host's
# exact read (1000 levels).
sys.setrecursionlimit(100_000)


def deep(d, leaf):
    v = leaf
    for _ in range(d):
        v = [v]
    return v


class Deep:
    def execute(self, msg):
        leaf = 2**64 if msg["big"] else 1
        if msg.get("call"):
            try:
                args = {"v": deep(msg["d"], leaf)}
                if msg.get("pad"):
                    args["pad"] = "x" * msg["pad"]
                host.call("sink", args)
                return {"called": True}
            except host.HostError as e:
                return {"hostError": str(e)}
        if msg.get("stream"):
            return iter([{"i": 0}, {"v": deep(msg["d"], leaf)}])
        if msg.get("pad"):
            # Large enough to be spilled to a file (spillover's threshold).
            return {"v": deep(msg["d"], leaf), "pad": "x" * msg["pad"]}
        return {"v": deep(msg["d"], leaf)}


class Slow:
    def execute(self, msg):
        time.sleep(0.5)
        return {"slow": True}
`;

function leafOf(value: unknown): unknown {
  let v = (value as { v: unknown }).v;
  while (Array.isArray(v)) v = v[0];
  return v;
}

Deno.test("Pool integers: a reply nested past 1000 levels holding an integer beyond ±2^53 fails its call alone with SerializationError (the reviver overflowed the stack and the connection)", async () => {
  const path = await Deno.makeTempDir({ prefix: "pyproxy-integers-test-" });
  try {
    await Deno.writeTextFile(`${path}/deep.py`, DEEP);
    for (const integers of ["number", "bigint"] as const) {
      const sunk: unknown[] = [];
      await using pool = await Pool.start({
        workers: 1,
        modelsDir: path,
        handleSignals: false,
        integers,
        plugins: {
          use: [{ name: "sink", handlers: { sink: (a) => void sunk.push(a) } }],
        },
      });
      await pool.addModel("deep", { file: "deep.py", class: "Deep" });
      await pool.addModel("slow", { file: "deep.py", class: "Slow" });
      const pid = pool.status().workers[0]?.pid;
      // A call in flight on the same connection throughout.
      const slow = pool.execute("slow", {});
      // The depth is the frame's: a batch frame of stream items is 2 deeper.
      const tooDeep = (depth: number) => (err: unknown) => {
        assert.ok(err instanceof SerializationError, String(err));
        assert.match(
          err.message,
          /^Cannot complete execute(Model|Stream): it is nested \d+ levels deep and holds an integer beyond ±2\^53, which the host reads exactly only within 1000 levels$/,
        );
        const details = err.details as { depth: number; limit: number };
        assert.ok(details.depth >= depth && details.depth <= depth + 2);
        assert.equal(details.limit, 1000);
        return true;
      };
      for (const d of [1500, 5000]) {
        await assert.rejects(
          pool.execute("deep", { d, big: true }),
          tooDeep(d + 2),
        );
        const items: unknown[] = [];
        await assert.rejects(async () => {
          for await (
            const item of pool.executeStream("deep", {
              d,
              big: true,
              stream: true,
            })
          ) items.push(item);
        }, tooDeep(d + 2));
        assert.deepEqual(items, [{ i: 0 }]);
        // Host command arguments: the model's host call fails, not the model.
        const called = await pool.execute("deep", {
          d,
          big: true,
          call: true,
        }) as { hostError?: string };
        assert.match(
          called.hostError ?? "",
          /nested \d+ levels deep and holds an integer beyond ±2\^53/,
        );
        // Without such an integer, the depth alone is no problem for the host.
        assert.equal(leafOf(await pool.execute("deep", { d, big: false })), 1);
      }
      assert.deepEqual(sunk, []);
      assert.deepEqual(await slow, { slow: true });
      assert.equal(pool.status().workers[0]?.pid, pid, "the same worker");
      // Within 1000 levels it is exact (bigint) or refused as unsafe (number).
      const within = pool.execute("deep", { d: 990, big: true });
      if (integers === "bigint") assert.equal(leafOf(await within), 2n ** 64n);
      else await assert.rejects(within, UnsafeIntegerError);
    }
  } finally {
    await Deno.remove(path, { recursive: true });
  }
});

Deno.test("Pool integers: a spilled reply nested past 1000 levels holding an integer beyond ±2^53 fails its call with SerializationError, not a rounded number", async () => {
  const path = await Deno.makeTempDir({ prefix: "pyproxy-integers-test-" });
  try {
    await Deno.writeTextFile(`${path}/deep.py`, DEEP);
    for (const integers of ["number", "bigint"] as const) {
      const sunk: unknown[] = [];
      await using pool = await Pool.start({
        workers: 1,
        modelsDir: path,
        handleSignals: false,
        integers,
        plugins: {
          defaults: false,
          use: [spillover({ threshold: 64 * 1024 }), {
            name: "sink",
            handlers: { sink: (a) => void sunk.push(a) },
          }],
        },
      });
      await pool.addModel("deep", { file: "deep.py", class: "Deep" });
      const pad = 128 * 1024;
      await assert.rejects(
        pool.execute("deep", { d: 1500, big: true, pad }),
        (err: unknown) => {
          assert.ok(err instanceof SerializationError, String(err));
          assert.match(
            err.message,
            /^Cannot read spill file: it is nested \d+ levels deep and holds an integer beyond ±2\^53, which the host reads exactly only within 1000 levels$/,
          );
          const details = err.details as { depth: number; limit: number };
          assert.ok(details.depth >= 1501, String(details.depth));
          assert.equal(details.limit, 1000);
          return true;
        },
        integers,
      );
      // Host command arguments: the model's host call fails, not the model.
      const called = await pool.execute("deep", {
        d: 1500,
        big: true,
        call: true,
        pad,
      }) as { hostError?: string };
      assert.match(
        called.hostError ?? "",
        /nested \d+ levels deep and holds an integer beyond ±2\^53/,
      );
      assert.deepEqual(sunk, []);
      // Spilled without such an integer, or within 1000 levels: as inline.
      const plain = await pool.execute("deep", { d: 1500, big: false, pad });
      assert.equal(leafOf(plain), 1);
      const within = pool.execute("deep", { d: 990, big: true, pad });
      if (integers === "bigint") assert.equal(leafOf(await within), 2n ** 64n);
      else await assert.rejects(within, UnsafeIntegerError);
    }
  } finally {
    await Deno.remove(path, { recursive: true });
  }
});

const NEIGHBOURS = `
import sys

sys.setrecursionlimit(100_000)


def deep(d):
    v = 1
    for _ in range(d):
        v = [v]
    return v


class Neighbours:
    # On the event loop: the replies of calls read together are written
    # together, in one batch frame.
    inline = True

    def execute(self, msg):
        return {"v": deep(1500)} if msg["deep"] else {"big": 2**64}


class Items:
    def execute(self, msg):
        for i in range(5):
            yield {"v": deep(1500)}
            yield {"big": 2**64, "i": i}
`;

Deno.test("Pool integers: a reply sharing a batch frame with one nested past 1000 levels is still read exactly (it failed with SerializationError)", async () => {
  const path = await Deno.makeTempDir({ prefix: "pyproxy-integers-test-" });
  try {
    await Deno.writeTextFile(`${path}/neighbours.py`, NEIGHBOURS);
    await using pool = await Pool.start({
      workers: 1,
      modelsDir: path,
      handleSignals: false,
      integers: "bigint",
    });
    await pool.addModel("n", { file: "neighbours.py", class: "Neighbours" });
    await pool.addModel("items", { file: "neighbours.py", class: "Items" });
    for (let round = 0; round < 5; round++) {
      const [deepReply, big] = await Promise.all([
        pool.execute("n", { deep: true }),
        pool.execute("n", { deep: false }),
      ]);
      assert.equal(leafOf(deepReply), 1);
      assert.deepEqual(big, { big: 2n ** 64n });
    }
    // A stream's shallow items between deep ones.
    const bigs: unknown[] = [];
    for await (const item of pool.executeStream("items", {})) {
      const { big } = item as { big?: bigint };
      if (big !== undefined) bigs.push(big);
      else assert.equal(leafOf(item), 1);
    }
    assert.deepEqual(bigs, Array(5).fill(2n ** 64n));
  } finally {
    await Deno.remove(path, { recursive: true });
  }
});

/**
 * Inputs a user audit found to break a Python worker, through a real Pool (and
 * the gateway):
 * JSON nested too deep, lone surrogates, reading stdin in user code, and
 * `KeyboardInterrupt` raised by user code.
 */
import assert from "node:assert/strict";
import { PythonError, RemoteError, SerializationError } from "../src/errors.ts";
import type { OutputChunk } from "../src/atom.ts";
import { Pool, type PoolOptions } from "../src/pool.ts";
import { startGateway } from "./_gateway_harness.ts";

const ECHO = `
class Echo:
    def execute(self, msg):
        return msg
`;

async function echoPool(
  options: Partial<PoolOptions> = {},
): Promise<Pool & { dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "pyproxy-robust-test-" });
  await Deno.writeTextFile(`${dir}/echo.py`, ECHO);
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir,
    handleSignals: false,
    ...options,
  });
  await pool.addModel("echo", { file: "echo.py" });
  return Object.assign(pool, { dir });
}

async function closePool(pool: Pool & { dir: string }): Promise<void> {
  await pool.close();
  await Deno.remove(pool.dir, { recursive: true });
}

// Deeper than Python's json decodes on every supported version: about 1000
// levels on 3.9-3.11, 1497 on 3.12, 9998 on 3.13 (python/tests/test_deep_json.py
// probes the same way; 1100, used before, decoded fine on 3.12 and 3.13).
const TOO_DEEP = 100_000;

function nested(depth: number): unknown {
  return JSON.parse("[".repeat(depth) + "]".repeat(depth));
}

async function collect(stream: ReadableStream<OutputChunk>): Promise<string> {
  let text = "";
  for await (const chunk of stream) text += chunk.data;
  return text;
}

function pidOf(pool: Pool): number | null {
  return pool.status().workers[0]?.pid ?? null;
}

Deno.test("Pool answers a message nested too deep for Python with InvalidRequestError and keeps the worker", async () => {
  // Without spill-over, whose walk refuses such a message on the host first
  // (SerializationError): this is what the Python server itself does.
  const pool = await echoPool({ plugins: { remove: ["spillover"] } });
  try {
    const pid = pidOf(pool);
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        pool.execute("echo", { v: nested(TOO_DEEP) }),
        (err: unknown) => {
          assert.ok(err instanceof RemoteError, String(err));
          assert.equal(err.remoteType, "InvalidRequestError");
          assert.match(err.message, /nested deeper/);
          return true;
        },
      );
      assert.deepEqual(await pool.execute("echo", { v: [[1]] }), {
        v: [[1]],
      });
    }
    assert.equal(pidOf(pool), pid, "the same worker process served them all");
    assert.equal(pool.status().workers[0]?.state, "ready");
  } finally {
    await closePool(pool);
  }
});

Deno.test("Pool with its default plugins refuses a message nested 5000 to 1 000 000 levels deep with SerializationError naming the limit, before sending it", async () => {
  // A library user has no maxJsonDepth option (the gateway's): this pins
  // what they get instead. Spill-over's walk (a default plugin) refuses past
  // 900 levels on the host, iteratively enough for any depth (no stack
  // overflow), for calls, streams and eval alike; without it, Python's
  // refusal above (InvalidRequestError), the worker kept.
  const pool = await echoPool();
  try {
    const pid = pidOf(pool);
    const objects = (n: number): unknown => {
      let v: unknown = 1;
      for (let i = 0; i < n; i++) v = { a: v };
      return v;
    };
    const refused = (cmd: string) => (err: unknown) => {
      assert.ok(err instanceof SerializationError, String(err));
      assert.equal(err.code, "SERIALIZATION");
      assert.match(
        err.message,
        new RegExp(
          `^Cannot send ${cmd}: msg\\.v.* is nested deeper than 900 levels`,
        ),
      );
      return true;
    };
    for (const n of [5000, 100_000, 1_000_000]) {
      for (const v of [nested(n), objects(n)]) {
        await assert.rejects(
          pool.execute("echo", { v }),
          refused("executeModel"),
        );
        await assert.rejects(
          Array.fromAsync(pool.executeStream("echo", { v })),
          refused("executeStream"),
        );
      }
      await assert.rejects(
        pool.eval("1", { locals: { v: nested(n) } }).result,
        (err: unknown) => {
          assert.ok(err instanceof SerializationError, String(err));
          assert.match(
            err.message,
            /^Cannot send eval: .* nested deeper than 900 levels/,
          );
          return true;
        },
      );
    }
    // None of it reached the worker: the same process, ready, answering.
    assert.deepEqual(await pool.execute("echo", { v: nested(800) }), {
      v: nested(800),
    });
    assert.equal(pidOf(pool), pid);
    assert.equal(pool.status().workers[0]?.restarts, 0);
  } finally {
    await closePool(pool);
  }
});

Deno.test("Pool round-trips strings with lone surrogates exactly", async () => {
  const pool = await echoPool();
  try {
    const values = [
      "a\ud800b",
      "\udc80",
      "caf\udce9 \\\ud800\\",
      { ["k\udfff"]: ["\ud83d", "\ude00", "\ud83d\ude00"] },
      // Above the spill-over threshold (1 MiB): through spill files both ways.
      "x".repeat(1_200_000) + "\ud800" + "y\n".repeat(1000),
    ];
    for (const v of values) {
      assert.deepEqual(await pool.execute("echo", { v }), { v });
    }
    assert.equal(await pool.eval("'x\\ud800y'").result, "x\ud800y");
    assert.deepEqual(await pool.eval("{'a\\udce9': ['\\udfff']}").result, {
      "a\udce9": ["\udfff"],
    });
    const big = await pool.eval("'z' * 1_200_000 + '\\udc80'").result;
    assert.equal(big, "z".repeat(1_200_000) + "\udc80");
  } finally {
    await closePool(pool);
  }
});

Deno.test("Pool delivers eval output with lone surrogates in full and exactly", async () => {
  const pool = await echoPool();
  try {
    const atom = pool.eval(
      "import os\n" +
        "for i in range(3000): print('line', i)\n" +
        "print('bad \\udcff')\n" +
        "print(os.fsdecode(b'caf\\xe9'))\n" +
        "for i in range(3000, 6000): print('line', i)\n" +
        "'done'",
    );
    const output = collect(atom.output);
    assert.equal(await atom.result, "done");
    const expected = [];
    for (let i = 0; i < 3000; i++) expected.push(`line ${i}`);
    expected.push("bad \udcff", "caf\udce9");
    for (let i = 3000; i < 6000; i++) expected.push(`line ${i}`);
    assert.equal(await output, expected.join("\n") + "\n");

    const lone = pool.eval("print('x\\ud800y')");
    const loneOutput = collect(lone.output);
    await lone.result;
    assert.equal(await loneOutput, "x\ud800y\n");

    const failing = pool.eval("raise ValueError('bad \\udcff')");
    const err = await failing.result.then(
      () => assert.fail("expected a rejection"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof PythonError, String(err));
    assert.equal(err.message, "ValueError: bad \udcff");
    assert.ok(err.traceback.includes("bad \udcff"));
  } finally {
    await closePool(pool);
  }
});

Deno.test("Pool gives user code an empty stdin: input() raises EOFError at once", async () => {
  const pool = await echoPool();
  try {
    const pid = pidOf(pool);
    const err = await pool.eval("input('name? ')", { timeout: 10_000 }).result
      .then(
        () => assert.fail("expected a rejection"),
        (e: unknown) => e,
      );
    assert.ok(err instanceof PythonError, String(err));
    assert.equal(err.type, "EOFError");
    assert.equal(await pool.eval("import sys\nsys.stdin.read()").result, "");
    assert.equal(pidOf(pool), pid, "the worker was not replaced");
  } finally {
    await closePool(pool);
  }
});

Deno.test("Atom fails with PythonError when the code raises KeyboardInterrupt itself", async () => {
  const pool = await echoPool();
  try {
    const atom = pool.eval("raise KeyboardInterrupt");
    const err = await atom.result.then(
      () => assert.fail("expected a rejection"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof PythonError, String(err));
    assert.equal(err.type, "KeyboardInterrupt");
    assert.equal(atom.state, "failed");
  } finally {
    await closePool(pool);
  }
});

Deno.test("Gateway refuses a body nested deeper than limits.maxJsonDepth with 400 InvalidRequestError before parsing it; the call in flight and the worker carry on", async () => {
  await using gw = await startGateway();
  const first = await gw.fetch("/v1/models/whoami/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(first.status, 200);
  const { pid } = await first.json();
  // A call in flight on the one worker while the deep bodies are refused.
  const slow = gw.fetch("/v1/models/slow/execute", {
    method: "POST",
    body: '{"seconds":0.5}',
  });
  // 1000: too deep for Python 3.9-3.11. 200k with an integer beyond 2^53:
  // the exact-integer parse overflowed the stack (400 InvalidJson,
  // "Maximum call stack size exceeded").
  for (const [depth, leaf] of [[1000, ""], [200_000, "9223372036854775807"]]) {
    const body = "[".repeat(depth as number) + leaf +
      "]".repeat(depth as number);
    for (const path of ["/v1/models/whoami/execute", "/v1/channels/deep"]) {
      const res = await gw.fetch(path, { method: "POST", body });
      assert.equal(res.status, 400);
      const { error } = await res.json();
      assert.equal(error.type, "InvalidRequestError");
      assert.equal(
        error.message,
        `Cannot read request: the body is nested ${depth} levels deep, over the limit of 800 (the gateway's limits.maxJsonDepth, serve --max-json-depth)`,
      );
      assert.equal(error.depth, depth);
      assert.equal(error.limit, 800);
    }
  }
  const slowRes = await slow;
  assert.equal(slowRes.status, 200);
  assert.deepEqual(await slowRes.json(), { slept: 0.5 });
  const after = await gw.fetch("/v1/models/whoami/execute", {
    method: "POST",
    body: "{}",
  });
  assert.equal(after.status, 200);
  assert.equal((await after.json()).pid, pid, "the same worker process");
});

Deno.test("Gateway passes a body at limits.maxJsonDepth to Python and back exactly, with the default and a raised limit", async () => {
  for (const limit of [undefined, 890]) {
    await using gw = await startGateway(
      limit === undefined
        ? {}
        : { limits: { maxJsonDepth: limit, shutdownGrace: 2000 } },
    );
    const depth = limit ?? 800;
    const body = '{"a":'.repeat(depth - 1) + "[9223372036854775807]" +
      "}".repeat(depth - 1);
    const res = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body,
    });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), body);
    const over = await gw.fetch("/v1/models/echo/execute", {
      method: "POST",
      body: `[${body}]`,
    });
    assert.equal(over.status, 400);
    assert.equal((await over.json()).error.limit, depth);
  }
});

// Request ids in the library: `requestId` of pool.execute, pool.executeStream
// and session.execute reaches the model (host.request_id()) and its log
// records; an invalid one is refused before anything is sent.
import assert from "node:assert/strict";
import { ConfigError } from "../src/errors.ts";
import { isRequestId } from "../src/_request_id.ts";
import { Pool } from "../src/pool.ts";
import { modelsDir, PidTracker } from "./_pool_harness.ts";
import { recordingLogger, startServer } from "./_harness.ts";

const TAGGER = `import logging

from pyproxy import host

log = logging.getLogger("tagger")


class Tagger:
    def execute(self, msg):
        log.warning("tagging")
        print("printed")
        return host.request_id()
`;

const TAG_STREAM = `from pyproxy import host


class TagStream:
    def execute(self, msg):
        yield host.request_id()
        yield host.request_id()
`;

const BAD_IDS: unknown[] = ["", "a b", "x".repeat(129), "é", 7, null, {}];

Deno.test("isRequestId accepts 1 to 128 characters of A-Za-z0-9._:- only", () => {
  for (const good of ["a", "req-42", "A.b:c_d-9", "x".repeat(128)]) {
    assert.equal(isRequestId(good), true, good);
  }
  for (const bad of BAD_IDS) assert.equal(isRequestId(bad), false, String(bad));
});

Deno.test("Pool.execute and Pool.executeStream send requestId to the model, and its log records carry it", async () => {
  await using dir = await modelsDir();
  const { logger, entries } = recordingLogger();
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    logger,
  });
  pids.watch(pool);
  try {
    await pool.addModel("tagger", { source: TAGGER });
    await pool.addModel("tag_stream", { source: TAG_STREAM });
    assert.equal(
      await pool.execute("tagger", {}, { requestId: "req-lib" }),
      "req-lib",
    );
    assert.equal(await pool.execute("tagger", {}), null);
    const items = [];
    for await (
      const item of pool.executeStream("tag_stream", {}, {
        requestId: "req-stream",
      })
    ) items.push(item);
    assert.deepEqual(items, ["req-stream", "req-stream"]);
    const model = entries.filter(([, , p]) => p?.model === "tagger");
    // The printed line and the logging record of each call, with the id of
    // the first only.
    assert.deepEqual(
      model.map(([level, message, p]) => [
        level,
        message,
        p?.message,
        p?.requestId,
      ]),
      [
        ["warn", "{message} (request id {requestId})", "tagging", "req-lib"],
        ["info", "{message} (request id {requestId})", "printed", "req-lib"],
        ["warn", "{message}", "tagging", undefined],
        ["info", "{message}", "printed", undefined],
      ],
    );
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Pool.execute and Pool.executeStream refuse an invalid requestId with ConfigError", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
  });
  pids.watch(pool);
  try {
    await pool.addModel("tagger", { source: TAGGER });
    await pool.addModel("tag_stream", { source: TAG_STREAM });
    for (const bad of BAD_IDS) {
      const options = { requestId: bad as string };
      await assert.rejects(
        pool.execute("tagger", {}, options),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.message.startsWith(
            "Cannot send call executeModel: requestId: expected 1 to 128 characters of A-Za-z0-9._:-, got ",
          ),
        String(bad),
      );
      await assert.rejects(
        pool.executeStream("tag_stream", {}, options).next(),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.message.startsWith(
            "Cannot send call executeStream: requestId: expected",
          ),
        String(bad),
      );
    }
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

Deno.test("Session.execute sends requestId to the model, and refuses an invalid one", async () => {
  await using server = await startServer({ files: { "tagger.py": TAGGER } });
  await using session = await server.connect();
  await session.addModel("tagger", { file: "tagger.py" });
  assert.equal(
    await session.execute("tagger", {}, { requestId: "req-session" }),
    "req-session",
  );
  assert.equal(await session.execute("tagger", {}), null);
  for (const bad of BAD_IDS) {
    let done = 0;
    await assert.rejects(
      session.execute("tagger", {}, {
        requestId: bad as string,
        onDone: () => done++,
      }),
      ConfigError,
      String(bad),
    );
    assert.equal(done, 1, "onDone is called for a refused request");
  }
});

const BATCHER = `import logging

from pyproxy import host

log = logging.getLogger("batcher")


class Batcher:
    batch_size = 4
    # Long: a batch goes when the one before it ends, not on a timer.
    batch_delay_ms = 1000

    def execute_batch(self, msgs):
        log.warning("batch of %d", len(msgs))
        ids = host.request_ids()
        return [{"id": host.request_id(), "ids": ids, "index": i} for i in range(len(msgs))]
`;

Deno.test("Pool.execute of a batching model: execute_batch reads each call's requestId in host.request_ids(), and its log records carry the batch's ids", async () => {
  await using dir = await modelsDir();
  const { logger, entries } = recordingLogger();
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
    logger,
  });
  pids.watch(pool);
  try {
    await pool.addModel("batcher", { source: BATCHER });
    // The first goes at once, alone; the other three wait for it to end
    // and go as one batch, in call order.
    type Seen = { id: string | null; ids: Array<string | null>; index: number };
    const calls = ["req-a", undefined, "req-c", "req-d"].map((requestId) =>
      pool.execute<Seen>(
        "batcher",
        {},
        requestId === undefined ? {} : { requestId },
      )
    );
    const seen = await Promise.all(calls);
    assert.deepEqual(seen, [
      { id: null, ids: ["req-a"], index: 0 },
      { id: null, ids: [null, "req-c", "req-d"], index: 0 },
      { id: null, ids: [null, "req-c", "req-d"], index: 1 },
      { id: null, ids: [null, "req-c", "req-d"], index: 2 },
    ]);
    // A batch of calls without ids: none.
    assert.deepEqual(await pool.execute("batcher", {}), {
      id: null,
      ids: [null],
      index: 0,
    });
    const records = entries.filter(([, , p]) => p?.model === "batcher");
    assert.deepEqual(
      records.map(([, message, p]) => [
        message,
        p?.message,
        p?.requestIds,
        p?.requestIdList,
        p?.requestId,
      ]),
      [
        [
          "{message} (request ids {requestIdList})",
          "batch of 1",
          ["req-a"],
          "req-a",
          undefined,
        ],
        [
          "{message} (request ids {requestIdList})",
          "batch of 3",
          ["req-c", "req-d"],
          "req-c, req-d",
          undefined,
        ],
        ["{message}", "batch of 1", undefined, undefined, undefined],
      ],
    );
    // An invalid id is refused before the call joins a batch.
    await assert.rejects(
      pool.execute("batcher", {}, { requestId: "a b" }),
      ConfigError,
    );
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

const EVAL_ID =
  "from pyproxy import host\n(host.request_id(), host.request_ids())";

Deno.test("Pool.eval and EvalSession.eval send requestId to the code (host.request_id()), keep it as atom.requestId, and refuse an invalid one", async () => {
  await using dir = await modelsDir();
  const pids = new PidTracker();
  const pool = await Pool.start({
    workers: 1,
    modelsDir: dir.path,
    handleSignals: false,
  });
  pids.watch(pool);
  try {
    const atom = pool.eval(EVAL_ID, { requestId: "req-eval" });
    assert.equal(atom.requestId, "req-eval");
    assert.deepEqual(await atom.result, ["req-eval", ["req-eval"]]);
    const plain = pool.eval(EVAL_ID);
    assert.equal(plain.requestId, undefined);
    assert.deepEqual(await plain.result, [null, [null]]);
    await using session = await pool.openSession();
    assert.deepEqual(
      await session.eval(EVAL_ID, { requestId: "req-session" }).result,
      ["req-session", ["req-session"]],
    );
    for (const bad of BAD_IDS) {
      assert.throws(
        () => pool.eval("1", { requestId: bad as string }),
        (err: unknown) =>
          err instanceof ConfigError &&
          err.message.startsWith(
            "Cannot eval: requestId: expected 1 to 128 characters of A-Za-z0-9._:-, got ",
          ),
        String(bad),
      );
    }
  } finally {
    await pool.close();
    await pids.assertGone();
  }
});

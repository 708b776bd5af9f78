import assert from "node:assert/strict";
import {
  errorFromWire,
  ModelUnavailableError,
  OverloadedError,
  SerializationError,
  ShuttingDownError,
  SpillError,
  StartError,
  UnsafeIntegerError,
} from "../src/errors.ts";
import { describeError } from "../src/gateway/error_response.ts";

Deno.test("describeError answers what the host cannot send with 400 (413 above the frame limit), not a 500", () => {
  const deep = describeError(
    new SerializationError(
      "Cannot send executeModel: msg.a is nested too deep",
    ),
    false,
  );
  assert.equal(deep.status, 400);
  assert.equal(deep.body.type, "SerializationError");
  assert.match(deep.body.message, /nested too deep/);
  const large = describeError(
    new SerializationError("Cannot send executeModel: too large", {
      details: { bytes: 10, limit: 4 },
    }),
    false,
  );
  assert.equal(large.status, 413);
});

Deno.test("describeError answers a model's reply too deep for its integers beyond ±2^53 with 422, not 413", () => {
  // The session's refusal of such a reply (details: depth and limit), and
  // the spill-over's of such a spilled one.
  for (
    const action of ["Cannot complete executeModel", "Cannot read spill file"]
  ) {
    const { status, body } = describeError(
      new SerializationError(
        `${action}: it is nested 1502 levels deep and holds an integer beyond ±2^53, which the host reads exactly only within 1000 levels`,
        { details: { depth: 1502, limit: 1000 } },
      ),
      false,
    );
    assert.equal(status, 422, action);
    assert.equal(body.type, "SerializationError");
    assert.match(body.message, /nested 1502 levels deep/);
  }
});

Deno.test("describeError answers the host's SpillError with 503 past maxBytes and 502 otherwise", () => {
  const full = describeError(
    new SpillError("Cannot spill message", {
      details: { pendingBytes: 9, maxBytes: 10 },
    }),
    false,
  );
  assert.equal(full.status, 503);
  assert.equal(full.headers["retry-after"], "1");
  assert.equal(full.body.type, "SpillError");
  assert.equal(
    describeError(new SpillError("Cannot read spill file: md5"), false).status,
    502,
  );
});

Deno.test("describeError keeps spill files' absolute paths out of responses unless debug", () => {
  const host = new SpillError(
    "Cannot read spill file /dev/shm/pyproxy-spill-12999-de71af/w1-1/py-c1-3.json: crc32 mismatch",
  );
  assert.equal(
    describeError(host, false).body.message,
    "Cannot read spill file py-c1-3.json: crc32 mismatch",
  );
  assert.equal(describeError(host, true).body.message, host.message);
  const remote = errorFromWire({
    type: "SpillError",
    message:
      "Cannot read spill file '/dev/shm/pyproxy-spill-1-ab/w1-1/h-4.json': outside the spill directory /dev/shm/pyproxy-spill-1-ab/w1-1",
  });
  const { status, body } = describeError(remote, false);
  assert.equal(status, 502);
  assert.equal(
    body.message,
    "Cannot read spill file 'h-4.json': outside the spill directory w1-1",
  );
});

Deno.test("describeError answers a StartError (a resize whose workers failed) with 502, stderr tails only with debug", () => {
  const err = new StartError(
    "Cannot resize pool to 3 workers: all 2 new workers failed to start\nw2: start failed: exited\n    /home/me/secret.py line 1",
  );
  const plain = describeError(err, false);
  assert.equal(plain.status, 502);
  assert.equal(plain.body.type, "StartError");
  assert.equal(
    plain.body.message,
    "Cannot resize pool to 3 workers: all 2 new workers failed to start",
  );
  assert.match(describeError(err, true).body.message, /secret\.py/);
});

Deno.test("describeError answers an UnsafeIntegerError (a caller's pool with integers: 'number') with 422, its path in the message", () => {
  const message =
    "Cannot complete executeModel: result.id is 18446744073709551617, beyond ±2^53";
  for (
    const err of [
      new UnsafeIntegerError(message),
      // As the spill-over plugin's error reply brings it back.
      errorFromWire({ type: "UnsafeIntegerError", message }),
    ]
  ) {
    const res = describeError(err, false);
    assert.equal(res.status, 422);
    assert.equal(res.body.type, "UnsafeIntegerError");
    assert.equal(res.body.message, message);
  }
});

Deno.test("describeError answers a ModelUnavailableError (a placed model out of service) with 503 naming the model, without Retry-After", () => {
  const res = describeError(
    new ModelUnavailableError(
      "Cannot route call executeModel: model 'llm' is out of service: it crashed 3 workers",
      { details: { model: "llm", reason: "it crashed 3 workers" } },
    ),
    false,
  );
  assert.equal(res.status, 503);
  assert.deepEqual(res.headers, {});
  assert.deepEqual(res.body, {
    type: "ModelUnavailableError",
    message:
      "Cannot route call executeModel: model 'llm' is out of service: it crashed 3 workers",
    model: "llm",
  });
});

Deno.test("describeError words a model quarantined for killing its worker after its load in the gateway's terms: the PUT needs --allow-manage, else a restart", () => {
  const reason =
    "its worker died within 3000 ms of loading it twice with no call or other load running there (worker w1 (pid 4200) exited with code 3 505 ms after the load; worker w2 (pid 4201) exited with code 3 506 ms after the load)";
  const details = {
    model: "crashy",
    reason,
    loadCrashes: [],
    loadCrashWindow: 3000,
    lastExit: "exited with code 3",
  };
  const call = describeError(
    new ModelUnavailableError(
      `Cannot route call executeModel: model 'crashy' is out of service: ${reason}; update it (pool.updateModel, PUT /v1/models/crashy) to load it again`,
      { details: { ...details, cmd: "executeModel" } },
    ),
    false,
  );
  assert.equal(call.status, 503);
  assert.deepEqual(call.headers, {});
  assert.deepEqual(call.body, {
    type: "ModelUnavailableError",
    message:
      `Cannot call model 'crashy': it is out of service: ${reason} (limits.loadCrashWindow in pyproxy.json); PUT /v1/models/crashy loads it again (with --allow-manage; without it, restart the gateway)`,
    model: "crashy",
  });
  const version = describeError(
    new ModelUnavailableError("Cannot route call executeModel: ...", {
      details: { ...details, version: "2", cmd: "executeModel" },
    }),
    false,
  );
  assert.match(
    version.body.message as string,
    /^Cannot call model 'crashy' version '2': it is out of service: .*; PUT \/v1\/models\/crashy\/versions\/2 loads it again/,
  );
});

Deno.test("describeError words a pool's ModelUnavailableError in the gateway's settings (limits.*, the PUT that clears it) from its details", () => {
  const details = {
    model: "llm",
    reason: "it crashed ..., past placement.maxRelocations 2; last: ...",
    crashed: ["w2", "w3", "w4"],
    relocationWindow: 600_000,
    maxRelocations: 2,
    lastExit: "exited with code 3",
  };
  const call = describeError(
    new ModelUnavailableError(
      "Cannot route call executeModel: model 'llm' is out of service: it crashed ..., past placement.maxRelocations 2; last: worker w4 crashed 6 times within 60000 ms; last: exited with code 3 (retried in 60000 ms: reconnect({ failedRetryAfter })); update it (pool.updateModel, PUT /v1/models/llm) to load it again",
      { details: { ...details, cmd: "executeStream" } },
    ),
    false,
  );
  assert.equal(call.status, 503);
  assert.deepEqual(call.body, {
    type: "ModelUnavailableError",
    message:
      "Cannot call model 'llm': it is out of service: it crashed the workers it was placed on 3 times within 600000 ms (w2, w3, w4; the last: exited with code 3), past limits.maxRelocations 2 (pyproxy.json; its window: limits.relocationWindow); PUT /v1/models/llm loads it again (with --allow-manage; without it, restart the gateway)",
    model: "llm",
  });
  const init = describeError(
    new ModelUnavailableError("Cannot init model 'llm': ...", {
      details: { ...details, cmd: "initModel", lastExit: null },
    }),
    false,
  );
  assert.equal(
    init.body.message,
    "Cannot init model 'llm': it is out of service: it crashed the workers it was placed on 3 times within 600000 ms (w2, w3, w4), past limits.maxRelocations 2 (pyproxy.json; its window: limits.relocationWindow); PUT /v1/models/llm loads it again (with --allow-manage; without it, restart the gateway)",
  );
  // A version (llm@2 in the pool) named as the gateway's routes name it.
  const version = describeError(
    new ModelUnavailableError("Cannot route call executeModel: ...", {
      details: { ...details, version: "2", cmd: "executeModel" },
    }),
    false,
  );
  assert.deepEqual(version.body, {
    type: "ModelUnavailableError",
    message:
      "Cannot call model 'llm' version '2': it is out of service: it crashed the workers it was placed on 3 times within 600000 ms (w2, w3, w4; the last: exited with code 3), past limits.maxRelocations 2 (pyproxy.json; its window: limits.relocationWindow); PUT /v1/models/llm/versions/2 loads it again (with --allow-manage; without it, restart the gateway)",
    model: "llm",
    version: "2",
  });
});

Deno.test("describeError: a ShuttingDownError of a call cut off while it ran (details.started) gets no Retry-After, one refused unrun does", async () => {
  const { ShuttingDownError } = await import("../src/errors.ts");
  const refused = describeError(
    new ShuttingDownError("Cannot accept call: pool is closing"),
    false,
  );
  assert.equal(refused.status, 503);
  assert.equal(refused.headers["retry-after"], "5");
  // Retrying clients read Retry-After as "not processed": this one ran.
  const cut = describeError(
    new ShuttingDownError(
      "Cannot complete call executeModel of model 'm': pool closed",
      { details: { started: true } },
    ),
    false,
  );
  assert.equal(cut.status, 503);
  assert.equal(cut.headers["retry-after"], undefined);
});

Deno.test("Pool.close: a call cut off when shutdownGrace ran out rejects with a ShuttingDownError saying it started", async () => {
  const { Pool } = await import("../src/pool.ts");
  const { ShuttingDownError } = await import("../src/errors.ts");
  const pool = await Pool.start({
    workers: 1,
    handleSignals: false,
    shutdownGrace: 100,
  });
  try {
    await pool.addModel("sleeper", {
      source:
        "import time\nclass Sleeper:\n    threaded = True\n    def execute(self, msg):\n        time.sleep(msg['s'])\n        return msg['s']\n",
    });
    const call = pool.execute("sleeper", { s: 2 }).then(
      () => undefined,
      (err: unknown) => err,
    );
    // Running (a threaded call: on the worker's call thread).
    const deadline = Date.now() + 10_000;
    while (pool.status().workers[0]?.inFlight !== 1) {
      if (Date.now() > deadline) throw new Error("the call never ran");
      await new Promise((r) => setTimeout(r, 10));
    }
    await pool.close();
    const err = await call;
    assert.ok(err instanceof ShuttingDownError, String(err));
    assert.match(err.message, /pool closed/);
    assert.equal(err.details.started, true);
  } finally {
    await pool.close();
  }
});

Deno.test("describeError: a model call's 504 says where it waited (queue: it never ran, safe to retry)", async () => {
  const { TimeoutError } = await import("../src/errors.ts");
  for (const waited of ["queue", "worker", "plugin"] as const) {
    const { status, body } = describeError(
      new TimeoutError("Cannot complete executeModel of model 'm': ...", {
        details: { model: "m", timeoutMs: 50, waited },
      }),
      false,
    );
    assert.equal(status, 504);
    assert.equal(body.waited, waited);
  }
  // Another timeout (a load's, a session's): no such field.
  const { body } = describeError(new TimeoutError("Cannot load: ..."), false);
  assert.equal(body.waited, undefined);
});

Deno.test("describeError: Retry-After is an error's details.retryAfterMs in seconds, rounded up (a plugin's quota of its own class too), else the default", () => {
  class QuotaError extends OverloadedError {
    override readonly name = "QuotaError";
    override readonly code = "QUOTA";
  }
  const cases: Array<[unknown, string]> = [
    [60_000, "60"],
    [1_500, "2"],
    [1, "1"],
    [0, "0"],
    [-5, "1"],
    [Infinity, "1"],
    ["60000", "1"],
    [undefined, "1"],
  ];
  for (const [retryAfterMs, expected] of cases) {
    const details = retryAfterMs === undefined ? {} : { retryAfterMs };
    const own = describeError(
      new QuotaError("Cannot run call: quota used up", { details }),
      false,
    );
    assert.equal(own.status, 429);
    assert.equal(own.body.type, "QuotaError");
    assert.equal(own.headers["retry-after"], expected, String(retryAfterMs));
    const pools = describeError(
      new OverloadedError("Cannot accept call: queue full", { details }),
      false,
    );
    assert.equal(pools.headers["retry-after"], expected, String(retryAfterMs));
  }
  // The 503s that carry one take it too.
  const draining = describeError(
    new ShuttingDownError("Cannot accept call: pool is closing", {
      details: { retryAfterMs: 30_000 },
    }),
    false,
  );
  assert.equal(draining.headers["retry-after"], "30");
});

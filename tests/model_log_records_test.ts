/**
 * What the host's log records of a model's output and logging carry (a JSON
 * log pipeline's view): the call's trace, and tracebacks joined per thread
 * and on stdout, with real Python servers.
 */
import assert from "node:assert/strict";
import { Pool } from "../src/pool.ts";
import { modelsDir, poolOptions } from "./_pool_harness.ts";
import { recordingLogger } from "./_harness.ts";

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID = "00f067aa0ba902b7";

const LOGS_AND_PRINTS = `import logging
log = logging.getLogger("scorer")
class Scorer:
    threaded = True
    def execute(self, msg):
        log.warning("slow input")
        print("printed")
        return 1
`;

Deno.test("A model's logging records and prints carry the call's trace id and span id", async () => {
  await using dir = await modelsDir();
  const { logger, entries } = recordingLogger();
  await using pool = await Pool.start(
    poolOptions(dir.path, { workers: 1, logger }),
  );
  await pool.addModel("scorer", { source: LOGS_AND_PRINTS });
  assert.equal(
    await pool.execute("scorer", {}, {
      requestId: "req-1",
      traceparent: `00-${TRACE_ID}-${SPAN_ID}-01`,
    }),
    1,
  );
  // Without a traceparent: no trace fields.
  assert.equal(await pool.execute("scorer", {}, { requestId: "req-2" }), 1);
  const mine = entries.filter(([, , p]) => p?.model === "scorer");
  assert.deepEqual(
    mine.map(([, , p]) => [p?.stream, p?.requestId, p?.traceId, p?.spanId]),
    [
      ["logging", "req-1", TRACE_ID, SPAN_ID],
      ["stdout", "req-1", TRACE_ID, SPAN_ID],
      ["logging", "req-2", undefined, undefined],
      ["stdout", "req-2", undefined, undefined],
    ],
  );
});

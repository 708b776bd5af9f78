/**
 * `serve --log-format json`'s formatter (src/_json_lines_formatter.ts) with
 * records as LogTape makes them: whatever the values of a message, one JSON
 * line, and never a lost record.
 */
import assert from "node:assert/strict";
import { configure, getLogger, reset } from "@logtape/logtape";
import { jsonLinesFormatter } from "../src/_json_lines_formatter.ts";

/** The lines `log` writes through the formatter (a sink of LogTape's). */
async function linesOf(log: () => void): Promise<string[]> {
  const lines: string[] = [];
  await configure({
    reset: true,
    sinks: {
      json: (record) => void lines.push(jsonLinesFormatter(record)),
    },
    loggers: [
      { category: ["chaos"], lowestLevel: "debug", sinks: ["json"] },
      { category: ["logtape", "meta"], lowestLevel: "fatal", sinks: [] },
    ],
  });
  try {
    log();
  } finally {
    await reset();
  }
  return lines;
}

Deno.test("A message's object values with a BigInt or a cycle are written as JSON, and a null-prototype one loses no record", async () => {
  const cycle: Record<string, unknown> = { a: 1 };
  cycle.self = cycle;
  const bare = Object.create(null) as Record<string, unknown>;
  bare.n = 2n;
  bare.self = bare;
  const lines = await linesOf(() => {
    const logger = getLogger(["chaos"]);
    logger.info("big {value}", { value: { n: 1n } });
    logger.info("cycle {value}", { value: cycle });
    // No toString: String() of it throws, the record was lost.
    logger.warn("bare {value}", { value: bare });
    logger.info("after");
  });
  const messages = lines.map((line) => {
    assert.ok(line.endsWith("\n"), line);
    return JSON.parse(line).message;
  });
  assert.deepEqual(messages, [
    'big {"n":"1"}',
    'cycle {"a":1,"self":"[Circular]"}',
    'bare {"n":"2","self":"[Circular]"}',
    "after",
  ]);
});

Deno.test("A value that JSON cannot write at all (a throwing toJSON) is its tag, in the message and the properties: the record is still written", async () => {
  const bare = Object.create(null) as Record<string, unknown>;
  bare.toJSON = () => {
    throw new Error("no JSON");
  };
  const lines = await linesOf(() => {
    getLogger(["chaos"]).error("value {value} end", { value: bare });
  });
  assert.equal(lines.length, 1);
  const record = JSON.parse(lines[0]!);
  assert.equal(record.message, "value [object Object] end");
  assert.equal(record.properties.value, "[object Object]");
});

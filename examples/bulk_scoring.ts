/**
 * A batch job: score every row of a JSON lines file with a Python model and
 * write one result line per row, in the rows' order, with at most `IN_FLIGHT`
 * calls pending (`pool.executeEach`: the file is read only as fast as results
 * are written), each row's failure kept beside its id: see docs/performance.md, "Scoring many
 * rows (a batch job)".
 *
 *     deno run -A examples/bulk_scoring.ts
 *     bun run examples/bulk_scoring.ts
 *
 * @module
 */
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pool } from "../mod.ts";

const MODEL = `
import math

class Risk:
    """A vectorised model: one call scores a batch of rows."""
    batch_size = 256
    batch_delay_ms = 5

    def execute_batch(self, rows):
        return [ValueError("row %d: income must be >= 0" % r["id"]) if r["income"] < 0
                else {"id": r["id"], "p": round(1 / (1 + math.exp(r["debt"] / r["income"] - 1)), 4)}
                for r in rows]
`;

type Row = { id: number; income: number; debt: number };

/** The lines of a file, read as they are needed. */
async function* lines(path: string): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let rest = "";
  for await (const chunk of createReadStream(path)) {
    const parts = (rest + decoder.decode(chunk, { stream: true })).split("\n");
    rest = parts.pop()!;
    yield* parts;
  }
  if (rest !== "") yield rest;
}

async function* parse(src: AsyncIterable<string>): AsyncGenerator<Row> {
  for await (const line of src) yield JSON.parse(line);
}

const ROWS = 20_000;
const IN_FLIGHT = 1024; // a batching model: enough to fill its batches
const dir = await mkdtemp(join(tmpdir(), "bulk-scoring-"));
try {
  const input = join(dir, "rows.jsonl");
  const output = join(dir, "scores.jsonl");
  await writeFile(
    input,
    Array.from({ length: ROWS }, (_, id) =>
      JSON.stringify({
        id,
        income: id === 1234 ? -1 : 30_000 + id,
        debt: id % 5_000,
      })).join("\n") + "\n",
  );

  await using pool = await Pool.start({ workers: 2 });
  await pool.addModel("risk", { source: MODEL });

  const out = await open(output, "w");
  let scored = 0;
  let next = 0;
  const failed: string[] = [];
  try {
    for await (
      const r of pool.executeEach<Row, unknown>(
        "risk",
        parse(lines(input)),
        // idempotent: a row on a worker that dies is sent again elsewhere
        { concurrency: IN_FLIGHT, idempotent: true },
      )
    ) {
      const row = r.input;
      if (row.id !== next++) throw new Error(`out of order at ${row.id}`);
      if (r.ok) scored++;
      else failed.push(`${row.id}: ${(r.error as Error).message}`);
      await out.write(
        JSON.stringify(
          r.ok ? r.result : { id: row.id, error: (r.error as Error).message },
        ) + "\n",
      );
    }
  } finally {
    await out.close();
  }
  console.log(
    `${next} rows in order: ${scored} scored, ${failed.length} failed`,
  );
  for (const f of failed) console.log(`failed ${f}`);
} finally {
  await rm(dir, { recursive: true });
}

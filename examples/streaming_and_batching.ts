/**
 * A streaming model (an `execute` that yields, here token by token) and a
 * batching model (`batch_size` + `execute_batch`): see docs/models.md,
 * "Streaming" and "Batching".
 *
 *     deno run -A examples/streaming_and_batching.ts
 *     bun run examples/streaming_and_batching.ts
 *
 * @module
 */
import { Pool } from "../mod.ts";

const TOKENS = `
import asyncio

class Tokens:
    """Yields the words of a text one by one, as a language model yields tokens."""
    async def execute(self, msg):
        for word in msg["text"].split():
            await asyncio.sleep(0.01)  # the next token takes a while
            yield word
`;

const SCORER = `
class Scorer:
    """Scores many inputs at once (one vectorised call instead of one per input)."""
    batch_size = 32
    batch_delay_ms = 5

    def execute_batch(self, msgs):
        return [ValueError("x must be >= 0") if m["x"] < 0 else {"score": m["x"] * 2, "batch": len(msgs)}
                for m in msgs]
`;

await using pool = await Pool.start({ workers: 1 });
await pool.addModel("tokens", { source: TOKENS });
await pool.addModel("scorer", { source: SCORER });

// Each word is printed as soon as the model yields it.
const words: string[] = [];
for await (
  const word of pool.executeStream<string>("tokens", { text: "to be or not" })
) {
  words.push(word);
  console.log("token:", word);
}

// 10 concurrent calls: the first goes at once, the others share one
// execute_batch call while it runs; each caller gets its own answer.
const results = await Promise.allSettled(
  [3, 1, 4, 1, 5, 9, 2, 6, -5, 3].map((x) => pool.execute("scorer", { x })),
);
for (const r of results) {
  console.log(
    r.status === "fulfilled"
      ? r.value
      : `error: ${(r.reason as Error).message}`,
  );
}
console.log(`${words.length} tokens, ${results.length} scores`);

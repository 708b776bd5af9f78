/**
 * Remote evaluation: run Python code on a pool, stream its output live, keep
 * a namespace in a session, and cancel a runaway loop.
 *
 * Run with `deno run -A examples/eval.ts` (or `bun run examples/eval.ts`).
 *
 * @module
 */
import { Pool } from "../src/pool.ts";

await using pool = await Pool.start({ workers: 2 });

// Output arrives while the code runs; the value of the final expression is the result.
const atom = pool.eval(
  "import time\nfor i in range(3):\n    print('tick', i)\n    time.sleep(0.2)\n6 * 7",
);
for await (const chunk of atom.output) {
  console.log(`[fd ${chunk.fd} #${chunk.seq}]`, chunk.data.trimEnd());
}
console.log("result:", await atom.result);

// A function plus arguments.
console.log(
  "add:",
  await pool.eval("def add(a, b):\n    return a + b", { args: [2, 3] }).result,
);

// A session keeps its namespace between atoms (on one worker).
await using session = await pool.openSession();
await session.eval("import math\nr = 2").result;
console.log("area:", await session.eval("math.pi * r ** 2").result);

// Cancellation interrupts the code; a late reader can replay the output.
const spin = pool.eval("print('spinning')\nwhile True:\n    pass", {
  timeout: 300,
});
await spin.result.catch((err) => console.log("spin:", err.name, err.message));
for await (const chunk of spin.replay(0)) {
  console.log("replayed:", chunk.data.trimEnd());
}

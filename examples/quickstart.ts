/**
 * The README's quick start: `deno run -A examples/quickstart.ts` (on Bun:
 * `bun run examples/quickstart.ts`).
 *
 * @module
 */
import { Pool } from "../mod.ts";

const modelsDir = new URL("./models", import.meta.url).pathname;
await using pool = await Pool.start({ workers: 2, modelsDir });
await pool.addModel("doubler", { file: "doubler.py", options: { k: 3 } });
console.log(await pool.execute("doubler", { x: 5 })); // { y: 15 }

const atom = pool.eval("print('hello from Python'); 6 * 7");
for await (const chunk of atom.output) {
  console.log(`[fd ${chunk.fd}]`, chunk.data.trimEnd());
}
console.log(await atom.result); // 42

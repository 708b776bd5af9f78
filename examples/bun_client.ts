// pyproxy on Bun: start a pool, load a model, execute it, eval code with live
// output, shut down. Uses only the public API.
//
//   bun install                      # once, in a checkout (npm deps of deno.json)
//   bun run examples/bun_client.ts
//
// The same file runs on Deno: deno run -A examples/bun_client.ts
import { Pool } from "../mod.ts";

const SCORER = `
class Scorer:
    """Scores a text: its length times a weight."""

    inputs = {"text": "string"}
    outputs = {"score": "number"}

    def __init__(self, options):
        self.weight = options.get("weight", 1)

    def execute(self, msg):
        return {"score": len(msg["text"]) * self.weight}
`;

const CODE = `
import sys
for i in range(3):
    print("working", i)
print("a warning", file=sys.stderr)
sum(range(10))
`;

const runtimeName = "Bun" in globalThis ? "bun" : "deno";
await using pool = await Pool.start({ workers: 2 });
console.log(
  `${runtimeName}: pool started, workers ${
    pool.status().workers.map((w) => w.pid).join(", ")
  }`,
);

await pool.addModel("scorer", { source: SCORER, options: { weight: 2 } });
console.log("execute:", await pool.execute("scorer", { text: "hello" }));

const atom = pool.eval(CODE, { timeout: 10_000 });
const printing = (async () => {
  for await (const chunk of atom.output) {
    const stream = chunk.fd === 1 ? "stdout" : "stderr";
    for (const line of chunk.data.trimEnd().split("\n")) {
      console.log(`  [${stream}] ${line}`);
    }
  }
})();
console.log("eval result:", await atom.result);
await printing;

await pool.close();
console.log(
  "closed:",
  pool.status().workers.every((w) => w.state === "stopped"),
);

/**
 * The `itemAck`s a stream's reader sends per item, the host's CPU per item
 * and the items per second of one worker's stream, at a language model's
 * pace (items 1 ms and 10 ms apart), at full speed, and for a reader 1 ms
 * per item slow. `deno run -A bench/stream_acks.ts [count|tput|all]`; run it
 * on two trees in turn to compare them.
 *
 * @module
 */
import process from "node:process";
import { Pool } from "../src/pool.ts";

const dir = await Deno.makeTempDir();
const pool = await Pool.start({
  workers: 1,
  modelsDir: dir,
  handleSignals: false,
});
await pool.addModel("counter", {
  source: `
import time
class Counter:
    def execute(self, msg):
        s = msg.get("sleep", 0)
        for i in range(msg["n"]):
            if s:
                time.sleep(s)
            yield i
`,
});
let acks = 0;
const control = pool.control.bind(pool);
pool.control = (worker, cmd, args, options) => {
  if (cmd === "itemAck") acks++;
  return control(worker, cmd, args, options);
};

async function run(n: number, sleep: number, slowReader = 0) {
  acks = 0;
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  let read = 0;
  for await (const _ of pool.executeStream("counter", { n, sleep })) {
    read++;
    if (slowReader) await new Promise((r) => setTimeout(r, slowReader));
  }
  const seconds = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(cpu);
  return {
    items: read,
    acks,
    acksPerItem: +(acks / read).toFixed(3),
    hostCpuUsPerItem: Math.round((used.user + used.system) / read),
    itemsPerSecond: Math.round(read / seconds),
  };
}

const mode = Deno.args[0] ?? "all";
try {
  if (mode === "all" || mode === "count") {
    for (let i = 0; i < 3; i++) {
      console.log("1000 items 1 ms apart", await run(1000, 0.001));
    }
    for (let i = 0; i < 2; i++) {
      console.log("200 items 10 ms apart", await run(200, 0.01));
    }
    console.log("1000 items at full speed", await run(1000, 0));
    console.log("300 items, a reader 1 ms slow", await run(300, 0, 1));
  }
  if (mode === "all" || mode === "tput") {
    for (let i = 0; i < 3; i++) {
      console.log("100 000 items at full speed", await run(100_000, 0));
    }
  }
} finally {
  await pool.close();
  await Deno.remove(dir, { recursive: true });
}

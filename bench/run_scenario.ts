/**
 * Runs one scenario (or one case of it) in this process and prints its rows
 * as one `BENCH_ROWS <json>` line on stdout. `bench/main.ts` starts this in a
 * fresh process per scenario/case, so a crash or a hang costs one scenario,
 * and peak-memory readings belong to that case alone.
 *
 *     deno run -A bench/run_scenario.ts --scenario sequential --config '{"rounds":5,"roundMs":1000,"quick":false}'
 *
 * @module
 */
import { parseArgs } from "node:util";
import { SCENARIOS } from "./scenarios/mod.ts";
import type { BenchConfig } from "./types.ts";

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      scenario: { type: "string" },
      case: { type: "string" },
      config: { type: "string" },
    },
  });
  const scenario = SCENARIOS.find((s) => s.id === values.scenario);
  if (scenario === undefined) {
    console.error(`Cannot run: unknown scenario ${values.scenario}`);
    Deno.exit(2);
  }
  const config: BenchConfig = JSON.parse(
    values.config ?? '{"rounds":5,"roundMs":1000,"quick":false}',
  );
  const rows = await scenario.run(config, values.case);
  console.log(`BENCH_ROWS ${JSON.stringify(rows)}`);
  // Leftover handles (a pool that failed to close) must not keep us alive.
  Deno.exit(0);
}

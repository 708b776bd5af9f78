/**
 * Every benchmark scenario, in the order `deno task bench` runs them.
 *
 * @module
 */
import type { Scenario } from "../types.ts";
import { sequential } from "./sequential.ts";
import { pipelined } from "./pipelined.ts";
import { scaling } from "./scaling.ts";
import { large } from "./large.ts";
import { evalOutput } from "./eval_output.ts";
import { gateway } from "./gateway.ts";
import { transport } from "./transport.ts";

/**
 * The scenarios, by id.
 *
 * @example
 * ```ts ignore
 * for (const s of SCENARIOS) console.log(s.id, s.title);
 * ```
 */
export const SCENARIOS: readonly Scenario[] = [
  sequential,
  pipelined,
  scaling,
  large,
  evalOutput,
  gateway,
  transport,
];

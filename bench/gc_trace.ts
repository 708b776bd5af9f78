/**
 * V8's young-generation collections of a child process, from the lines it
 * prints with `--v8-flags=--trace-gc-nvp` (one `GC: {...}` JSON object per
 * collection, on stdout): how much each scavenge kept and promoted, and its
 * pause. A build that makes V8 keep what requests allocated (README,
 * Performance: ~10% promoted per scavenge) shows here before it shows in
 * p99.
 *
 * @module
 */
import { summarize, type Summary } from "./stats.ts";

/** The V8 flag to give the child (Deno: `--v8-flags=` + this). */
export const GC_TRACE_FLAG = "--trace-gc-nvp";

/** One scavenge. */
export interface Scavenge {
  /** Pause, ms. */
  pause: number;
  /** Bytes allocated since the previous collection. */
  allocated: number;
  /** Bytes that survived (copied within the young generation or promoted). */
  survived: number;
  /** Bytes promoted to the old generation. */
  promoted: number;
}

/**
 * Parses one line of `--trace-gc-nvp` output: a scavenge, `"major"` for any
 * other collection, or `undefined` for any other line.
 *
 * @example
 * ```ts
 * import { parseGcLine } from "./gc_trace.ts";
 * const line = '[1:0x1:0] 5 ms: GC: {"pause":0.3,"gc":"s","allocated":3300000,"new_space_survived":40000,"promoted":0}';
 * console.log(parseGcLine(line)); // { pause: 0.3, allocated: 3300000, survived: 40000, promoted: 0 }
 * ```
 */
export function parseGcLine(line: string): Scavenge | "major" | undefined {
  const at = line.indexOf("GC: {");
  if (at < 0) return undefined;
  let r: Record<string, unknown>;
  try {
    r = JSON.parse(line.slice(at + 4));
  } catch {
    return undefined;
  }
  if (r.gc !== "s") return typeof r.gc === "string" ? "major" : undefined;
  const num = (k: string): number => (typeof r[k] === "number" ? r[k] : 0);
  return {
    pause: num("pause"),
    allocated: num("allocated"),
    survived: num("new_space_survived"),
    promoted: num("promoted"),
  };
}

/**
 * Collects a child's collections; `take()` returns what came since the last
 * call, so each benchmark round gets its own.
 *
 * @example
 * ```ts ignore
 * const trace = new GcTrace();
 * const child = await ReadyChild.start({ ..., onStdoutLine: trace.line });
 * // ... a round of load ...
 * const round = trace.take(); // { scavenges, majors, pauseMs, survivedMB, promotedMB }
 * ```
 */
export class GcTrace {
  #scavenges: Scavenge[] = [];
  #majors = 0;

  /** Feeds one stdout line (bound: pass it as a callback). */
  line = (line: string): void => {
    const gc = parseGcLine(line);
    if (gc === "major") this.#majors++;
    else if (gc !== undefined) this.#scavenges.push(gc);
  };

  /** The collections since the last `take()`: counts, and medians per scavenge. */
  take(): {
    scavenges: number;
    majors: number;
    pauseMs: Summary;
    survivedMB: Summary;
    promotedMB: Summary;
  } {
    const s = this.#scavenges;
    const out = {
      scavenges: s.length,
      majors: this.#majors,
      pauseMs: summarize(s.map((x) => x.pause)),
      survivedMB: summarize(s.map((x) => x.survived / 1e6)),
      promotedMB: summarize(s.map((x) => x.promoted / 1e6)),
    };
    this.#scavenges = [];
    this.#majors = 0;
    return out;
  }
}

/**
 * Bookkeeping for the fault-injection suite: a {@linkcode CallLedger} that
 * counts how often each call settled, and {@linkcode reportFault}, which
 * prints one row of the reliability table and, when the environment has
 * `PYPROXY_RELIABILITY_REPORT=1`, merges it into the table between the
 * `<!-- reliability:begin -->` / `<!-- reliability:end -->` markers of
 * docs/reliability.md (rows keyed by fault, in {@linkcode FAULT_ORDER}).
 *
 * @example
 * ```ts ignore
 * const ledger = new CallLedger();
 * const r = ledger.track(pool.execute("slow", { ms: 100 }));
 * await ledger.settle();
 * ledger.assertSettledOnce();
 * await reportFault({ fault: "kill -9 under load", injected: 1, ...ledger.counts() });
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";

/** One row of the reliability table. */
export interface FaultRow {
  /** What was injected. */
  fault: string;
  /** How many times. */
  injected: number;
  /** Calls made while it happened. */
  calls: number;
  /** Calls that settled (resolved or rejected) exactly once. */
  settled: number;
  /** Calls that settled with an error (the rest succeeded). */
  failed: number;
  /** Calls that never settled, or settled more than once (must be 0). */
  lost: number;
  /** How the fault showed in `pool.status()` / what else was checked. */
  observed: string;
}

/** The order of the rows in the table. */
export const FAULT_ORDER: string[] = [
  "kill -9 of a worker under load",
  "SIGSTOP of a worker under load",
  "model calls sys.exit()",
  "model calls os._exit(3)",
  "model segfaults (ctypes.string_at(0))",
  "connection cut mid-frame, server → host",
  "connection cut mid-frame, host → server",
  "connection cut with calls queued",
  "model floods stdout (print and os.write(1))",
  "1,000 idle connections",
  "connection that never authenticates",
  "host killed with SIGKILL under load",
];

const BEGIN = "<!-- reliability:begin -->";
const END = "<!-- reliability:end -->";
const DOC = new URL("../docs/reliability.md", import.meta.url);
const HEADER =
  "| Fault | Faults injected | Calls made | Calls settled | Of which failed | Calls lost | Observed |\n" +
  "| --- | ---: | ---: | ---: | ---: | ---: | --- |";

/** Counts settlements per call id. */
export class CallLedger {
  #settles = new Map<number, number>();
  #promises: Promise<unknown>[] = [];
  #failed = 0;
  #errors: unknown[] = [];

  /** Tracks `call`; returns it unchanged. */
  track<T>(call: Promise<T>): Promise<T> {
    const id = this.#settles.size + 1;
    this.#settles.set(id, 0);
    const bump = (): void => {
      this.#settles.set(id, this.#settles.get(id)! + 1);
    };
    this.#promises.push(call.then(bump, (err) => {
      bump();
      this.#failed++;
      this.#errors.push(err);
    }));
    return call;
  }

  /** The errors of the calls that failed so far. */
  get errors(): unknown[] {
    return this.#errors;
  }

  /** Waits until every tracked call settled, but at most `ms` (a hang shows as lost calls). */
  async settle(ms = 20_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(this.#promises),
      new Promise((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
    clearTimeout(timer);
  }

  /** Calls made, settled once, failed and lost. */
  counts(): Pick<FaultRow, "calls" | "settled" | "failed" | "lost"> {
    const values = [...this.#settles.values()];
    const settled = values.filter((n) => n === 1).length;
    return {
      calls: values.length,
      settled,
      failed: this.#failed,
      lost: values.length - settled,
    };
  }

  /** Asserts every tracked call settled exactly once. */
  assertSettledOnce(): void {
    const bad = [...this.#settles].filter(([, n]) => n !== 1);
    assert.deepEqual(
      bad,
      [],
      `calls not settled exactly once: ${JSON.stringify(bad.slice(0, 10))}`,
    );
  }
}

/**
 * Asserts that `ledger` lost no call, then reports its counts as one row
 * (see {@linkcode reportFault}).
 */
export async function reportLedger(
  ledger: CallLedger,
  row: Omit<FaultRow, "calls" | "settled" | "failed" | "lost">,
): Promise<void> {
  const counts = ledger.counts();
  assert.equal(counts.lost, 0);
  await reportFault({ ...row, ...counts });
}

function renderRow(r: FaultRow): string {
  return `| ${r.fault} | ${r.injected} | ${r.calls} | ${r.settled} | ${r.failed} | ${r.lost} | ${r.observed} |`;
}

/** Prints a row; with `PYPROXY_RELIABILITY_REPORT=1` also merges it into docs/reliability.md. */
export async function reportFault(row: FaultRow): Promise<void> {
  console.log(`reliability: ${renderRow(row)}`);
  if (Deno.env.get("PYPROXY_RELIABILITY_REPORT") !== "1") return;
  const doc = await Deno.readTextFile(DOC);
  const begin = doc.indexOf(BEGIN);
  const end = doc.indexOf(END);
  assert.ok(begin >= 0 && end > begin, "docs/reliability.md lacks the markers");
  const rows = new Map<string, string>();
  for (const line of doc.slice(begin + BEGIN.length, end).split("\n")) {
    // Rows as written here or as aligned by `deno fmt`.
    const cells = line.split("|").map((c) => c.trim());
    const fault = cells[1];
    if (fault !== undefined && /^\d+$/.test(cells[2] ?? "")) {
      rows.set(fault, line);
    }
  }
  rows.set(row.fault, renderRow(row));
  const rank = (f: string): number => {
    const i = FAULT_ORDER.indexOf(f);
    return i < 0 ? FAULT_ORDER.length : i;
  };
  const sorted = [...rows].sort(([a], [b]) => rank(a) - rank(b));
  const table = [HEADER, ...sorted.map(([, line]) => line)].join("\n");
  await Deno.writeTextFile(
    DOC,
    `${doc.slice(0, begin + BEGIN.length)}\n\n${table}\n\n${doc.slice(end)}`,
  );
  // Keep the doc as `deno fmt` wants it (aligned table).
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", DOC.pathname],
    stdout: "null",
    stderr: "null",
  }).output();
}

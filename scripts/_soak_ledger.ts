// The soak's account of client requests: each one must settle exactly once,
// with an outcome its kind allows, before a client-side deadline far above
// the server's own timeouts (past it, the request counts as a hang).

/** Settles a request: its outcome, e.g. "200", "end", "error:504". */
export type Op = (signal: AbortSignal) => Promise<string>;

interface Open {
  kind: string;
  at: number;
}

/** Counts outcomes per kind, hangs, double settlements and refused outcomes. */
export class Ledger {
  readonly hangMs: number;
  started = 0;
  settled = 0;
  doubles = 0;
  readonly hangs: string[] = [];
  readonly outcomes = new Map<string, Map<string, number>>();
  readonly refused = new Map<string, { count: number; example: string }>();
  #open = new Map<number, Open>();
  #next = 0;

  constructor(hangMs: number) {
    this.hangMs = hangMs;
  }

  /** Requests started and not settled yet. */
  get open(): number {
    return this.#open.size;
  }

  /** The longest a request has been open, in ms. */
  oldestMs(now = performance.now()): number {
    let oldest = 0;
    for (const o of this.#open.values()) oldest = Math.max(oldest, now - o.at);
    return oldest;
  }

  /** Runs `op`; `allowed` says which outcomes the delivery semantics permit. */
  async run(
    kind: string,
    allowed: (outcome: string) => boolean,
    op: Op,
  ): Promise<string> {
    const id = this.#next++;
    this.started++;
    this.#open.set(id, { kind, at: performance.now() });
    const hang = new AbortController();
    let hung = false;
    const timer = setTimeout(() => {
      hung = true;
      this.hangs.push(`${kind} open for ${this.hangMs} ms`);
      hang.abort(new Error("soak: client-side hang deadline"));
    }, this.hangMs);
    let outcome: string;
    try {
      outcome = await op(hang.signal);
    } catch (err) {
      const e = err as Error;
      outcome = `throw:${e?.name ?? typeof err}`;
      if (!allowed(outcome)) this.#refuse(kind, outcome, String(e?.message));
      outcome = hung ? "hang" : outcome;
      return this.#settle(id, kind, outcome, timer);
    }
    if (!allowed(outcome)) this.#refuse(kind, outcome, outcome);
    return this.#settle(id, kind, hung ? "hang" : outcome, timer);
  }

  #refuse(kind: string, outcome: string, example: string): void {
    const key = `${kind} → ${outcome}`;
    const seen = this.refused.get(key);
    if (seen) seen.count++;
    else this.refused.set(key, { count: 1, example: example.slice(0, 300) });
  }

  #settle(
    id: number,
    kind: string,
    outcome: string,
    timer: ReturnType<typeof setTimeout>,
  ): string {
    clearTimeout(timer);
    if (!this.#open.delete(id)) this.doubles++;
    else this.settled++;
    let byKind = this.outcomes.get(kind);
    if (byKind === undefined) this.outcomes.set(kind, byKind = new Map());
    byKind.set(outcome, (byKind.get(outcome) ?? 0) + 1);
    return outcome;
  }
}

/** An outcome check from a list of allowed outcomes (prefix match with "*"). */
export function allow(...outcomes: string[]): (outcome: string) => boolean {
  return (outcome) =>
    outcomes.some((o) =>
      o.endsWith("*") ? outcome.startsWith(o.slice(0, -1)) : outcome === o
    );
}

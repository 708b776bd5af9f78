/**
 * Internals of `Session` and `Pool`: what a worker was running when it died,
 * counted by model (its calls) or by command (evals, everything else), so
 * that a `WorkerCrashedError` names the crasher's call beside its victims.
 *
 * Nothing here runs per call: the session counts its pending table once,
 * when it closes with requests still in flight.
 *
 * The host's own requests (a heartbeat's `ping`, `configure`, a `cancel`,
 * a stream's `itemAck`, an eval session's `openSession`...) are left out: they run no code of anyone's, and
 * a heartbeat's `ping` in flight would read as a call the worker was
 * running (`ping (1)`).
 *
 * @module
 */

/** The commands whose `name` argument is the model they call. */
const MODEL_CALLS: ReadonlySet<string> = new Set([
  "executeModel",
  "executeBatch",
  "executeStream",
]);

/**
 * Commands the host sends for itself (protocol.md §4, §6, §9), answered on
 * the server's event loop without running a model or an eval: never
 * counted.
 */
const INTERNAL: ReadonlySet<string> = new Set([
  "auth",
  "ping",
  "serverStatus",
  "configure",
  "stopServer",
  "cancel",
  "itemAck",
  "outputAck",
  "openSession",
  "closeSession",
]);

/** Names kept at most (the rest are only counted). */
export const IN_FLIGHT_NAMES = 10;

/**
 * Calls in flight on a connection when it closed.
 *
 * @example What a dead worker was running
 * ```ts ignore
 * import type { InFlight } from "@pyproxy/pyproxy";
 * const running: InFlight | undefined = pool.status().workers[0]?.lastExit?.inFlight;
 * console.log(running?.byName, running?.calls); // { bad: 1, plain: 3 } 4
 * ```
 */
export interface InFlight {
  /** Calls by model name (or by command for other commands), at most {@linkcode IN_FLIGHT_NAMES} names, oldest call's name first. */
  readonly byName: Readonly<Record<string, number>>;
  /** Every call in flight, those under names left out of `byName` too. */
  readonly calls: number;
  /**
   * The request ids of the calls in flight that had one (`requestId`, a
   * batch's `requestIds`), oldest first, at most {@linkcode IN_FLIGHT_NAMES};
   * absent when none had one. The log line of a worker's death names them,
   * so that the id a client got in its `WorkerCrashedError` finds that line.
   */
  readonly requestIds?: readonly string[];
}

/** What a request is counted under: its model's name, else its command. */
export function inFlightName(
  cmd: string,
  args: Record<string, unknown> | undefined,
): string {
  const name = args?.name;
  return typeof name === "string" && MODEL_CALLS.has(cmd) ? name : cmd;
}

/** How many calls a request is: a batch's messages each count. */
function callsIn(cmd: string, args: Record<string, unknown> | undefined) {
  const msgs = args?.msgs;
  return cmd === "executeBatch" && Array.isArray(msgs) && msgs.length > 0
    ? msgs.length
    : 1;
}

/**
 * Counts `requests` (oldest first) by name, the host's own commands left
 * out; `undefined` when there are none.
 */
export function countInFlight(
  requests: readonly {
    readonly cmd: string;
    readonly args: Record<string, unknown> | undefined;
  }[],
): InFlight | undefined {
  const byName = new Map<string, number>();
  const requestIds: string[] = [];
  let calls = 0;
  for (const { cmd, args } of requests) {
    if (INTERNAL.has(cmd)) continue;
    const n = callsIn(cmd, args);
    calls += n;
    idsOf(args, requestIds);
    const name = inFlightName(cmd, args);
    const had = byName.get(name);
    if (had !== undefined) byName.set(name, had + n);
    else if (byName.size < IN_FLIGHT_NAMES) byName.set(name, n);
  }
  if (calls === 0) return undefined;
  return Object.freeze({
    byName: Object.freeze(Object.fromEntries(byName)),
    calls,
    ...(requestIds.length === 0
      ? {}
      : { requestIds: Object.freeze(requestIds) }),
  });
}

/** Adds the request ids of a request's `args` to `into`, up to the bound. */
function idsOf(
  args: Record<string, unknown> | undefined,
  into: string[],
): void {
  const one = args?.requestId;
  const many = args?.requestIds;
  const ids = typeof one === "string" ? [one] : Array.isArray(many) ? many : [];
  for (const id of ids) {
    if (into.length >= IN_FLIGHT_NAMES) return;
    if (typeof id === "string" && !into.includes(id)) into.push(id);
  }
}

/**
 * In words, for messages and logs: `"bad (1 call), plain (3)"`, with
 * `", and 5 more calls"` for those under names left out; `shown` words a
 * name (the gateway's `bad version 2` for `bad@2`).
 */
export function describeInFlight(
  inFlight: InFlight,
  shown: (name: string) => string = (name) => name,
): string {
  const parts: string[] = [];
  let named = 0;
  for (const [name, n] of Object.entries(inFlight.byName)) {
    named += n;
    parts.push(
      parts.length === 0
        ? `${shown(name)} (${n} call${n === 1 ? "" : "s"})`
        : `${shown(name)} (${n})`,
    );
  }
  const rest = inFlight.calls - named;
  if (rest > 0) parts.push(`and ${rest} more call${rest === 1 ? "" : "s"}`);
  return parts.join(", ");
}

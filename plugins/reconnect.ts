/**
 * The reconnect policy: notices dead or wedged workers and restarts them
 * with capped, jittered exponential backoff; gives up on a slot that crashes
 * too often. Built only on the public plugin API, so it can be replaced by a
 * policy of your own (a plugin named `"reconnect"`).
 *
 * @module
 */
import { checkOptionKeys } from "./_plugin_options.ts";
import { ConfigError } from "../src/errors.ts";
import type { Plugin, PluginContext } from "../src/plugin.ts";
import { onePool } from "./_one_pool.ts";
import { CrashHistory } from "./_crash_history.ts";
import { setIntervalOrNever, setTimeoutOrNever } from "../src/_timer.ts";

/**
 * Backoff of {@linkcode ReconnectOptions}.
 *
 * @example
 * ```ts
 * import { reconnect } from "@pyproxy/pyproxy";
 * const policy = reconnect({ backoff: { initial: 50, max: 2000, factor: 2, jitter: 0.1 } });
 * console.log(policy.name); // "reconnect"
 * ```
 */
export interface ReconnectBackoff {
  /** First delay in ms. @default {100} */
  initial?: number;
  /** Largest delay in ms. @default {5000} */
  max?: number;
  /** Growth per consecutive crash. @default {2} */
  factor?: number;
  /** Random spread, as a fraction of the delay (0.2 = ±20 %). @default {0.2} */
  jitter?: number;
}

/**
 * Options of {@linkcode reconnect}.
 *
 * @example
 * ```ts
 * import { reconnect } from "@pyproxy/pyproxy";
 * const policy = reconnect({ heartbeatInterval: 500, heartbeatTimeout: 2000, maxCrashes: 3, crashWindow: 30_000 });
 * console.log(policy.name); // "reconnect"
 * ```
 */
export interface ReconnectOptions {
  /**
   * How often ready workers are pinged, in ms (0 disables heartbeats, and
   * so does anything beyond 2^31 − 1, ~24.8 days, a timer's range).
   * @default {1000}
   */
  heartbeatInterval?: number;
  /**
   * A worker that does not answer a heartbeat within this many ms, and sent
   * or received no bytes meanwhile, is killed and replaced. The server
   * answers pings on its event loop while model code runs in threads, but
   * one C call that holds the GIL (`sum(range(10**9))`, a huge `json.loads`,
   * a regex) stops every Python thread, the loop too, for as long as it
   * runs: this must be longer than the longest such call. It only bounds
   * how long a truly wedged worker (deadlocked, stopped) goes unnoticed;
   * calls with a timeout also get `hangGrace`. A finite number (`Infinity` is
   * refused, as for every option here); one beyond 2^31 − 1 (~24.8 days, a
   * timer's range) is never cut short.
   * @default {30000}
   */
  heartbeatTimeout?: number;
  /** Restart delays (a delay beyond 2^31 − 1 ms, ~24.8 days, never restarts the slot). */
  backoff?: ReconnectBackoff;
  /**
   * A slot that crashes more than this many times within `crashWindow` is
   * marked `failed`. The counts are cleared when a model goes out of service
   * (a `model-failed` event: the crash quarantine, a placed model's
   * relocations): the crashes it caused were its own. @default {5}
   */
  maxCrashes?: number;
  /** The window for `maxCrashes`, in ms. @default {60000} */
  crashWindow?: number;
  /**
   * A slot marked `failed` is started again after this many ms, with its
   * crash count cleared (a burst of crashing inputs would otherwise leave the
   * pool without that worker until it is restarted; with every slot failed,
   * the gateway answers 503 for good). `0` keeps failed slots failed.
   * @default {60000}
   */
  failedRetryAfter?: number;
  /**
   * After a call times out, the worker must answer a ping within this many
   * ms or it is killed (a call stuck in C cannot be interrupted otherwise;
   * it also holds the GIL, so the ping goes unanswered).
   * @default {2000}
   */
  hangGrace?: number;
}

// How long a silent worker's event loop is watched for an idle moment before it is killed.
const IO_WAIT_WINDOW_MS = 250;

/**
 * Creates the reconnect policy plugin (on by default in `Pool.start`).
 *
 * A worker counts as dead when its process exits, when its connection is
 * lost (the pool kills it then), when it misses a heartbeat, or when it does
 * not answer a ping within `hangGrace` after one of its calls timed out. A
 * call holding the GIL blocks pings too (see `heartbeatTimeout`). A silent
 * worker is kept when bytes moved on its connection meanwhile, or (on
 * Linux) when its event loop is seen waiting for I/O within 250 ms: then
 * the reply is late on the host's side, not the worker's.
 * Dead slots restart after `min(max, initial * factor^(n-1)) ± jitter`
 * where n is the number of crashes in the window.
 *
 * @example Faster restarts, fewer chances
 * ```ts ignore
 * import { Pool } from "@pyproxy/pyproxy";
 * import { reconnect } from "@pyproxy/pyproxy";
 * const pool = await Pool.start({
 *   plugins: [reconnect({ backoff: { initial: 10, max: 200 }, maxCrashes: 2 })],
 * });
 * await pool.close();
 * ```
 */
export function reconnect(options: ReconnectOptions = {}): Plugin {
  return reconnectWithHistory(options, undefined);
}

/**
 * {@linkcode reconnect} keeping its crash history in `history` when given,
 * so that a test can watch it stay bounded. Not exported by the package
 * (plugins/mod.ts names what it exports from this file).
 *
 * @example
 * ```ts
 * import { reconnectWithHistory } from "./reconnect.ts";
 * import { CrashHistory } from "./_crash_history.ts";
 * const history = new CrashHistory(60_000);
 * const policy = reconnectWithHistory({}, history);
 * console.log(policy.name, history.size); // "reconnect" 0
 * ```
 */
export function reconnectWithHistory(
  options: ReconnectOptions,
  history: CrashHistory | undefined,
  settingName: (option: string) => string = librarySetting,
): Plugin {
  checkOptionKeys("reconnect", options, [
    "heartbeatInterval",
    "heartbeatTimeout",
    "backoff",
    "maxCrashes",
    "crashWindow",
    "hangGrace",
    "failedRetryAfter",
  ]);
  if (options.backoff !== undefined) {
    checkOptionKeys("reconnect", options.backoff, [
      "initial",
      "max",
      "factor",
      "jitter",
    ], "backoff");
  }
  const heartbeatInterval = option(
    options.heartbeatInterval,
    1000,
    "heartbeatInterval",
  );
  const heartbeatTimeout = option(
    options.heartbeatTimeout,
    30_000,
    "heartbeatTimeout",
    1,
  );
  const initial = option(options.backoff?.initial, 100, "backoff.initial");
  const max = option(options.backoff?.max, 5000, "backoff.max");
  const factor = option(options.backoff?.factor, 2, "backoff.factor", 1);
  const jitter = option(options.backoff?.jitter, 0.2, "backoff.jitter");
  const maxCrashes = option(options.maxCrashes, 5, "maxCrashes");
  const crashWindow = option(options.crashWindow, 60000, "crashWindow", 1);
  const hangGrace = option(options.hangGrace, 2000, "hangGrace", 1);
  const failedRetryAfter = option(
    options.failedRetryAfter,
    60_000,
    "failedRetryAfter",
  );
  if (jitter > 1) {
    throw new ConfigError(
      "Cannot create reconnect plugin: backoff.jitter: expected a number in [0, 1]",
    );
  }

  // Says what it means and how to change it: the usual cause is a long C call holding the GIL.
  const heartbeatReason =
    `missed heartbeat: no answer to a ping within ${heartbeatTimeout} ms (a call holding the GIL, such as one long C call, blocks the server's loop; ${
      settingName("heartbeatTimeout")
    } raises the limit)`;
  // Per slot id; a slot removed by a resize (or autoscale) is forgotten.
  const crashes = history ?? new CrashHistory(crashWindow);
  let offEvents: (() => void) | undefined;
  // Failed slots waiting for their cool-down to end.
  const retries = new Set<ReturnType<typeof setTimeout>>();
  // Workers being probed → when that probe gives up waiting for its ping. A
  // heartbeat's probe (30 s) must not hold back a timed-out call's (2 s).
  const probing = new Map<string, number[]>();
  let timer: ReturnType<typeof setInterval> | undefined;
  // A second pool would overwrite (and so leak) the first one's heartbeat timer.
  const owner = onePool("reconnect");

  /** Pings a worker; kills it if the same process stays silent (no answer and no bytes). */
  const probe = async (
    ctx: PluginContext,
    id: string,
    pid: number | null,
    timeoutMs: number,
    reason: string,
  ) => {
    if (pid === null) return;
    const start = Date.now();
    const deadline = start + timeoutMs;
    // One already out that decides as soon: nothing to add.
    const out = probing.get(id) ?? [];
    if (out.some((d) => d <= deadline)) return;
    out.push(deadline);
    probing.set(id, out);
    try {
      if (await ctx.ping(id, timeoutMs)) return;
      // The ping may sit behind a large message in either direction: bytes
      // moving during the wait prove the worker alive.
      const busy = (): boolean => {
        const last = ctx.lastActivity(id);
        if (last === undefined || last < start) return false;
        ctx.logger.debug(
          "worker {id} answered no ping within {timeoutMs} ms but is busy with I/O",
          { id, timeoutMs },
        );
        return true;
      };
      if (busy()) return;
      // An event loop waiting for its next message is not wedged: the reply
      // is late on this side. Under heavy load (large messages in bursts)
      // the host read a ready socket 0.3–2 s late while its timers fired.
      if (await ctx.waitsForIO(id, IO_WAIT_WINDOW_MS)) {
        ctx.logger.info(
          "worker {id} answered no ping within {timeoutMs} ms but its event loop waits for I/O: the host reads its replies late (host overloaded?)",
          { id, timeoutMs },
        );
        return;
      }
      // Bytes that came while its loop was watched count too.
      if (busy()) return;
      const now = ctx.workers().find((w) => w.id === id);
      if (
        ctx.closing || now === undefined || now.pid !== pid ||
        now.state !== "ready"
      ) return;
      ctx.logger.warn("worker {id} (pid {pid}) is unresponsive: {reason}", {
        id,
        pid,
        reason,
      });
      ctx.killWorker(id, "SIGKILL", reason, { hung: true });
    } finally {
      out.splice(out.indexOf(deadline), 1);
      if (out.length === 0 && probing.get(id) === out) probing.delete(id);
    }
  };

  /** Starts a failed slot again after its cool-down (its process must have exited). */
  const retryLater = (ctx: PluginContext, id: string, delayMs: number) => {
    const t = setTimeoutOrNever(() => {
      retries.delete(t!);
      if (ctx.closing) return;
      const w = ctx.workers().find((x) => x.id === id);
      if (w?.state !== "failed") return; // revived or failed by someone else's policy
      crashes.forget(id);
      if (
        !ctx.reviveWorker(id, {
          reason: `cool-down of ${failedRetryAfter} ms after it failed`,
        })
      ) retryLater(ctx, id, 100); // its process is still exiting
    }, delayMs);
    if (t !== undefined) retries.add(t);
  };

  const delayFor = (n: number): number => {
    const base = Math.min(max, initial * factor ** Math.max(0, n - 1));
    return Math.max(
      0,
      Math.round(base * (1 + jitter * (2 * Math.random() - 1))),
    );
  };

  const plugin: Plugin = {
    name: "reconnect",
    onPoolStart(ctx) {
      owner.claim(ctx.pool);
      offEvents = ctx.pool.on((ev) => {
        if (ev.type === "worker-removed") crashes.forget(ev.worker);
        // A model out of service for killing workers (the crash quarantine,
        // a placed model's relocations): the crashes it caused are its own,
        // not the slots'. Counted on, a model updated again with the same
        // fault (each time quarantined again within a few crashes) failed
        // every slot within a minute: the crash loop the quarantine stops.
        else if (ev.type === "model-failed") crashes.clear();
      });
      if (heartbeatInterval <= 0) return;
      // Beyond a timer's range (~24.8 days), never (an interval would fire every ms).
      timer = setIntervalOrNever(() => {
        for (const w of ctx.workers()) {
          if (w.state === "ready") {
            probe(ctx, w.id, w.pid, heartbeatTimeout, heartbeatReason);
          }
        }
      }, heartbeatInterval);
    },
    onPoolClose(ctx) {
      if (!owner.owns(ctx.pool)) return;
      owner.release(ctx.pool);
      offEvents?.();
      offEvents = undefined;
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      crashes.clear();
      for (const t of retries) clearTimeout(t);
      retries.clear();
    },
    onTimeout(ev, ctx) {
      probe(
        ctx,
        ev.worker.id,
        ev.worker.pid,
        hangGrace,
        `no answer to a ping within ${hangGrace} ms after a call timed out (a call stuck in C code holding the GIL, or a call of a fast model running on the server's event loop that turned slow: see docs/models.md, "threaded"; ${
          settingName("hangGrace")
        } sets the limit)`,
      );
    },
    onWorkerExit(ev, ctx) {
      if (ev.intentional || ctx.closing || ev.worker.state === "failed") return;
      const id = ev.worker.id;
      const now = Date.now();
      const count = crashes.record(id, now);
      // A slot whose crash came in after its removal (its exit hooks still
      // running then) is forgotten here, at the next crash.
      crashes.prune(new Set(ctx.workers().map((w) => w.id)), now);
      if (count > maxCrashes) {
        ctx.failWorker(
          id,
          `crashed ${count} times within ${crashWindow} ms; last: ${ev.reason}${
            failedRetryAfter > 0
              ? ` (retried in ${failedRetryAfter} ms: ${
                settingName("failedRetryAfter")
              })`
              : ""
          }`,
        );
        if (failedRetryAfter > 0) retryLater(ctx, id, failedRetryAfter);
        return;
      }
      ctx.restartWorker(id, {
        delayMs: delayFor(count),
        reason: ev.reason,
      });
    },
  };
  return plugin;
}

/** How the library names an option in the reasons it gives. */
function librarySetting(option: string): string {
  return `reconnect({ ${option} })`;
}

/**
 * {@linkcode reconnect} naming its options in the reasons it gives (a
 * worker's `failedReason`, a `lastExit.reason`) as `settingName` says: the
 * gateway's `plugins.reconnect.failedRetryAfter` (pyproxy.json) where a
 * library user reads `reconnect({ failedRetryAfter })`. Not exported by the
 * package (plugins/mod.ts names what it exports from this file).
 *
 * @example
 * ```ts
 * import { reconnectNamed } from "./reconnect.ts";
 * const policy = reconnectNamed({}, (option) => `plugins.reconnect.${option}`);
 * console.log(policy.name); // "reconnect"
 * ```
 */
export function reconnectNamed(
  options: ReconnectOptions,
  settingName: (option: string) => string,
): Plugin {
  return reconnectWithHistory(options, undefined, settingName);
}

function option(
  value: number | undefined,
  fallback: number,
  field: string,
  min = 0,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    throw new ConfigError(
      `Cannot create reconnect plugin: ${field}: expected a number >= ${min}`,
    );
  }
  return value;
}

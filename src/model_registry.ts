/**
 * The pool's record of its models: what was added, updated and initialised,
 * in order, so a restarted worker gets the same models before it takes
 * traffic. A model's commands run one at a time, other models' beside them
 * (`forModel`); worker replays run alone (`exclusive`), so a worker is never
 * made ready in the middle of a model change.
 *
 * @module
 */
import {
  CancelledError,
  ConnectionLostError,
  errorFromWire,
  PythonError,
  RemoteError,
  TimeoutError,
  WorkerCrashedError,
} from "./errors.ts";
import { withinRunningTime } from "./_with_timeout.ts";
import type { ModelSpec, Session } from "./session.ts";
import type { Worker, WorkerExit } from "./worker.ts";
import {
  chooseSlots,
  loadable,
  type LoadCrash,
  type ModelPlacement,
  outOfService,
} from "./_model_placement.ts";
import { setTimeoutOrNever } from "./_timer.ts";
import { OUT_OF_MEMORY } from "./_oom_kills.ts";

/**
 * A model as the pool knows it (`pool.status().models`).
 *
 * @example
 * ```ts
 * import type { ModelInfo } from "@pyproxy/pyproxy";
 * function describe(model: ModelInfo): string {
 *   return `${model.name} (${model.inits.length} inits)`;
 * }
 * console.log(typeof describe); // "function"
 * ```
 */
export interface ModelInfo {
  /** Model name. */
  name: string;
  /**
   * Its version label, for a version of a model with versions
   * (`ModelSpec.version`, docs/models.md "Versions": each version is listed
   * on its own, all with the model's `name`); absent otherwise
   * (`pool.status()` only).
   */
  version?: string;
  /** With `version`: whether it is the model's default version. */
  default?: boolean;
  /** The spec it was added (or last updated) with. */
  spec: ModelSpec;
  /** `dataFile`s passed to `initModel` since the last add/update, in order. */
  inits: string[];
  /**
   * The slots that hold it, when its spec has `workers` (docs/models.md,
   * "Placement"); absent: every worker does, unless `failedReason` is set
   * (a model out of service is on none, with `slots` or without).
   */
  slots?: string[];
  /**
   * Why the model was taken out of service: a placed model crashed the
   * workers it was moved to (`PoolOptions.placement`; `slots` is empty),
   * or any model killed its worker twice soon after its load
   * (`PoolOptions.loadCrashWindow`). It is on no worker and its calls fail
   * with `ModelUnavailableError` until it is updated. Absent: in service.
   */
  failedReason?: string;
  /**
   * Set while the model is suspected of killing its worker soon after its
   * load (`PoolOptions.loadCrashWindow`), before it is out of service or
   * cleared: the deaths laid on it so far, and whether restarted workers
   * load it alone and hold back from calls until they outlived it
   * (`heldWorker`, `heldUntil`: such a hold under way). It still serves on
   * the workers that hold it. Absent: not suspected (or out of service:
   * `failedReason`).
   */
  suspected?: ModelSuspicion;
  /**
   * The default timeout of its calls in ms, when it has one of its own
   * (`spec.timeout`, else its class's `timeout_ms`; `Infinity`: none);
   * absent, its calls get the pool's `requestTimeout` (`pool.status()`
   * only).
   */
  timeout?: number;
  /**
   * Its `close_timeout_ms`, when it has a `close()` (the description's
   * `closeTimeoutMs`, protocol §6): a remove or update waits up to twice
   * this for its calls in flight and then its `close()` (`pool.status()`
   * only).
   */
  closeTimeoutMs?: number;
  /**
   * Why its calls run on call threads, never inline on a worker's event
   * loop: one of its inline calls held that loop past its timeout, or while
   * the worker was killed for answering nothing (a hung call of a model
   * that proved fast, docs/reliability.md). Set by the
   * pool (event `model-threaded`) until the model is updated (or added
   * again); absent otherwise (`pool.status()` only).
   */
  threaded?: string;
}

/**
 * A model suspected of killing its worker soon after its load
 * (`ModelInfo.suspected`, `PoolOptions.loadCrashWindow`).
 *
 * @example
 * ```ts
 * import type { ModelSuspicion } from "@pyproxy/pyproxy";
 * function note(s: ModelSuspicion): string {
 *   return `${s.strikes} of 2 strikes${s.heldWorker ? `, held on ${s.heldWorker}` : ""}`;
 * }
 * console.log(note({ reason: "", deaths: 1, strikes: 1, held: true, since: 0 })); // "1 of 2 strikes"
 * ```
 */
export interface ModelSuspicion {
  /** The deaths laid on it so far, worded as `failedReason` would be. */
  reason: string;
  /** How many worker deaths were laid on it (strikes included). */
  deaths: number;
  /** Its strikes (deaths with nothing else running there): 2 take it out of service. */
  strikes: number;
  /**
   * Whether the next restarted worker loads it alone, first, and holds
   * back from calls until it outlived it (`false` once it outlived a
   * short hold: a death laid on it again sets it).
   */
  held: boolean;
  /** When the last death was laid on it (ms since the epoch). */
  since: number;
  /** The worker held on its replay now, if one is. */
  heldWorker?: string;
  /** When that hold ends (ms since the epoch), if one is under way. */
  heldUntil?: number;
}

/**
 * Options of one model command (`pool.addModel(name, spec, options)`...).
 *
 * @example
 * ```ts
 * import type { ModelCallOptions } from "@pyproxy/pyproxy";
 * const options: ModelCallOptions = { timeout: 60_000, signal: AbortSignal.timeout(120_000) };
 * console.log(options.timeout); // 60000
 * ```
 */
export interface ModelCallOptions {
  /**
   * Timeout in ms of the command on each worker (a model whose `__init__`
   * takes longer fails with `TimeoutError` and is rolled back), and of the
   * wait for a ready worker. `Infinity`: none. Not the timeout of the
   * model's calls: that is the spec's `timeout`.
   * @default {the pool's loadTimeout (120 s)}
   */
  timeout?: number;
  /** Aborts the command (`CancelledError`), like a call's `signal`. */
  signal?: AbortSignal;
  /**
   * The version a `removeModel` or `initModel` acts on, for a model with
   * versions (docs/models.md, "Versions"); `addModel` and `updateModel`
   * take it in the spec. A `removeModel` without it removes every version.
   */
  version?: string;
}

/**
 * Steps of a model command run under the registry's lock: `check` before
 * anything is sent (a throw refuses the command), `done` once it succeeded.
 * The pool keeps its versions (docs/models.md, "Versions") in step with the
 * registry so.
 */
export interface ModelCommandHooks {
  check?: () => void;
  done?: () => void;
}

/** Options of {@linkcode ModelRegistry}. */
/**
 * Options of {@linkcode ModelRegistry.replay}.
 *
 * @example
 * ```ts
 * import type { ReplayOptions } from "./model_registry.ts";
 * const options: ReplayOptions = { restart: true };
 * console.log(options.restart); // true
 * ```
 */
export interface ReplayOptions {
  /**
   * The worker is a restart of a slot that ran before (not a new one of a
   * resize or an autoscale): a model whose load its server refuses (its
   * own error) is taken out of service and the worker comes up with the
   * others. On a new worker such a refusal fails its start instead, the
   * model still served where it is loaded. @default {false}
   */
  restart?: boolean;
}

export interface ModelRegistryOptions {
  /** Timeout of each model command on each worker, in ms (none when absent). */
  timeout?: number;
  /**
   * Told of each resync: a worker brought back in line with the registry
   * after a model command given up on there was answered late (`ok: false`:
   * that failed and the worker was killed).
   */
  onResync?: (
    ev: { worker: string; name: string; ok: boolean; reason?: string },
  ) => void;
  /**
   * Told when a placed model stops being placed (removed, or updated to
   * every worker): calls waiting for its slots may go anywhere.
   */
  onUnplace?: (placement: ModelPlacement) => void;
  /**
   * Told when a placed model could not be loaded on the slot it was moved
   * to (a resize removing its slot): that worker was killed, and its
   * restart loads the model.
   */
  onMoveFailed?: (ev: { worker: string; name: string; reason: string }) => void;
  /**
   * Told when a slot a placed model left (an update with another `workers`)
   * did not unload it cleanly: its `close()` raised or overran, or the
   * unload failed (it is tried once more; `killed`: that failed too and the
   * worker was killed, its restart loading only its own models).
   */
  onUnloadFailed?: (
    ev: { worker: string; name: string; reason: string; killed: boolean },
  ) => void;
  /**
   * Moves of a placed model off slots that failed for good with it
   * implicated, within `relocationWindow` ms, before the next such failure
   * takes the model out of service (`PoolOptions.placement`).
   * @default {Infinity}
   */
  maxRelocations?: number;
  /** The window of `maxRelocations`, in ms. @default {600000} */
  relocationWindow?: number;
  /**
   * How a failed model's reason names `maxRelocations` (the pool's
   * `placement.settingName`).
   * @default {(option) => `placement.${option}`}
   */
  settingName?: (option: "maxRelocations" | "relocationWindow") => string;
  /**
   * Told when a placed model is moved off a slot that failed for good
   * (`counted`: with the model implicated, towards `maxRelocations`), and
   * to which slot (none: no ready worker lacked it, or the model counts
   * the move and the slot would have been one of the pool's last workers;
   * it waits for one).
   */
  onRelocated?: (
    ev: { name: string; from: string; to: string | null; counted: boolean },
  ) => void;
  /**
   * Told when a placed model is taken out of service: it crashed one slot
   * too many (`PoolOptions.placement`); `reason` says which.
   */
  /**
   * How a load's error reads in the `failedReason` of a model whose load
   * failed on a restarted worker (the pool makes its models directory's
   * paths relative to it). @default {the error's message as it is}
   */
  loadErrorText?: (message: string) => string;
  onModelFailed?: (
    ev: {
      name: string;
      worker: string;
      reason: string;
      /** A load's failure: its Python exception type, when it had one. */
      exception?: string;
      /** A load's failure: its traceback, when the server sent one. */
      traceback?: string;
    },
  ) => void;
  /**
   * A worker death within this many ms after a model's load completed on
   * it (an add, an update, a restart's replay), not by SIGKILL, with no
   * call or other load running there and no other model loaded within the
   * window, counts a strike against that model (else a suspicion); its
   * second strike takes it out of service (`PoolOptions.loadCrashWindow`).
   * 0: off.
   * @default {0}
   */
  loadCrashWindow?: number;
  /**
   * Told of each worker death that a model's recent load is suspected of
   * (`counted`: a strike; else only a suspicion, and its next replay loads
   * it alone and holds the worker).
   */
  onLoadCrash?: (ev: LoadCrashEvent) => void;
}

/** What {@linkcode ModelRegistryOptions.onLoadCrash} is told. */
export interface LoadCrashEvent {
  /** The model (a version's internal name `name@label`). */
  name: string;
  /** The slot whose process died. */
  worker: string;
  /** How long after the model's load completed there, in ms. */
  afterMs: number;
  /** How the process ended (`exited with code 7`, `killed by SIGSEGV`). */
  reason: string;
  /**
   * Whether it counted as a strike: nothing else running there, no other
   * model loaded within the window.
   */
  counted: boolean;
  /** The model's strikes now. */
  strikes: number;
  /**
   * Set when it would have been a strike but the same add or update's load
   * on this worker (its id) was a strike already: one load's deaths count
   * once.
   */
  struckOn?: string;
}

/**
 * Applies model commands to a set of workers and remembers them for replay.
 * An `addModel`/`updateModel` that fails on some worker is rolled back on
 * the workers where it succeeded; the error names the failing workers (and
 * says whether anything was rolled back).
 *
 * @example
 * ```ts ignore
 * const registry = new ModelRegistry();
 * await registry.add("doubler", { file: "doubler.py" }, readyWorkers);
 * await registry.exclusive(() => registry.replay(session, worker, () => readyWorkers));
 * ```
 */
export class ModelRegistry {
  #models = new Map<string, ModelInfo>();
  /**
   * The code each model was loaded with (the server's `snapshot`: a file
   * model's source, and the helper modules any model imported): replays and
   * rollbacks load it, not what the files hold by then, so a restarted
   * worker runs the same code as the others.
   */
  #snapshots = new Map<string, Snapshot>();
  /** The last `exclusive` run queued (settled: the next may start). */
  #lock: Promise<unknown> = Promise.resolve();
  /** The last command queued per model (`forModel`), by its lock key. */
  #byModel = new Map<string, Promise<void>>();
  /** The model commands queued or running: an `exclusive` run waits for them. */
  #commands = new Set<Promise<void>>();
  #timeout: number | undefined;
  #onResync: NonNullable<ModelRegistryOptions["onResync"]>;
  #onUnplace: NonNullable<ModelRegistryOptions["onUnplace"]>;
  #onMoveFailed: NonNullable<ModelRegistryOptions["onMoveFailed"]>;
  #onUnloadFailed: NonNullable<ModelRegistryOptions["onUnloadFailed"]>;
  /** The slots of the models whose spec has `workers`, by name. */
  #placements = new Map<string, ModelPlacement>();
  #maxRelocations: number;
  #relocationWindow: number;
  #settingName: NonNullable<ModelRegistryOptions["settingName"]>;
  #onRelocated: NonNullable<ModelRegistryOptions["onRelocated"]>;
  #onModelFailed: NonNullable<ModelRegistryOptions["onModelFailed"]>;
  #loadErrorText: NonNullable<ModelRegistryOptions["loadErrorText"]>;
  /**
   * Per slot, the placed models implicated in the death of one of its
   * processes (`generation`): calls of theirs in flight there (timed-out
   * ones too, when the server was still on them), or their load under way.
   * Only the last process's count when the slot fails for good.
   */
  #implicated = new WeakMap<Worker, { gen: number; names: Set<string> }>();
  /**
   * Per slot, the models whose load (add, update) its process `gen` was
   * sent and had not answered (a timed-out one the server may still run):
   * a worker that died under loads of several models (they run side by
   * side) does not tell which one killed it, so each load's error names
   * the others.
   */
  #loading = new WeakMap<Worker, { gen: number; names: Set<string> }>();
  /**
   * The slots of placed models being added (or placed by an update) now,
   * by name: they count towards a worker's load before the command ends,
   * so placed models added at once (different names run side by side)
   * spread over the workers instead of all choosing the same least-loaded
   * one.
   */
  #choosing = new Map<string, Worker[]>();
  /** `loadCrashWindow` (0: off). */
  #loadCrashWindow: number;
  #onLoadCrash: NonNullable<ModelRegistryOptions["onLoadCrash"]>;
  /**
   * Per slot, the loads its process `gen` completed within the last
   * `loadCrashWindow` ms (the older ones are dropped as new ones come): a
   * death soon after them is laid at the door of the last of them (and of
   * those that overlapped it).
   */
  #steps = new WeakMap<Worker, { gen: number; steps: LoadStep[] }>();
  /**
   * The models suspected of killing a worker soon after their load, with
   * their strikes (deaths with no call running); a replay loads each alone
   * and holds the worker until it outlived the window. One entry per model
   * at most, dropped when the model is updated or removed, when it outlives
   * such a hold, or after `SUSPECT_MS`.
   */
  #suspects = new Map<string, Suspect>();
  /**
   * Per slot, the models a death of its process `gen` was laid on
   * (`exited`): a load that died there too is not that load's doing, and
   * is tried once more (`details.notThisLoad` of its error).
   */
  #blamed = new WeakMap<Worker, { gen: number; names: Set<string> }>();

  /** Creates an empty registry. */
  constructor(options: ModelRegistryOptions = {}) {
    this.#timeout = options.timeout;
    this.#onResync = options.onResync ?? (() => {});
    this.#onUnplace = options.onUnplace ?? (() => {});
    this.#onMoveFailed = options.onMoveFailed ?? (() => {});
    this.#onUnloadFailed = options.onUnloadFailed ?? (() => {});
    this.#maxRelocations = options.maxRelocations ?? Infinity;
    this.#relocationWindow = options.relocationWindow ?? 600_000;
    this.#settingName = options.settingName ??
      ((option) => `placement.${option}`);
    this.#onRelocated = options.onRelocated ?? (() => {});
    this.#onModelFailed = options.onModelFailed ?? (() => {});
    this.#loadErrorText = options.loadErrorText ?? ((message) => message);
    this.#loadCrashWindow = options.loadCrashWindow ?? 0;
    this.#onLoadCrash = options.onLoadCrash ?? (() => {});
  }

  /**
   * Notes that process `gen` of `worker` completed a load of `names` (sent
   * at `sentAt`): the step a death soon after is laid on. Returns the step
   * (a held replay takes its model off once it outlived its hold).
   */
  #loaded(
    worker: Worker,
    gen: number,
    names: Iterable<string>,
    sentAt: number,
    command?: object,
  ): LoadStep | undefined {
    const window = this.#loadCrashWindow;
    if (window <= 0) return undefined;
    let seen = this.#steps.get(worker);
    if (seen === undefined || seen.gen < gen) {
      seen = { gen, steps: [] };
      this.#steps.set(worker, seen);
    }
    if (seen.gen !== gen) return undefined;
    const now = Date.now();
    // Bounded: only the loads a death could still be laid on.
    seen.steps = seen.steps.filter((s) => now - s.doneAt <= window);
    const step: LoadStep = {
      names: new Set(names),
      sentAt,
      doneAt: now,
      ...(command === undefined ? {} : { command }),
    };
    seen.steps.push(step);
    return step;
  }

  /**
   * How long a replay holds a worker after loading suspected model `name`
   * alone: twice as long as the death it is suspected of came after its
   * load (at least `MIN_HOLD_MS`), at most the window. A model whose timer
   * goes off after about as long each time dies within it; one that
   * survives is cleared, so loads that happened to precede a death (many
   * models loaded at start, one after the other) cost a short hold each.
   */
  #holdFor(name: string): number {
    const s = this.#suspects.get(name);
    // Once it outlived a hold and that process then died within the
    // window, laid on it again, or once it has a strike: the whole window, so that a model whose delay
    // varies cannot outlive its hold again and die after it, a pair of
    // deaths at a time, until the restart policy failed the slot. (Not
    // for a second death alone: the deaths of several workers at once
    // are laid on every model loaded there within the window, and a
    // whole window's hold for each, one after the other, outlasted the
    // worker's readyTimeout.)
    if (s === undefined || s.longHold || s.strikes.length > 0) {
      return this.#loadCrashWindow;
    }
    return Math.min(this.#loadCrashWindow, Math.max(MIN_HOLD_MS, 2 * s.since));
  }

  /**
   * Whether `name` is suspected of killing a worker soon after its load
   * (within `SUSPECT_MS`): a replay loads it alone, first, and holds the
   * worker until it outlived the window.
   */
  #suspected(name: string): boolean {
    const s = this.#suspects.get(name);
    if (s === undefined) return false;
    if (Date.now() - s.at < SUSPECT_MS) return s.held;
    this.#suspects.delete(name);
    return false;
  }

  /**
   * Told of every exit of a worker's process (`gen`). A death that came
   * within `loadCrashWindow` ms after the process completed a load (an add,
   * an update, a move or a restart's replay), not on purpose and not by
   * SIGKILL (the OOM killer, `kill -9`, the host's own kills: nothing says
   * the model did it) nor stopped from outside (SIGTERM, SIGINT, SIGHUP, a
   * clean exit: `kill`, earlyoom), is laid on the models loaded there within the window
   * (for a replay, every model whose load answered). When that is one model and no
   * call nor other load was running there, it gets a strike; else each is
   * only suspected (any of them, or a call, may have done it). A suspected
   * model is loaded alone by the next replay, which holds the worker back
   * from calls until it outlived the window (`replay`): a death then is
   * its strike, surviving clears it. At its second strike it is taken out
   * of service (`#quarantine`): never replayed again, its calls failing
   * with `ModelUnavailableError` until an update.
   */
  exited(
    worker: Worker,
    gen: number,
    exit: WorkerExit,
    intentional: boolean,
    workers: () => Worker[],
  ): void {
    const seen = this.#steps.get(worker);
    if (seen === undefined || seen.gen !== gen) return;
    this.#steps.delete(worker);
    const window = this.#loadCrashWindow;
    if (
      window <= 0 || intentional || worker.stoppedOnPurpose(gen) ||
      exit.signal === "SIGKILL" || stoppedFromOutside(exit) ||
      seen.steps.length === 0
    ) return;
    // Every load it completed within the window is suspect: a model's
    // timer may go off after later loads completed.
    const since = new Map<string, number>();
    // The model command whose load there each one's death came soonest
    // after (none: a replay's).
    const by = new Map<string, object | undefined>();
    for (const s of seen.steps) {
      const after = Math.max(0, exit.at - s.doneAt);
      if (after > window) continue;
      for (const n of s.names) {
        if (after <= (since.get(n) ?? Infinity)) by.set(n, s.command);
        since.set(n, Math.min(after, since.get(n) ?? Infinity));
      }
    }
    const names = new Set(since.keys());
    if (names.size === 0) return;
    // Calls running there, or another model's load (its import runs
    // code too): one of them may have done it.
    const loading = this.#loading.get(worker);
    const busy = modelCallsIn(exit) > 0 ||
      (loading?.gen === gen && loading.names.size > 0);
    // A strike only when nothing else can have done it: no call or other
    // load running, one model loaded within the window. Else each is only
    // suspected, and the next replay tries them one at a time.
    const counted = !busy && names.size === 1;
    // A model command's load there within the window (an add, an update),
    // done or under way: the death is better laid on it than taken as a
    // sign that a model held before it varies its delay (each model held
    // on that process's replay took a whole window's hold next, one after
    // the other, when a bad model was added there soon after).
    const commanded = (loading?.gen === gen && loading.names.size > 0) ||
      seen.steps.some((s) =>
        s.command !== undefined && exit.at - s.doneAt <= window
      );
    this.#blamed.set(worker, { gen, names });
    const now = Date.now();
    const struck: Array<{ name: string; suspect: Suspect }> = [];
    for (const name of names) {
      // Gone, updated since (a new model), or out of service already.
      if (!this.#models.has(name)) continue;
      if (this.#placements.get(name)?.failed !== undefined) continue;
      let suspect = this.#suspects.get(name);
      if (suspect !== undefined && lapsed(suspect, now)) suspect = undefined;
      if (suspect === undefined) {
        suspect = {
          at: now,
          since: since.get(name)!,
          strikes: [],
          suspicions: [],
          deaths: 0,
          held: true,
          longHold: false,
        };
        this.#suspects.set(name, suspect);
      }
      suspect.at = now;
      suspect.since = since.get(name)!;
      suspect.deaths++;
      // The models every death laid on it was laid on too (none once one
      // was a strike): cleared if one of them is quarantined (#quarantine).
      if (counted) suspect.shared = new Set();
      else if (suspect.shared === undefined) {
        suspect.shared = new Set([...names].filter((n) => n !== name));
      } else {
        for (const n of suspect.shared) {
          if (!names.has(n)) suspect.shared.delete(n);
        }
      }
      // Held on the next replay again (it may have outlived a short hold:
      // on this very process, its delay varies, and its next hold is the
      // whole window; another worker's death says nothing of that).
      if (
        !commanded && suspect.outlivedOn?.worker === worker &&
        suspect.outlivedOn.gen === gen
      ) {
        suspect.longHold = true;
      }
      delete suspect.outlivedOn;
      suspect.held = true;
      const death: LoadCrash = {
        worker: worker.id,
        pid: exit.pid,
        reason: howItEnded(exit),
        afterMs: since.get(name)!,
        stderr: null,
      };
      // The same add or update's load on another worker killed that one
      // too (its strike): one load's deaths are one strike, the held
      // replay decides. (Something else that took down every worker at
      // once, a model's timer set off beyond the window, a shared fault,
      // struck a model added on all of them just before twice at once:
      // out of service for deaths it had no part in.)
      const command = by.get(name);
      const again = counted && command !== undefined &&
          suspect.struckBy?.command === command
        ? suspect.struckBy.worker
        : undefined;
      if (counted && again === undefined) {
        suspect.struckBy = { command, worker: worker.id };
        suspect.strikes.push(death);
        // Only the last MAX_STRIKES decide (bounded memory).
        suspect.strikes = suspect.strikes.slice(-MAX_STRIKES);
        struck.push({ name, suspect });
      } else if (again !== undefined) {
        death.running =
          `at once with its strike on worker ${again} (one load's deaths count as one strike)`;
        suspect.suspicions.push(death);
        suspect.suspicions = suspect.suspicions.slice(-MAX_SUSPICIONS);
      } else {
        // What else may have done it: the reason words it.
        const others = [...names].filter((n) => n !== name);
        const calls = modelCallsIn(exit);
        const alsoLoading = loading?.gen === gen
          ? [...loading.names].filter((n) => n !== name)
          : [];
        death.running = describeRunning(calls, alsoLoading, others);
        suspect.suspicions.push(death);
        suspect.suspicions = suspect.suspicions.slice(-MAX_SUSPICIONS);
      }
      // What the server last wrote (the model's own message, a fault's
      // report): settled a moment after the exit.
      void worker.settledStderrTail(gen, 1000).then((tail) => {
        death.stderr = lastLine(tail) ?? null;
      }, () => {});
      this.#onLoadCrash({
        name,
        worker: worker.id,
        afterMs: since.get(name)!,
        reason: howItEnded(exit),
        counted: counted && again === undefined,
        strikes: suspect.strikes.length,
        ...(again === undefined ? {} : { struckOn: again }),
      });
    }
    for (const { name, suspect } of struck) {
      if (suspect.strikes.length >= MAX_STRIKES) {
        this.#quarantine(name, suspect, worker, gen, workers);
      }
    }
  }

  /**
   * Takes model `name` out of service after its second strike: marked
   * failed at once (the restart under way does not replay it), then
   * unloaded from the workers that still hold it, and told (`onModelFailed`)
   * once the last death's stderr line is in. An unplaced model gets a
   * placement record with no slot (`quarantined`) that holds its state, as
   * a placed model out of service has: `updateModel` brings either back.
   */
  #quarantine(
    name: string,
    suspect: Suspect,
    worker: Worker,
    gen: number,
    workers: () => Worker[],
  ): void {
    const model = this.#models.get(name)!;
    let p = this.#placements.get(name);
    // The workers that may still hold it: its slots, or (unplaced) all.
    const holders = (p === undefined ? workers() : [...p.workers]).filter((
      w,
    ) => w !== worker);
    if (p === undefined) {
      const label = model.spec.version;
      p = {
        name,
        ...(label === undefined ? {} : { label }),
        count: 0,
        workers: [],
        rr: 0,
        quarantined: true,
      };
      this.#placements.set(name, p);
    }
    p.workers.splice(0, p.workers.length);
    p.rr = 0;
    const placement = p;
    const strikes = [...suspect.strikes];
    const suspicions = [...suspect.suspicions];
    const deaths = suspect.deaths;
    this.#suspects.delete(name);
    // The models suspected only of deaths laid on this one too (loaded
    // beside it, no strike of their own): it did them, so they are
    // cleared, not held. (Each was held the whole window, one after the
    // other, on every restarted worker while the others waited: ten
    // models added with it kept the pool's two workers from calls for
    // 30 s after it was out of service.)
    for (const [n, s] of this.#suspects) {
      if (s.strikes.length === 0 && s.shared?.has(name) === true) {
        this.#suspects.delete(n);
      }
    }
    const window = this.#loadCrashWindow;
    const describe = () =>
      describeLoadCrashes(window, strikes, suspicions, deaths);
    placement.failed = describe();
    placement.outOfService = {
      loadCrashes: strikes,
      loadCrashWindow: window,
      lastExit: strikes.at(-1)?.reason ?? null,
      ...(suspicions.length === 0 ? {} : { suspectedCrashes: suspicions }),
    };
    void worker.settledStderrTail(gen, 1000).catch(() => "").then(
      async (tail) => {
        const last = strikes.at(-1);
        if (last !== undefined && last.stderr === null) {
          last.stderr = lastLine(tail) ?? null;
        }
        // Updated or removed meanwhile: back in service, nothing to tell.
        if (
          this.#placements.get(name) !== placement ||
          placement.failed === undefined
        ) return;
        placement.failed = describe();
        this.#onModelFailed({
          name,
          worker: worker.id,
          reason: placement.failed,
        });
        // Unloaded where it may still be (its code may run on there).
        await this.forModel(name, async () => {
          if (
            this.#placements.get(name) !== placement ||
            placement.failed === undefined
          ) return;
          const left = holders.filter(loadable).map((w) => ({
            worker: w,
            session: w.session!,
            gen: w.generation,
          }));
          const outcomes = await Promise.allSettled(
            left.map((t) =>
              t.session.request(
                "removeModel",
                { name },
                this.#requestOptions(),
              )
            ),
          );
          outcomes.forEach((o, i) => this.#unloaded(name, left[i]!, o));
        });
      },
    ).catch(() => {});
  }

  /**
   * Notes that placed model `name` may have brought down process `gen` of
   * `worker`: a call of its was in flight there when the connection was
   * lost (one given up on here, timed out or aborted, that the server was
   * still running then too), or its load failed there. Read if the slot
   * then fails for good (`relocate`).
   */
  implicate(worker: Worker, gen: number, name: string): void {
    const seen = this.#implicated.get(worker);
    if (seen !== undefined && seen.gen > gen) return;
    if (seen === undefined || seen.gen < gen) {
      this.#implicated.set(worker, { gen, names: new Set([name]) });
    } else seen.names.add(name);
  }

  /** The placed models' slots, by name (read live; empty while no model has `workers`). */
  get placements(): ReadonlyMap<string, ModelPlacement> {
    return this.#placements;
  }

  /**
   * Whether the death of process `gen` of `worker` was laid on a model's
   * load there (`exited`: a strike or a suspicion), rather than on the
   * worker.
   */
  laidOnModel(worker: Worker, gen: number): boolean {
    const blamed = this.#blamed.get(worker);
    return blamed !== undefined && blamed.gen === gen && blamed.names.size > 0;
  }

  /** Whether model `name` is out of service (`failedReason`). */
  outOfService(name: string): boolean {
    return this.#placements.get(name)?.failed !== undefined;
  }

  /** Whether a model of that (internal) name is registered. */
  has(name: string): boolean {
    return this.#models.has(name);
  }

  /** The models, in the order they were added. */
  list(): ModelInfo[] {
    return [...this.#models.values()].map((m) => this.#info(m));
  }

  /**
   * One model as {@linkcode ModelRegistry.list} shows it, `undefined` when
   * none of that (internal) name is registered: a map lookup, whatever the
   * number of models (a readiness probe per model reads it).
   */
  get(name: string): ModelInfo | undefined {
    const m = this.#models.get(name);
    return m === undefined ? undefined : this.#info(m);
  }

  #info(m: ModelInfo): ModelInfo {
    const p = this.#placements.get(m.name);
    const info: ModelInfo = {
      name: m.name,
      spec: m.spec,
      inits: [...m.inits],
    };
    // A quarantined unplaced model has a placement record, no slots.
    if (p !== undefined && !p.quarantined) {
      info.slots = p.workers.map((w) => w.id);
    }
    if (p?.failed !== undefined) info.failedReason = p.failed;
    else {
      const suspect = this.#suspects.get(m.name);
      if (suspect !== undefined && !lapsed(suspect, Date.now())) {
        info.suspected = this.#suspicion(suspect);
      }
    }
    return info;
  }

  /** A suspect's record as `ModelInfo.suspected` shows it. */
  #suspicion(s: Suspect): ModelSuspicion {
    const out: ModelSuspicion = {
      reason: describeSuspicion(this.#loadCrashWindow, s),
      deaths: s.deaths,
      strikes: s.strikes.length,
      held: s.held,
      since: s.at,
    };
    if (s.holding !== undefined) {
      out.heldWorker = s.holding.worker;
      out.heldUntil = s.holding.until;
    }
    return out;
  }

  /** How many placed models `worker` holds (a shrink keeps such slots). */
  placedOn(worker: Worker): number {
    return this.#placedOn(worker);
  }

  /** How many placed models `worker` holds (the placement rule's load). */
  #placedOn(worker: Worker, except?: string): number {
    let n = 0;
    for (const p of this.#placements.values()) {
      if (p.name !== except && p.workers.includes(worker)) n++;
    }
    for (const [name, slots] of this.#choosing) {
      if (
        name !== except && !this.#placements.has(name) &&
        slots.includes(worker)
      ) n++;
    }
    return n;
  }

  /**
   * Moves the placed models off `victims` (slots a resize removes) before
   * they go: each is loaded on a remaining slot that lacks it (by the
   * placement rule), then its calls go there. A load that fails kills that
   * worker (its restart loads the model, like a replay). Call inside
   * `exclusive`.
   */
  async evacuate(victims: Worker[], remaining: Worker[]): Promise<void> {
    const gone = new Set(victims);
    for (const [name, p] of this.#placements) {
      const staying = p.workers.filter((w) => !gone.has(w));
      const leaving = p.workers.length - staying.length;
      if (leaving === 0) continue;
      const free = remaining.filter((w) => live(w) && !p.workers.includes(w));
      const to = chooseSlots(
        free,
        Math.min(leaving, p.count - staying.length),
        (w) => this.#placedOn(w),
      );
      const model = this.#models.get(name)!;
      for (const w of to) await this.#moveTo(w, model);
      p.workers.splice(0, p.workers.length, ...staying, ...to);
      p.rr = 0;
    }
  }

  /**
   * Re-places the placed models of a slot that failed for good (a restart
   * policy gave up on it, `failWorker`): each is loaded on a ready slot that
   * lacks it (the placement rule) and takes the failed slot's place, so it
   * keeps its count of live slots and its waiting calls go there. With no
   * such slot it stays on the failed one (its revive replays it). The slot,
   * once revived, no longer holds the models moved off it (the count is
   * met). Until the move is done the models' calls wait
   * (`ModelPlacement.moving`) rather than fail with `NoWorkerError`.
   *
   * `crashed`: the slot failed after its process died (not a plugin's
   * `failWorker` on a running one). Then a model implicated in that death
   * (`implicate`) counts the move; past `maxRelocations` within the window
   * it is not moved but taken out of service (`#fail`): a model that
   * crashes every worker it reaches would otherwise walk through the pool.
   */
  relocate(
    worker: Worker,
    workers: () => Worker[],
    crashed = false,
  ): Promise<void> {
    const moving = [...this.#placements.values()].filter((p) =>
      p.workers.includes(worker)
    );
    if (moving.length === 0) return Promise.resolve();
    // Read now: the slot's last process is the one that died.
    const seen = this.#implicated.get(worker);
    const implicated = crashed && seen !== undefined &&
        seen.gen === worker.generation
      ? new Set(seen.names)
      : new Set<string>();
    for (const p of moving) p.moving = (p.moving ?? 0) + 1;
    return this.exclusive(async () => {
      // Revived (or removed) meanwhile: it replays its models itself.
      if (worker.state !== "failed") return;
      for (const p of moving) {
        // Removed, updated elsewhere or failed meanwhile: nothing to move.
        if (
          this.#placements.get(p.name) !== p || p.failed !== undefined ||
          !p.workers.includes(worker)
        ) continue;
        const counted = implicated.has(p.name);
        if (counted && this.#strike(p, worker)) {
          await this.#fail(p, worker);
          continue;
        }
        const ready = workers().filter(loadable);
        let to = chooseSlots(
          ready.filter((w) => !p.workers.includes(w)),
          1,
          (w) => this.#placedOn(w),
        );
        // A model that crashed this slot is not moved where it would take
        // the other models' last workers down too: it keeps its other
        // slots, or stays here until the slot is revived and takes it back.
        if (
          counted && to.length > 0 &&
          this.#takesLast(p, worker, to[0]!, workers(), ready)
        ) to = [];
        const model = this.#models.get(p.name);
        if (model === undefined) continue;
        this.#onRelocated({
          name: p.name,
          from: worker.id,
          to: to[0]?.id ?? null,
          counted,
        });
        if (to.length === 0) continue;
        await this.#moveTo(to[0]!, model);
        p.workers.splice(p.workers.indexOf(worker), 1, to[0]!);
        p.rr = 0;
      }
    }).catch(() => {}).finally(() => {
      for (const p of moving) p.moving! -= 1;
    });
  }

  /**
   * Whether moving `p`, implicated in the failure of `worker`, to `to`
   * would take the pool's last workers: `to` is its last ready one, or
   * every other worker still up (not `failed`) would hold the model. With
   * the default bound (2 moves), a model moved so failed every worker of a
   * 2- or 3-worker pool (the gateway's default is 2) before the bound took
   * it out, and the healthy models had no worker until `failedRetryAfter`.
   * It is not moved then: it keeps its other slots (calls go there), or
   * stays on its failed slot (its calls are a `NoWorkerError`, 503 with
   * `Retry-After`) until the slot is revived and takes it back, the move
   * counted all the same; a model wrongly implicated (busy on the slot
   * another model crashed) so comes back by itself, while a crashing one
   * soon passes `maxRelocations`. `maxRelocations: Infinity` moves it
   * every time.
   */
  #takesLast(
    p: ModelPlacement,
    worker: Worker,
    to: Worker,
    all: readonly Worker[],
    ready: readonly Worker[],
  ): boolean {
    if (this.#maxRelocations === Infinity) return false;
    if (ready.length <= 1) return true;
    return all.every((w) =>
      w === worker || w === to || p.workers.includes(w) ||
      !(w.state === "ready" || w.state === "starting" ||
        w.state === "restarting")
    );
  }

  /** What `p` did: the slots it failed for good, within the window. */
  #crashes(p: ModelPlacement): string {
    const relocations = p.relocations ?? [];
    const slots = relocations.map((r) => r.worker).join(", ");
    const times = relocations.length === 1
      ? "once"
      : `${relocations.length} times`;
    return `it crashed the workers it was placed on ${times} within ${this.#relocationWindow} ms (${slots}: each failed for good with its calls in flight or its load under way)`;
  }

  /**
   * Counts a move of `p` off `worker`, a slot that failed for good with
   * the model implicated; past `maxRelocations` within the window, marks
   * the model failed (true: not to be moved, `#fail` it).
   */
  #strike(p: ModelPlacement, worker: Worker): boolean {
    const now = Date.now();
    const window = this.#relocationWindow;
    const kept = (p.relocations ?? []).filter((r) => now - r.at < window);
    kept.push({ at: now, worker: worker.id });
    // Only the last maxRelocations + 1 can decide (bounded memory).
    const max = this.#maxRelocations;
    p.relocations = max === Infinity ? kept.slice(-1) : kept.slice(-(max + 1));
    if (max === Infinity || kept.length <= max) return false;
    p.failed = `${this.#crashes(p)}, past ${
      this.#settingName("maxRelocations")
    } ${max}; last: worker ${worker.id} ${worker.failedReason ?? "failed"}`;
    p.outOfService = {
      crashed: p.relocations.map((r) => r.worker),
      relocationWindow: window,
      maxRelocations: max,
      lastExit: worker.lastExit?.reason ?? null,
    };
    return true;
  }

  /**
   * Takes placed model `p` (its `failed` set) out of service: on no slot,
   * loaded by no replay, its calls failing with `ModelUnavailableError`
   * (the router reads `failed`) until an update. The live slots that still
   * hold it (a `workers` above 1) unload it, as a slot an update leaves
   * does (a failed unload is tried once more, then the worker is killed).
   */
  async #fail(p: ModelPlacement, worker: Worker): Promise<void> {
    const left = p.workers.filter((w) => w !== worker && loadable(w))
      .map((w) => ({ worker: w, session: w.session!, gen: w.generation }));
    p.workers.splice(0, p.workers.length);
    p.rr = 0;
    this.#onModelFailed({
      name: p.name,
      worker: worker.id,
      reason: p.failed ?? "failed",
    });
    const outcomes = await Promise.allSettled(
      left.map((t) =>
        t.session.request(
          "removeModel",
          { name: p.name },
          this.#requestOptions(),
        )
      ),
    );
    outcomes.forEach((o, i) => this.#unloaded(p.name, left[i]!, o));
  }

  /**
   * Loads a placed model on the slot it moves to; a load that fails kills
   * that worker (its restart loads the model, like a replay).
   */
  async #moveTo(w: Worker, model: ModelInfo): Promise<void> {
    if (!loadable(w)) return; // its replay loads it
    const session = w.session!;
    const gen = w.generation;
    try {
      await this.#load(session, model);
    } catch (err) {
      this.implicate(w, gen, model.name);
      const reason = `model '${model.name}' could not be moved to it (${
        err instanceof Error ? err.message : String(err)
      })`;
      if (w.session === session) w.kill("SIGKILL", reason);
      this.#onMoveFailed({ worker: w.id, name: model.name, reason });
    }
  }

  /** Drops a slot that is gone (removed by a resize) from the placements. */
  forget(worker: Worker): void {
    for (const p of this.#placements.values()) {
      const at = p.workers.indexOf(worker);
      if (at >= 0) {
        p.workers.splice(at, 1);
        p.rr = 0;
      }
    }
  }

  /**
   * Runs `fn` alone: once every model command queued before it has
   * settled, and before any queued after it starts (a replay, a relocation,
   * a resize's evacuation: a worker is never made ready in the middle of a
   * model change).
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const before = Promise.all([this.#lock, ...this.#commands]);
    const run = before.then(fn, fn);
    this.#lock = run.catch(() => {});
    return run;
  }

  /**
   * Runs model command `fn` for model `name` after the commands of that
   * model queued before it and the `exclusive` runs queued before it, at
   * the same time as other models' commands: a load whose import hangs
   * holds its own model's changes (until its timeout), not the others'.
   * The versions of a model (`name@label`) are one model here: they share
   * its list of versions and its default.
   */
  forModel<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const key = modelLockKey(name);
    const before = Promise.all([this.#lock, this.#byModel.get(key)]);
    const run = before.then(fn, fn);
    const tail = run.then(() => {}, () => {});
    this.#byModel.set(key, tail);
    this.#commands.add(tail);
    void tail.then(() => {
      this.#commands.delete(tail);
      if (this.#byModel.get(key) === tail) this.#byModel.delete(key);
    });
    return run;
  }

  /**
   * Sends the recorded models (and their inits) that `worker` holds to its
   * fresh session, in order (the suspected ones first, each alone and held:
   * `exited`): every unplaced model, the placed ones whose
   * slot it is, and the placed ones on fewer slots than their `workers`
   * not counting `failed` ones (after a shrink: a grown pool places them
   * again; a model left on a failed slot, no other being ready when it
   * failed, takes this one in its place, unless it crashed a slot within
   * `relocationWindow` and `workers` has no other ready one: it would take
   * the pool's last worker down, as `relocate` does not let it). Call
   * inside `exclusive`.
   */
  async replay(
    session: Session,
    worker: Worker,
    workers: () => Worker[],
    options: ReplayOptions = {},
  ): Promise<void> {
    const gen = worker.generation;
    // A model whose load the server refuses goes out of service on a
    // restart only: a new worker's (a resize, an autoscale) start fails
    // instead, the model still served by the workers that hold it.
    const outOfService = options.restart === true;
    // A model suspected of killing a worker soon after its load: loaded
    // first, alone, and the worker held (no calls) until it outlived twice
    // the delay of that death (the whole window from its second death or
    // its first strike on), so that a death then is this model's alone,
    // with nothing running. First: with the other models loaded before it
    // (and their loads forgotten, to make its death a strike), one of them
    // whose timer went off later than before killed the worker during its
    // hold, a strike against it (and a second one quarantined an innocent
    // model, with the culprit's last stderr line as its reason).
    const held: Array<{ model: ModelInfo; placed: boolean }> = [];
    for (const model of this.#models.values()) {
      if (!this.#suspected(model.name)) continue;
      const p = this.#placements.get(model.name);
      if (p === undefined) held.push({ model, placed: false });
      else if (p.failed === undefined && p.workers.includes(worker)) {
        held.push({ model, placed: true });
      }
    }
    const first = new Set(held.map((h) => h.model.name));
    for (const { model, placed } of held) {
      const name = model.name;
      // Out of service meanwhile (another worker's death): not loaded.
      if (this.#placements.get(name)?.failed !== undefined) continue;
      // A death from now until the hold is over is laid on it alone: those
      // held before outlived their holds. (One of them whose delay varies
      // may still do it: a strike against this one, whose next hold is
      // then the whole window, which clears it.)
      const seen = this.#steps.get(worker);
      if (seen?.gen === gen) seen.steps = [];
      const sentAt = Date.now();
      try {
        await (placed
          ? this.#loadPlaced(session, worker, model)
          : this.#load(session, model));
      } catch (err) {
        // Its load refused (not a death): out of service, as below.
        if (!outOfService || !loadRefused(err, session)) throw err;
        this.#replayLoadFailed(model, worker, err, workers);
        continue;
      }
      const alone = this.#loaded(worker, gen, [name], sentAt);
      const hold = this.#holdFor(name);
      const suspect = this.#suspects.get(name);
      if (suspect !== undefined) {
        suspect.holding = { worker: worker.id, until: Date.now() + hold };
      }
      const survived = await outlives(session, hold);
      if (suspect !== undefined) delete suspect.holding;
      if (!survived) {
        // The process's exit laid on this model (a strike, maybe its
        // quarantine) before the lock goes to the next worker's replay:
        // the connection closes first, and that replay held this model
        // again, quarantined a moment later, and its worker died of it
        // too (a third death where two had decided).
        await withinRunningTime(worker.exitOf(gen), 2000);
        throw new ConnectionLostError(
          `Cannot replay model '${name}': the worker's connection closed within ${hold} ms of its load, loaded alone (a worker died soon after its load before)`,
        );
      }
      if (hold >= this.#loadCrashWindow) {
        // It outlived the whole window: cleared, its strikes forgotten.
        if (this.#suspects.get(name) === suspect) this.#suspects.delete(name);
        alone?.names.delete(name);
      } else if (suspect !== undefined) {
        // A shorter hold: no longer held, but a death laid on it again
        // (its load still within the window) finds its record, and is
        // held the whole window next.
        suspect.held = false;
        suspect.outlivedOn = { worker, gen };
        // Until that load is out of the window: a death after says
        // nothing more of it (its record goes, as a longer hold's).
        suspect.until = (alone?.doneAt ?? Date.now()) + this.#loadCrashWindow;
      }
    }
    // Then the others, each a step of its own: a death soon after is laid
    // on them all, each with the delay since its own load. (As one step,
    // each was timed from the replay's last load: a model loaded before
    // slow ones seemed to kill the worker sooner than it did, so its held
    // replay was too short, it outlived it, and its death came during the
    // next held model's hold, a strike against that one.)
    const load = async (model: ModelInfo, placed: boolean) => {
      if (first.has(model.name)) return;
      const sentAt = Date.now();
      try {
        await (placed
          ? this.#loadPlaced(session, worker, model)
          : this.#load(session, model));
      } catch (err) {
        // The model's own failure, its server still there: out of service,
        // the worker up with the others. Else (a death, a timeout) the
        // restart fails, as before.
        if (!outOfService || !loadRefused(err, session)) throw err;
        this.#replayLoadFailed(model, worker, err, workers);
        return;
      }
      // Once its load answered: a death during it (its import) fails the
      // restart, as before, and a placed model's counts as its relocation.
      this.#loaded(worker, gen, [model.name], sentAt);
    };
    for (const model of this.#models.values()) {
      const p = this.#placements.get(model.name);
      if (p === undefined) {
        await load(model, false);
      } else if (p.failed !== undefined) {
        continue; // out of service until an update
      } else if (p.workers.includes(worker)) {
        await load(model, true);
      } else if (p.workers.filter(up).length < p.count) {
        if (
          this.#crashedLately(p) &&
          !workers().some((w) => w !== worker && loadable(w))
        ) continue;
        try {
          await this.#loadPlaced(session, worker, model);
        } catch (err) {
          if (!outOfService || !loadRefused(err, session)) throw err;
          this.#replayLoadFailed(model, worker, err, workers);
          continue;
        }
        const failed = p.workers.findIndex((w) => !up(w));
        if (failed >= 0) p.workers.splice(failed, 1, worker);
        else p.workers.push(worker);
        p.rr = 0;
      }
    }
  }

  /**
   * Takes `model` out of service after its load failed on `worker`'s
   * replay with the model's own error (its import raised, a file it reads
   * is gone, a package it imports changed on disk: the server answered,
   * {@linkcode loadRefused}), so that the worker comes up with the other
   * models. Before, the restart failed: the worker was killed and restarted
   * into the same failure until its restart policy gave up (the slot
   * `failed`, every model with it). Its calls now fail with
   * `ModelUnavailableError` naming the failure (the router reads `failed`;
   * an unplaced model gets a record with no slot, as a quarantined one),
   * until `updateModel` (`PUT`) loads it again everywhere; once the replay
   * is over, the workers that still hold it unload it (its code would run
   * there, and an update adds it back on every worker).
   */
  #replayLoadFailed(
    model: ModelInfo,
    worker: Worker,
    err: unknown,
    workers: () => Worker[],
  ): void {
    const name = model.name;
    let p = this.#placements.get(name);
    if (p === undefined) {
      const label = model.spec.version;
      p = {
        name,
        ...(label === undefined ? {} : { label }),
        count: 0,
        workers: [],
        rr: 0,
        quarantined: true,
      };
      this.#placements.set(name, p);
    }
    const holders = p.quarantined === true && p.failed === undefined
      ? workers()
      : [...p.workers];
    p.workers.splice(0, p.workers.length);
    p.rr = 0;
    const message = this.#loadErrorText(
      (err as Error).message.replace(/^Cannot load model '[^']*': /, ""),
    );
    const details = (err as RemoteError).details;
    const exception = err instanceof PythonError
      ? err.type
      : details?.exception;
    const traceback = err instanceof PythonError
      ? err.traceback
      : details?.traceback;
    p.failed = `its load failed on restarted worker ${worker.id}: ${message}`;
    p.outOfService = {
      loadFailedOn: worker.id,
      loadError: message,
      ...(typeof exception === "string" ? { exception } : {}),
    };
    this.#suspects.delete(name);
    this.#onModelFailed({
      name,
      worker: worker.id,
      reason: p.failed,
      ...(typeof exception === "string" ? { exception } : {}),
      ...(typeof traceback === "string" && traceback !== ""
        ? { traceback }
        : {}),
    });
    // After the replay (it holds the lock): unloaded wherever it is, this
    // worker too (an init that failed after its load left it there).
    const placement = p;
    void this.forModel(name, async () => {
      if (
        this.#placements.get(name) !== placement ||
        placement.failed === undefined
      ) return;
      const left = [...new Set([...holders, worker])].filter(loadable).map((
        w,
      ) => ({ worker: w, session: w.session!, gen: w.generation }));
      const outcomes = await Promise.allSettled(
        left.map((t) =>
          t.session.request("removeModel", { name }, this.#requestOptions())
        ),
      );
      outcomes.forEach((o, i) => this.#unloaded(name, left[i]!, o));
    }).catch(() => {});
  }

  /**
   * Whether `p` counted a move (it crashed a slot) within the window
   * (never with `maxRelocations: Infinity`, which moves it every time).
   */
  #crashedLately(p: ModelPlacement): boolean {
    if (this.#maxRelocations === Infinity) return false;
    const last = p.relocations?.at(-1);
    return last !== undefined && Date.now() - last.at < this.#relocationWindow;
  }

  /**
   * `#load` of a placed model on a restarting worker: a load that fails
   * implicates the model in that process's death (its replay failing
   * kills the worker).
   */
  async #loadPlaced(
    session: Session,
    worker: Worker,
    model: ModelInfo,
  ): Promise<void> {
    const gen = worker.generation;
    try {
      await this.#load(session, model);
    } catch (err) {
      this.implicate(worker, gen, model.name);
      throw err;
    }
  }

  /** Loads one recorded model (its snapshot, then its inits) on `session`. */
  async #load(session: Session, model: ModelInfo): Promise<void> {
    await session.request(
      "addModel",
      loadArgs(model.name, model.spec, this.#snapshots.get(model.name)),
      this.#requestOptions(),
    );
    for (const dataFile of model.inits) {
      await session.request(
        "initModel",
        { name: model.name, dataFile },
        this.#requestOptions(),
      );
    }
  }

  /** Adds a model on every worker; rolls it back everywhere when one fails. */
  add(
    name: string,
    spec: ModelSpec,
    workers: () => Worker[],
    call: ModelCallOptions = {},
    hooks: ModelCommandHooks = {},
  ): Promise<unknown> {
    return this.forModel(name, async () => {
      hooks.check?.();
      if (this.#models.has(name)) {
        throw errorFromWire({
          type: "InvalidRequestError",
          message: `Cannot add model '${name}': it already exists`,
        });
      }
      const all = workers();
      const slots = spec.workers === undefined
        ? undefined
        : chooseSlots(all.filter(live), spec.workers, (w) => this.#placedOn(w));
      if (slots !== undefined) this.#choosing.set(name, slots);
      let result: unknown;
      try {
        result = await this.#everywhere(
          "add",
          name,
          slots ?? all,
          (s, ask, onDone) =>
            s.request(
              "addModel",
              loadArgs(name, spec, undefined, ask),
              { ...this.#requestOptions(call), onDone },
            ),
          (s) => s.request("removeModel", { name }, this.#requestOptions()),
        );
      } finally {
        this.#choosing.delete(name);
      }
      this.#models.set(name, { name, spec, inits: [] });
      if (slots !== undefined) {
        this.#placements.set(name, {
          name,
          ...(spec.version === undefined ? {} : { label: spec.version }),
          count: spec.workers!,
          workers: slots,
          rr: 0,
        });
      }
      hooks.done?.();
      return this.#keepSnapshot(name, result);
    });
  }

  /** Replaces a model's code/options on every worker; restores the old spec everywhere when one fails. */
  update(
    name: string,
    spec: ModelSpec,
    workers: () => Worker[],
    call: ModelCallOptions = {},
    hooks: ModelCommandHooks = {},
  ): Promise<unknown> {
    return this.forModel(name, async () => {
      hooks.check?.();
      const old = this.#require(name, "update");
      const oldSnapshot = this.#snapshots.get(name);
      const all = workers();
      const placement = this.#placements.get(name);
      // Where it is now (unplaced: everywhere), and where it goes: a new
      // `workers` keeps as many of its slots as it may, then places the rest.
      const had = new Set(placement?.workers ?? all);
      let slots: Worker[] | undefined;
      if (spec.workers !== undefined) {
        const kept = placement === undefined
          ? []
          : placement.workers.filter((w) => live(w) && up(w))
            .slice(0, spec.workers);
        slots = [
          ...kept,
          ...chooseSlots(
            all.filter((w) => live(w) && !kept.includes(w)),
            spec.workers - kept.length,
            (w) => this.#placedOn(w, name),
          ),
        ];
      }
      if (slots !== undefined) this.#choosing.set(name, slots);
      let result: unknown;
      try {
        result = await this.#everywhere(
          "update",
          name,
          slots ?? all,
          (s, ask, onDone, w) =>
            s.request(
              had.has(w) ? "updateModel" : "addModel",
              loadArgs(name, spec, undefined, ask),
              { ...this.#requestOptions(call), onDone },
            ),
          (s, w) =>
            had.has(w)
              ? s.request(
                "updateModel",
                loadArgs(name, old.spec, oldSnapshot),
                this.#requestOptions(),
              )
              : s.request("removeModel", { name }, this.#requestOptions()),
        );
      } finally {
        this.#choosing.delete(name);
      }
      this.#models.set(name, { name, spec, inits: [] });
      const description = this.#keepSnapshot(name, result);
      if (slots === undefined) {
        if (placement !== undefined) {
          this.#placements.delete(name);
          this.#onUnplace(placement);
        }
      } else if (placement === undefined) {
        this.#placements.set(name, {
          name,
          ...(spec.version === undefined ? {} : { label: spec.version }),
          count: spec.workers!,
          workers: slots,
          rr: 0,
        });
      } else {
        placement.count = spec.workers!;
        placement.workers.splice(0, placement.workers.length, ...slots);
        placement.rr = 0;
        // An operator's update puts a failed model back in service, with
        // a clean count.
        delete placement.failed;
        delete placement.outOfService;
        delete placement.relocations;
        delete placement.quarantined;
      }
      // New code: a clean count of load crashes too.
      this.#suspects.delete(name);
      // The slots it left unload it once their calls go elsewhere (a call
      // in flight there finishes first, as for removeModel).
      if (slots !== undefined) {
        const dropped = [...had].filter((w) =>
          !slots.includes(w) && loadable(w)
        ).map((w) => ({ worker: w, session: w.session!, gen: w.generation }));
        const outcomes = await Promise.allSettled(
          dropped.map((t) =>
            t.session.request("removeModel", { name }, this.#requestOptions())
          ),
        );
        outcomes.forEach((o, i) => this.#unloaded(name, dropped[i]!, o));
      }
      return description;
    });
  }

  /** Removes a model from the registry and from every worker. */
  remove(
    name: string,
    workers: () => Worker[],
    call: ModelCallOptions = {},
    hooks: ModelCommandHooks = {},
  ): Promise<unknown> {
    return this.forModel(name, async () => {
      hooks.check?.();
      this.#require(name, "remove");
      this.#models.delete(name);
      this.#suspects.delete(name);
      // Calls from now on no longer reach it (a version: its name's default
      // is another one, or the name is gone).
      hooks.done?.();
      this.#snapshots.delete(name);
      const placement = this.#placements.get(name);
      if (placement !== undefined) {
        this.#placements.delete(name);
        this.#onUnplace(placement);
      }
      return await this.#everywhere(
        "remove",
        name,
        placement?.workers ?? workers(),
        (s, _ask, onDone) =>
          s.request("removeModel", { name }, {
            ...this.#requestOptions(call),
            onDone,
          }),
      );
    });
  }

  /**
   * Runs `initModel` on every worker. Recorded for replay only when it
   * succeeded everywhere; an init cannot be undone, so workers where it
   * succeeded keep it (the error names the ones where it failed).
   */
  init(
    name: string,
    dataFile: string,
    workers: () => Worker[],
    call: ModelCallOptions = {},
  ): Promise<unknown> {
    return this.forModel(name, async () => {
      const model = this.#require(name, "init");
      const placement = this.#placements.get(name);
      if (placement?.failed !== undefined) {
        // On no slot: it would run nowhere, and the update that brings the
        // model back starts it without inits.
        throw outOfService(placement);
      }
      const result = await this.#everywhere(
        "init",
        name,
        this.#placements.get(name)?.workers ?? workers(),
        (s) =>
          s.request(
            "initModel",
            { name, dataFile },
            this.#requestOptions(call),
          ),
      );
      model.inits.push(dataFile);
      return result;
    });
  }

  /**
   * The outcome of unloading model `name` from a slot it left (an update
   * with another `workers`). A `close()` that raised or overran is told; an
   * unload that failed (a timeout, an abort) is told and tried once more
   * after the command in hand, as the model would otherwise hold that
   * worker's memory for good with no call to use it: not there by then is
   * done (the server drops a model before closing it), a second failure
   * kills the worker (its restart loads only its own models). A worker
   * that died or restarted meanwhile does not hold it any more.
   */
  #unloaded(
    name: string,
    t: { worker: Worker; session: Session; gen: number },
    outcome: PromiseSettledResult<unknown>,
  ): void {
    const current = () =>
      t.worker.generation === t.gen && t.worker.state === "ready" &&
      t.worker.session === t.session;
    if (outcome.status === "fulfilled") {
      const warning = (outcome.value as { closeWarning?: unknown } | null)
        ?.closeWarning;
      if (typeof warning === "string") {
        this.#onUnloadFailed({
          worker: t.worker.id,
          name,
          reason: warning,
          killed: false,
        });
      }
      return;
    }
    const err = outcome.reason;
    if ((err as Error)?.name === "ModelNotFoundError" || !current()) return;
    this.#onUnloadFailed({
      worker: t.worker.id,
      name,
      reason: err instanceof Error ? err.message : String(err),
      killed: false,
    });
    void this.forModel(name, async () => {
      // Placed there again meanwhile (another update): it stays.
      const placement = this.#placements.get(name);
      if (
        !current() ||
        (this.#models.has(name) &&
          (placement === undefined || placement.workers.includes(t.worker)))
      ) return;
      try {
        await t.session.request(
          "removeModel",
          { name },
          this.#requestOptions(),
        );
      } catch (again) {
        if ((again as Error)?.name === "ModelNotFoundError" || !current()) {
          return;
        }
        const reason = `model '${name}' could not be unloaded from it (${
          again instanceof Error ? again.message : String(again)
        })`;
        t.worker.kill("SIGKILL", reason);
        this.#onUnloadFailed({
          worker: t.worker.id,
          name,
          reason,
          killed: true,
        });
      }
    }).catch(() => {});
  }

  #require(name: string, action: string): ModelInfo {
    const model = this.#models.get(name);
    if (model === undefined) {
      throw errorFromWire({
        type: "ModelNotFoundError",
        message: `Cannot ${action} model '${name}': no such model in the pool`,
      });
    }
    return model;
  }

  /**
   * Brings model `name` on one worker back to what the registry holds, after
   * a command given up on there (a timeout, an abort) was answered late: the
   * server may have applied it (an update that finished as its cancel came)
   * while the other workers rolled it back, and would then run other code
   * than they do. Runs after the command in hand (`exclusive`), and does
   * nothing for a worker restarted since (its replay loaded the registry).
   * A worker whose resync fails too is killed: its restart replays the
   * registry.
   */
  #resync(
    name: string,
    t: { worker: Worker; session: Session; gen: number },
  ): Promise<void> {
    return this.forModel(name, async () => {
      const current = () =>
        t.worker.generation === t.gen && t.worker.state === "ready" &&
        t.worker.session === t.session;
      if (!current()) return;
      const model = this.#models.get(name);
      // A placed model belongs only on its slots: elsewhere, it is undone.
      const placement = this.#placements.get(name);
      try {
        if (
          model === undefined ||
          (placement !== undefined && !placement.workers.includes(t.worker))
        ) {
          await t.session.request(
            "removeModel",
            { name },
            this.#requestOptions(),
          )
            .catch((err: unknown) => {
              // Not there: nothing to undo.
              if ((err as Error)?.name !== "ModelNotFoundError") throw err;
            });
        } else {
          await this.#load(t.session, model);
        }
      } catch (err) {
        if (!current()) return;
        const reason =
          `model '${name}' could not be brought back in line after a late model command (${
            err instanceof Error ? err.message : String(err)
          })`;
        t.worker.kill("SIGKILL", reason);
        this.#onResync({ worker: t.worker.id, name, ok: false, reason });
        return;
      }
      this.#onResync({ worker: t.worker.id, name, ok: true });
    }).catch(() => {});
  }

  /**
   * `sent`, a load of `name` on `t`, noted in `#loading` until the server
   * answers it (a reply, or an error reply); a lost connection, a timeout
   * or an abort leave it noted: the process may have died under it, or may
   * still be running it.
   */
  #tracked(
    t: { worker: Worker; gen: number },
    name: string,
    sent: Promise<unknown>,
    command: object,
  ): Promise<unknown> {
    let seen = this.#loading.get(t.worker);
    if (seen === undefined || seen.gen < t.gen) {
      seen = { gen: t.gen, names: new Set() };
      this.#loading.set(t.worker, seen);
    }
    if (seen.gen !== t.gen) return sent;
    const names = seen.names;
    names.add(name);
    const sentAt = Date.now();
    return sent.then((value) => {
      names.delete(name);
      this.#loaded(t.worker, t.gen, [name], sentAt, command);
      return value;
    }, (err: unknown) => {
      if (
        !(err instanceof ConnectionLostError || err instanceof TimeoutError ||
          err instanceof CancelledError)
      ) names.delete(name);
      throw err;
    });
  }

  /** Keeps the code a load reply carries for replays; returns the reply without it. */
  #keepSnapshot(name: string, result: unknown): unknown {
    if (typeof result !== "object" || result === null) {
      this.#snapshots.delete(name);
      return result;
    }
    const { source, helpers, ...description } = result as Record<
      string,
      unknown
    >;
    const snapshot: Snapshot = {};
    if (typeof source === "string") snapshot.source = source;
    // Opaque to the host: the server checks what it is sent back.
    if (Array.isArray(helpers)) snapshot.helpers = helpers;
    if (snapshot.source === undefined && snapshot.helpers === undefined) {
      // A server without snapshots: replays read the files.
      this.#snapshots.delete(name);
    } else {
      this.#snapshots.set(name, snapshot);
    }
    return description;
  }

  /** The options of one model command: the call's, else the registry's timeout (rollbacks and replays: the registry's only). */
  #requestOptions(
    call: ModelCallOptions = {},
  ): { timeout?: number; signal?: AbortSignal } {
    const timeout = call.timeout ?? this.#timeout;
    return {
      ...(timeout === undefined ? {} : { timeout }),
      ...(call.signal === undefined ? {} : { signal: call.signal }),
    };
  }

  /**
   * Runs `apply` on every ready worker at once. A worker that died meanwhile
   * (its connection was lost) does not count as a failure when another
   * worker applied the command: it gets the registry on replay. When every
   * worker died, the command fails naming them all. On failure, `undo` runs
   * on the workers where `apply` succeeded.
   */
  async #everywhere(
    action: string,
    name: string,
    workers: Worker[],
    apply: (
      session: Session,
      ask: boolean,
      onDone: () => void,
      worker: Worker,
    ) => Promise<unknown>,
    undo?: (session: Session, worker: Worker) => Promise<unknown>,
  ): Promise<unknown> {
    const targets = workers.filter((w) =>
      w.state === "ready" && w.session !== undefined
    )
      .map((w) => ({ worker: w, session: w.session!, gen: w.generation }));
    // The server is done with a command given up on here (a timeout, an
    // abort) only when its late reply comes: it may have applied it by then.
    const serverDone = targets.map(() => false);
    const whenServerDone: Array<(() => void) | undefined> = [];
    const load = action === "add" || action === "update";
    // One token for this command's loads on every worker (`exited`).
    const command = {};
    const outcomes = await Promise.allSettled(
      targets.map((t, i) => {
        const sent = apply(t.session, i < SNAPSHOT_ASKED, () => {
          serverDone[i] = true;
          whenServerDone[i]?.();
        }, t.worker);
        return load ? this.#tracked(t, name, sent, command) : sent;
      }),
    );
    outcomes.forEach((o, i) => {
      if (
        o.status === "rejected" &&
        (o.reason instanceof TimeoutError || o.reason instanceof CancelledError)
      ) {
        const t = targets[i]!;
        const resync = () => void this.#resync(name, t);
        if (serverDone[i]) resync();
        else whenServerDone[i] = resync;
      }
    });
    const failed: Array<{ id: string; error: unknown }> = [];
    const died: Array<{ id: string; error: unknown }> = [];
    let result: unknown = null;
    let applied = 0;
    outcomes.forEach((o, i) => {
      const t = targets[i]!;
      if (o.status === "fulfilled") {
        // The first reply is the one: the first target's when it applied, else the second's (they
        // alone carry a snapshot).
        if (applied++ === 0) result = o.value;
        else result = withCloseWarning(result, o.value);
      } else if (
        o.reason instanceof ConnectionLostError ||
        t.worker.generation !== t.gen || t.worker.state !== "ready"
      ) {
        // Its exit may not be reported yet when the lost connection is: the error tells.
        died.push({ id: t.worker.id, error: o.reason });
      } else {
        failed.push({ id: t.worker.id, error: o.reason });
      }
    });
    // A worker that died gets the registry on replay, provided some worker applied the command.
    // Not a load's (add, update): a worker dying under it is most likely killed by the model's
    // import (os._exit, a fault in an extension), and replaying it would kill the restarted
    // worker again and again until its restart policy gave up on it. The load fails instead,
    // rolled back on the workers that applied it.
    // Stopped on purpose (the pool closing, a resize): no crash of the load's.
    const crashed = load
      ? died.filter((d) => {
        const t = targets.find((t) => t.worker.id === d.id)!;
        return !t.worker.stoppedOnPurpose(t.gen);
      })
      : [];
    if (
      failed.length === 0 &&
      (died.length === 0 || (crashed.length === 0 && applied > 0))
    ) {
      return result;
    }
    if (action === "remove" && failed.length === 0) {
      // Every worker died under a remove: it is done all the same (the
      // registry no longer has the model, so no restart replays it). A
      // failure would tell the caller the model stayed, which it did not
      // (and a remove of every version would stop at the first).
      const first = targets.find((t) => t.worker.id === died[0]!.id)!;
      const exit = await withinRunningTime(
        first.worker.exitOf(first.gen),
        2000,
      );
      return {
        name,
        removed: true,
        closeWarning: `worker${died.length === 1 ? "" : "s"} ${
          died.map((d) => d.id).join(", ")
        } died while removing model '${name}' (${
          exit?.reason ?? "connection lost"
        }); it is removed`,
      };
    }
    const blamed = failed.length > 0 ? failed : died;
    if (undo !== undefined && applied > 0) {
      await Promise.allSettled(
        targets.filter((_, i) => outcomes[i]!.status === "fulfilled").map((t) =>
          undo(t.session, t.worker)
        ),
      );
    }
    if (failed.length === 0 && crashed.length > 0) {
      // Workers died under the load: its import took them down. The error
      // says how (the exit, the last line the server wrote), not only that
      // a connection closed.
      const first = targets.find((t) => t.worker.id === crashed[0]!.id)!;
      const loading = this.#loading.get(first.worker);
      const alsoLoading = loading?.gen === first.gen
        ? [...loading.names].filter((n) => n !== name)
        : [];
      const exit = await withinRunningTime(
        first.worker.exitOf(first.gen),
        2000,
      );
      const blamed = this.#blamed.get(first.worker);
      throw await loadCrashError(action, name, first, {
        died: crashed,
        sent: targets.length,
        rolledBack: undo !== undefined ? applied : 0,
        alsoLoading,
        notThisLoad: alsoLoading.length > 0 ? null : notThisLoad(exit),
        blamed: alsoLoading.length > 0 || blamed?.gen !== first.gen
          ? []
          : [...blamed.names].filter((n) => n !== name),
      });
    }
    const first = blamed[0]!.error;
    const ids = blamed.map((f) => f.id).join(", ");
    const cause = first instanceof Error ? first.message : String(first);
    const error = first instanceof Error ? first : new Error(cause);
    const notes: string[] = [];
    if (failed.length === 0) {
      notes.push(
        died.length === 1
          ? "the worker died during it"
          : "every worker died during it",
      );
    } else if (died.length > 0) {
      notes.push(`worker ${died.map((d) => d.id).join(", ")} died during it`);
    }
    if (undo !== undefined && applied > 0) {
      notes.push(
        `rolled back on the ${applied} other worker${applied === 1 ? "" : "s"}`,
      );
    }
    error.message =
      `Cannot ${action} model '${name}' on worker${
        blamed.length === 1 ? "" : "s"
      } ${ids}: ${cause}` + (notes.length ? ` (${notes.join("; ")})` : "");
    const details = (error as { details?: Record<string, unknown> }).details;
    if (details !== undefined && typeof details === "object") {
      details.workers = blamed.map((f) => f.id);
    }
    throw error;
  }
}

/**
 * The error of a load (`add`, `update`) during which every worker it was
 * sent to died: a `WorkerCrashedError` naming the model, the first worker's
 * exit (code or signal) and the last line its server wrote to stderr (a
 * model's own message before `os._exit`, or the fault's report). The exit
 * is awaited for at most 2 s of the host's running time (it follows the
 * lost connection closely).
 */
async function loadCrashError(
  action: string,
  name: string,
  first: { worker: Worker; gen: number },
  { died, sent, rolledBack, alsoLoading, notThisLoad, blamed }: {
    died: Array<{ id: string; error: unknown }>;
    sent: number;
    rolledBack: number;
    alsoLoading: string[];
    notThisLoad: string | null;
    blamed: string[];
  },
): Promise<WorkerCrashedError> {
  const exit = await withinRunningTime(first.worker.exitOf(first.gen), 2000);
  const how = exit === undefined ? "connection lost" : exit.reason;
  const pid = exit?.pid ?? null;
  const line = lastLine(await first.worker.settledStderrTail(first.gen, 1000));
  const ids = died.map((d) => d.id);
  const notes: string[] = [];
  if (ids.length === sent && sent > 1) {
    notes.push(`every worker it was sent to died (${ids.join(", ")})`);
  } else if (ids.length > 1) notes.push(`workers ${ids.join(", ")} died`);
  if (alsoLoading.length > 0) {
    notes.push(
      `model${alsoLoading.length === 1 ? "" : "s"} ${
        alsoLoading.map((n) => `'${n}'`).join(", ")
      } ${alsoLoading.length === 1 ? "was" : "were"} loading there too`,
    );
  }
  if (rolledBack > 0) {
    notes.push(
      `rolled back on the ${rolledBack} other worker${
        rolledBack === 1 ? "" : "s"
      }`,
    );
  }
  if (notThisLoad !== null) notes.push(`not this load's doing: ${notThisLoad}`);
  notes.push(
    action === "add" ? "it was not added" : "the model keeps its previous code",
  );
  return new WorkerCrashedError(
    `Cannot ${action} model '${name}': worker ${first.worker.id}${
      pid === null ? "" : ` (pid ${pid})`
    } died while loading it: ${how}${
      line === undefined ? "" : ` (last stderr line: ${JSON.stringify(line)})`
    }; ${notes.join("; ")}`,
    {
      cause: died[0]!.error,
      details: {
        model: name,
        cmd: action === "add" ? "addModel" : "updateModel",
        worker: first.worker.id,
        workers: ids,
        pid,
        code: exit?.code ?? null,
        signal: exit?.signal ?? null,
        reason: how,
        stderr: line ?? null,
        alsoLoading,
        notThisLoad,
        blamed,
      },
    },
  );
}

/** Loads a process completed: a death soon after is laid on them. */
interface LoadStep {
  /** The models loaded. */
  names: Set<string>;
  /** When it was sent. */
  sentAt: number;
  /** When its load answered. */
  doneAt: number;
  /**
   * A model command's load (an add, an update), not a restart's replay:
   * the command, one token for its loads on every worker.
   */
  command?: object;
}

/** A model suspected of killing workers soon after its load. */
interface Suspect {
  /** When it was last suspected. */
  at: number;
  /**
   * How long after its load the last death it is suspected of came, in
   * ms: a replay holds the worker about twice that after loading it alone
   * (a timer goes off after about as long each time), within the window.
   */
  since: number;
  /** Its strikes: deaths soon after its load with nothing else running. */
  strikes: LoadCrash[];
  /**
   * The other deaths laid on it (calls running, other models loaded or
   * loading): the last `MAX_SUSPICIONS`, with `running` set.
   */
  suspicions: LoadCrash[];
  /** How many deaths were laid on it, strikes included. */
  deaths: number;
  /**
   * Whether the next replay loads it alone and holds the worker: `false`
   * once it outlived a hold shorter than the window (a death laid on it
   * again sets it, and its next hold is the whole window).
   */
  held: boolean;
  /**
   * The process on which it outlived a hold shorter than the window (until
   * the next death laid on it): that process dying within the window, laid
   * on it again, sets `longHold`.
   */
  outlivedOn?: { worker: Worker; gen: number };
  /** Whether its next holds are the whole window (its delay varies). */
  longHold: boolean;
  /**
   * Once it outlived a short hold: when the load it outlived it with
   * leaves the window (its record lapses then).
   */
  until?: number;
  /** Its held replay under way: the worker held, and until when. */
  holding?: { worker: string; until: number };
  /**
   * The other models every death laid on it was laid on too (empty once
   * one was a strike): a quarantine of one of them clears it.
   */
  shared?: Set<string>;
  /**
   * Its last strike: the model command whose load it came after (none: a
   * replay's), and the worker. Another worker's death after that same
   * load is no second strike.
   */
  struckBy?: { command: object | undefined; worker: string };
}

/**
 * Whether a suspect's record has lapsed at `now`: no death for
 * `SUSPECT_MS`, or it outlived a short hold and that load left the window.
 */
function lapsed(s: Suspect, now: number): boolean {
  return now - s.at >= SUSPECT_MS ||
    (!s.held && s.until !== undefined && now > s.until);
}

/** The deaths other than strikes a suspect's record keeps (bounded). */
const MAX_SUSPICIONS = 4;

/**
 * What else was running on a process when it died soon after a model's
 * load: why the death was only a suspicion.
 */
function describeRunning(
  calls: number,
  loading: string[],
  loaded: string[],
): string {
  const parts: string[] = [];
  if (calls > 0) {
    parts.push(`while ${calls} call${calls === 1 ? "" : "s"} ran there`);
  }
  if (loading.length > 0) {
    parts.push(
      `while ${namesOf(loading)} ${
        loading.length === 1 ? "was" : "were"
      } loading`,
    );
  }
  if (loaded.length > 0) {
    parts.push(`with ${namesOf(loaded)} loaded there within the window too`);
  }
  // Only a load of its own under way there (an update racing the death).
  return parts.length === 0 ? "while a load ran there" : parts.join(", ");
}

/** `model 'a'`, `models 'a', 'b'`, `models 'a', 'b', 'c' and 2 more`. */
function namesOf(names: string[]): string {
  const shown = names.slice(0, 3).map((n) => `'${n}'`).join(", ");
  const more = names.length > 3 ? ` and ${names.length - 3} more` : "";
  return `model${names.length === 1 ? "" : "s"} ${shown}${more}`;
}

/** `twice`, `3 times`. */
function times(n: number): string {
  return n === 1 ? "once" : n === 2 ? "twice" : `${n} times`;
}

/** A suspect's deaths so far, as `ModelSuspicion.reason` words them. */
function describeSuspicion(window: number, s: Suspect): string {
  const listed = [
    ...s.suspicions,
    ...s.strikes.map((d) => ({
      ...d,
      running: "with no call or other load running there (a strike)",
    })),
  ];
  const shown = listed.length < s.deaths ? `the last ${listed.length}: ` : "";
  return `its worker died within ${window} ms of loading it ${
    times(s.deaths)
  } (${shown}${listed.map(describeDeath).join("; ")})`;
}

/** One death soon after a load, as a reason lists it. */
function describeDeath(d: LoadCrash): string {
  return `worker ${d.worker}${
    d.pid === null ? "" : ` (pid ${d.pid})`
  } ${d.reason} ${d.afterMs} ms after the load${
    d.running === undefined ? "" : `, ${d.running}`
  }${
    d.stderr === null ? "" : `, last stderr line: ${JSON.stringify(d.stderr)}`
  }`;
}

/**
 * Whether a replay's load of a model failed with the model's own error:
 * the server answered it (a `PythonError`, a `ModelLoadError`...) and its
 * connection is still open. Not a death, a timeout or a cancel: those fail
 * the restart, as a hang or a crash in the model's import must.
 */
function loadRefused(err: unknown, session: Session): boolean {
  if (session.isClosed) return false;
  if (err instanceof PythonError) return true;
  return err instanceof RemoteError;
}

/**
 * A quarantined model's `failedReason`: each death that counted, and the
 * ones before them it was only suspected of, with what else ran then.
 */
function describeLoadCrashes(
  window: number,
  strikes: LoadCrash[],
  suspicions: LoadCrash[],
  deaths: number,
): string {
  const alone = `${
    times(strikes.length)
  } with no call or other load running there (${
    strikes.map(describeDeath).join("; ")
  })`;
  const before = deaths - strikes.length;
  if (before <= 0) {
    return `its worker died within ${window} ms of loading it ${alone}`;
  }
  const listed = suspicions.length < before
    ? `the last ${suspicions.length}: `
    : "";
  return `its worker died within ${window} ms of loading it ${
    times(deaths)
  }: ${alone}, and ${times(before)} while other code ran there too (${listed}${
    suspicions.map(describeDeath).join("; ")
  })`;
}

/** The strikes that take a model out of service (`loadCrashWindow`). */
const MAX_STRIKES = 2;

/** The shortest hold of a worker after a suspected model's load (`#holdFor`). */
const MIN_HOLD_MS = 250;

/** How long a suspicion (and its strikes) lasts without a new one. */
const SUSPECT_MS = 600_000;

/** The model management commands: not calls a model's code runs for. */
const MODEL_COMMANDS: ReadonlySet<string> = new Set([
  "addModel",
  "updateModel",
  "removeModel",
  "initModel",
]);

/**
 * How many calls (model calls, evals, other commands that run code) were
 * running on a process when it died: its model commands left out (a
 * replay's load is the death's suspect, not a call).
 */
function modelCallsIn(exit: WorkerExit): number {
  const inFlight = exit.inFlight;
  if (inFlight === undefined) return 0;
  let n = inFlight.calls;
  for (const [name, count] of Object.entries(inFlight.byName)) {
    if (MODEL_COMMANDS.has(name)) n -= count;
  }
  return n;
}

/** How a process ended: `exited with code 7`, `killed by SIGSEGV`. */
function howItEnded(exit: WorkerExit): string {
  if (exit.signal !== null) return `killed by ${exit.signal}`;
  return exit.code === null ? exit.reason : `exited with code ${exit.code}`;
}

/**
 * Whether `session` stays open for `ms` (false: it closed first, the
 * process most likely died).
 */
function outlives(session: Session, ms: number): Promise<boolean> {
  if (session.isClosed) return Promise.resolve(false);
  return new Promise((resolve) => {
    const timer = setTimeoutOrNever(() => resolve(true), ms);
    session.closed.then(() => {
      if (timer !== undefined) clearTimeout(timer);
      resolve(false);
    });
  });
}

/**
 * Why a worker's death under a load is not that load's doing, in words
 * (`null`: it may well be, or nothing says otherwise): calls of models were
 * running there, or it was killed by SIGKILL from outside the host (`kill
 * -9`, the OOM killer) or stopped from outside (SIGTERM, SIGINT, SIGHUP).
 * Such a load is tried once more once the worker is
 * back (`Pool.addModel`, `Pool.updateModel`). A death laid on other
 * models' loads just before (`details.blamed`) is decided once the worker
 * is back: retried when one of them was taken out of service meanwhile.
 */
function notThisLoad(exit: WorkerExit | undefined): string | null {
  if (exit === undefined) return null;
  const calls = modelCallsIn(exit);
  if (calls > 0) {
    return `${calls} call${calls === 1 ? " was" : "s were"} running there`;
  }
  // The host's own kills say why in their reason; this one came from outside.
  if (exit.reason === "killed by SIGKILL") {
    return "it was killed by SIGKILL from outside (kill -9, the OOM killer)";
  }
  if (exit.reason === `killed by SIGKILL${OUT_OF_MEMORY}`) {
    return "it was killed by the kernel's OOM killer (out of memory)";
  }
  // SIGTERM, SIGINT, SIGHUP (kill, earlyoom, a closed terminal): the server
  // stops cleanly (code 128 + the signal's number; 0 from a server before
  // that) or dies of it. The host's own stops and kills say why in their
  // reason instead. An import calling os._exit(0) (or 143) looks the same:
  // tried once more, it fails then.
  const own = exit.signal !== null
    ? `killed by ${exit.signal}`
    : `exited with code ${exit.code}`;
  if (exit.reason === own && stoppedFromOutside(exit)) {
    return `it was stopped from outside (${
      exit.signal ?? `exit code ${exit.code}`
    }: kill, earlyoom, a closed terminal)`;
  }
  return null;
}

/**
 * Whether a worker's process was stopped by a signal that comes from
 * outside, not asked by the host: the server stops cleanly on SIGTERM and
 * SIGINT (exit code 143 or 130, 128 + the signal's number; 0 from a server
 * of an older protocol, which a crash never gives), or dies of SIGTERM,
 * SIGINT or SIGHUP (before its handlers are set, or a wrapper's). A model
 * does not stop its worker so (`os._exit(0)` from a thread would, and
 * escapes `loadCrashWindow`: the restart policy bounds it); `kill`,
 * `pkill`, earlyoom (SIGTERM before SIGKILL) and a closed terminal do.
 */
function stoppedFromOutside(exit: WorkerExit): boolean {
  return exit.code === 0 || exit.code === 130 || exit.code === 143 ||
    (exit.signal !== null && OUTSIDE_SIGNALS.has(exit.signal));
}

/** The signals a worker's process gets from outside, not from a fault. */
const OUTSIDE_SIGNALS: ReadonlySet<string> = new Set([
  "SIGTERM",
  "SIGINT",
  "SIGHUP",
]);

/** The last non-blank line of a server's stderr tail, at most 240 characters. */
function lastLine(tail: string): string | undefined {
  const lines = tail.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]!.trim();
    if (line !== "") {
      return line.length > 240 ? `${line.slice(0, 240)}...` : line;
    }
  }
  return undefined;
}

/**
 * The lock key of a model's commands (`ModelRegistry.forModel`): a
 * version's internal name (`name@label`) locks its model's `name`, as does
 * a model whose own name holds an `@` (it may clash with such a version).
 */
function modelLockKey(name: string): string {
  const at = typeof name === "string" ? name.lastIndexOf("@") : -1;
  return at < 0 ? name : name.slice(0, at);
}

/** A slot a model may be placed on: not one a resize is removing. */
function live(w: Worker): boolean {
  return w.state !== "draining" && w.state !== "stopped";
}

/** A slot that counts towards a placed model's `workers`: not a `failed` one. */
function up(w: Worker): boolean {
  return w.state !== "failed";
}

/**
 * How many workers a load asks for a snapshot (the first ones): a second,
 * so that the first dying during the load does not leave the model without
 * one (its replays would then read the files, helpers included), without
 * every worker sending the model's code back.
 */
const SNAPSHOT_ASKED = 2;

/**
 * What a server's `snapshot` said a model was loaded with (protocol §6): a
 * file model's `source`, and the `helpers` (`{module, file, source}`) of
 * the models directory it imported.
 */
interface Snapshot {
  source?: string;
  helpers?: unknown[];
}

/**
 * The arguments of `addModel`/`updateModel`: a load asks the first two servers (`ask`)
 * for the code it is loaded with (`snapshot`), and a replay or a rollback
 * sends that code back: a file model's source with the file's name, and the
 * helpers (protocol §6).
 */
function loadArgs(
  name: string,
  fullSpec: ModelSpec,
  snapshot?: Snapshot,
  ask = false,
): Record<string, unknown> {
  // The model's call timeout, placement and version label are the pool's
  // business (host-only): a version is known to the server by its name.
  const {
    timeout: _timeout,
    workers: _workers,
    version: _version,
    ...spec
  } = fullSpec;
  if (snapshot === undefined) {
    return ask ? { name, ...spec, snapshot: true } : { name, ...spec };
  }
  const args: Record<string, unknown> = { name, ...spec };
  if (
    spec.file !== undefined && spec.source === undefined &&
    snapshot.source !== undefined
  ) {
    args.source = snapshot.source;
  }
  if (snapshot.helpers !== undefined) args.helpers = snapshot.helpers;
  return args;
}

/**
 * `first` (the reply a model command answers with) with the `closeWarning`
 * of `other` (another worker's reply) when `first` has none: a `close()`
 * that raised or overran on any worker is told, not only on the first.
 */
function withCloseWarning(first: unknown, other: unknown): unknown {
  if (first === null || typeof first !== "object" || "closeWarning" in first) {
    return first;
  }
  const warning = (other as { closeWarning?: unknown } | null)?.closeWarning;
  return typeof warning === "string"
    ? { ...first, closeWarning: warning }
    : first;
}

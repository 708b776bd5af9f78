/**
 * Where a model with a `workers` count runs (docs/models.md, "Placement"):
 * its slots, kept by the model registry and read live by the router.
 *
 * @module
 */
import { ModelUnavailableError } from "./errors.ts";
import type { Worker } from "./worker.ts";

/**
 * A placed model: the slots that load it. The registry changes `workers`
 * in place (a move, a resize, an update), so calls queued for the model
 * see its slots as they are when they leave the queue.
 */
export interface ModelPlacement {
  /** The model's name (a version's: `name@label`). */
  readonly name: string;
  /** A version's label (docs/models.md, "Versions"); absent: no versions. */
  readonly label?: string;
  /** How many slots it wants (`ModelSpec.workers`); more than the pool has: all of them. */
  count: number;
  /** Its slots, in the order they got it. */
  readonly workers: Worker[];
  /** Round-robin position among `workers` (router-owned). */
  rr: number;
  /**
   * Moves in progress off a slot that failed (`ModelRegistry.relocate`):
   * while above 0, its calls wait for the new slot instead of failing.
   */
  moving?: number;
  /**
   * When it was moved off slots that failed for good with it implicated
   * (its calls in flight, or its load under way, when their last process
   * died), and from which slot: the last `maxRelocations + 1` within the
   * window at most.
   */
  relocations?: Array<{ at: number; worker: string }>;
  /**
   * Why it was taken out of service (it crashed one slot too many): it is
   * on no slot, and its calls fail with `ModelUnavailableError` until an
   * update. Absent: in service.
   */
  failed?: string;
  /** Why, as data, beside `failed`: the error's `details` carry it. */
  outOfService?: OutOfService | LoadCrashes | ReplayLoadFailure;
  /**
   * Not a placed model: an unplaced one taken out of service because it
   * killed its workers soon after its load (`PoolOptions.loadCrashWindow`).
   * This record only holds that state (no slots); an update drops it.
   */
  quarantined?: boolean;
}

/**
 * One strike of a model that killed a worker soon after its load
 * (`PoolOptions.loadCrashWindow`): which process, how it ended and when.
 */
export interface LoadCrash {
  /** The slot. */
  worker: string;
  /** Its process's pid, or `null`. */
  pid: number | null;
  /** How it ended (its exit's `reason`: the exit code or signal). */
  reason: string;
  /** How long after the model's load completed there, in ms. */
  afterMs: number;
  /** The last line its server wrote to stderr, or `null`. */
  stderr: string | null;
  /**
   * What else ran there then (`while 4 calls ran there`, `with model
   * 'other' loaded there within the window too`): why the death was only
   * a suspicion, not a strike. Absent on a strike.
   */
  running?: string;
}

/**
 * Why a model was quarantined, as data (`ModelUnavailableError.details`
 * beside `model` and `reason`): the deaths that counted against it.
 */
export interface LoadCrashes {
  /** Its strikes, oldest first. */
  loadCrashes: LoadCrash[];
  /** The window they were counted in, in ms (`loadCrashWindow`). */
  loadCrashWindow: number;
  /** How the last one ended, or `null`. */
  lastExit: string | null;
  /**
   * The deaths laid on it that were not strikes (calls running, other
   * models loaded there), each with `running`: the last 4, oldest first.
   * Absent when there were none.
   */
  suspectedCrashes?: LoadCrash[];
}

/**
 * Why a model was taken out of service when its load failed on a restarted
 * worker (its import raised, a file it reads is gone, a package it imports
 * changed on disk), as data (`ModelUnavailableError.details` beside
 * `model` and `reason`).
 */
export interface ReplayLoadFailure {
  /** The restarted worker whose replay could not load it. */
  loadFailedOn: string;
  /** The load's error message. */
  loadError: string;
  /** Its Python exception type (`FileNotFoundError`), when it had one. */
  exception?: string;
}

/**
 * Why a placed model is out of service, as data: what
 * `ModelUnavailableError.details` carries beside `model` and `reason`, so
 * that a caller (the gateway) can word it in its own settings.
 */
export interface OutOfService {
  /** The slots it crashed within the window, oldest first (the last decided it). */
  crashed: string[];
  /** The window the crashes were counted in, in ms (`placement.relocationWindow`). */
  relocationWindow: number;
  /** The bound they went past (`placement.maxRelocations`). */
  maxRelocations: number;
  /** How the last slot's last process ended (its `lastExit.reason`), or `null`. */
  lastExit: string | null;
}

/**
 * A placed model as its errors name it: `'name'`, or a version by its name
 * and label (`'scorer' version '2'`, not the workers' `scorer@2`), with the
 * `details` fields that say the same (`model`, and `version` for a version).
 */
export function placedModel(
  p: Pick<ModelPlacement, "name" | "label">,
): { who: string; details: { model: string; version?: string } } {
  const label = p.label;
  if (label === undefined) {
    return { who: `'${p.name}'`, details: { model: p.name } };
  }
  const name = p.name.slice(0, p.name.length - label.length - 1);
  return {
    who: `'${name}' version '${label}'`,
    details: { model: name, version: label },
  };
}

/**
 * The error of a placed model taken out of service: of a call of command
 * `cmd` (routed), else of its `initModel`. It names how to load it again,
 * a version by its name and label (its `PUT` route is its own).
 */
export function outOfService(
  p: Pick<ModelPlacement, "name" | "label" | "failed" | "outOfService">,
  cmd?: string,
): ModelUnavailableError {
  const reason = p.failed ?? "";
  const label = p.label;
  const name = label === undefined
    ? p.name
    : p.name.slice(0, p.name.length - label.length - 1);
  const who = label === undefined
    ? `'${name}'`
    : `'${name}' version '${label}'`;
  const how = label === undefined
    ? `pool.updateModel, PUT /v1/models/${name}`
    : `pool.updateModel with version '${label}', PUT /v1/models/${name}/versions/${label}`;
  return new ModelUnavailableError(
    `${
      cmd === undefined
        ? `Cannot init model ${who}: it`
        : `Cannot route call ${cmd}: model ${who}`
    } is out of service: ${reason}; update it (${how}) to load it again`,
    {
      details: {
        model: name,
        ...(label === undefined ? {} : { version: label }),
        reason,
        cmd: cmd ?? "initModel",
        ...p.outOfService,
      },
    },
  );
}

/** A slot that can take a model command now. */
export function loadable(w: Worker): boolean {
  return w.state === "ready" && w.session !== undefined &&
    !w.session.isClosed;
}

/**
 * The `n` slots of `candidates` a model goes to: ready ones first, then
 * those holding the fewest placed models (`load`), then slot order. Stable
 * and deterministic: the same pool state gives the same slots.
 */
export function chooseSlots(
  candidates: readonly Worker[],
  n: number,
  load: (w: Worker) => number,
): Worker[] {
  return candidates
    .map((w, at) => ({ w, at, ready: loadable(w) ? 0 : 1, load: load(w) }))
    .sort((a, b) => a.ready - b.ready || a.load - b.load || a.at - b.at)
    .slice(0, n)
    .map(({ w }) => w);
}

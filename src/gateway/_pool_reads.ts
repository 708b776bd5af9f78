/**
 * Internals: the pool reads of the routes that answer about one model, or
 * about the workers alone. A pool with `modelStatus` and `workerStatus` (the
 * library's `Pool`) answers them at a cost that does not grow with the
 * number of models; another falls back to its whole `status()`. A readiness
 * probe per model per second on a deployment of thousands of models would
 * otherwise list them all on each probe.
 *
 * @module
 */
import type {
  GatewayPool,
  GatewayPoolStatus,
  GatewayWorkerStatus,
} from "./gateway_pool.ts";

/** The entries the pool's `status().models` has under `name` (each version of a model with versions). */
export function modelEntries(
  pool: Pick<GatewayPool, "status" | "modelStatus">,
  name: string,
): GatewayPoolStatus["models"] {
  return pool.modelStatus !== undefined
    ? pool.modelStatus(name)
    : pool.status().models.filter((m) => m.name === name);
}

/** The pool's workers, as `status().workers` lists them. */
export function workersOf(
  pool: Pick<GatewayPool, "status" | "workerStatus">,
): readonly GatewayWorkerStatus[] {
  return pool.workerStatus !== undefined
    ? pool.workerStatus()
    : pool.status().workers;
}

/**
 * The part of the pool's status that tells of model `name`: every worker,
 * and that model's entries.
 */
export function statusOf(
  pool: Pick<GatewayPool, "status" | "modelStatus" | "workerStatus">,
  name: string,
): GatewayPoolStatus {
  if (pool.modelStatus === undefined || pool.workerStatus === undefined) {
    const status = pool.status();
    return {
      workers: status.workers,
      models: status.models.filter((m) => m.name === name),
    };
  }
  return { workers: pool.workerStatus(), models: pool.modelStatus(name) };
}

/**
 * Whether `key` (a model's name, or a version's `name@label`) is a model
 * the pool has now; `false` for a pool without `modelStatus` (no lookup
 * that stays cheap with thousands of models).
 */
export function hasModel(
  pool: Pick<GatewayPool, "modelStatus">,
  key: string,
): boolean {
  if (pool.modelStatus === undefined) return false;
  if (pool.modelStatus(key).length > 0) return true;
  // A version: listed under its model's name (labels hold no `@`).
  const at = key.lastIndexOf("@");
  if (at <= 0) return false;
  const label = key.slice(at + 1);
  return pool.modelStatus(key.slice(0, at)).some((m) => m.version === label);
}

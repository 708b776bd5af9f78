/**
 * What a tenant's token (a token file's `<token> tenant` line) is shown of
 * the operator's set-up, where an operator's token is shown more: the
 * pool's queue depth and limits in a 429, the workers a model runs on (its
 * `/v2` config's `count`, its description's `workers` and `slots`). A
 * tenant needs none of it to call a model, and each tells how busy the
 * other tenants keep the gateway, or how it is deployed; as with
 * `--debug`, which shows a tenant no details. Operators' tokens get what
 * they got before. (The 405's flags and `/openapi.json`'s eval and
 * management routes: `app.ts`, which knows its routes.) Internal.
 *
 * @module
 */
import {
  ModelUnavailableError,
  NoWorkerError,
  OverloadedError,
  PluginError,
  TimeoutError,
  WorkerCrashedError,
} from "../errors.ts";
import { tenantTimeout } from "./_timeout_explained.ts";
import type { ModelConfig } from "./_inference_model_config.ts";
import type { ModelView } from "./_model_view.ts";

/**
 * `err` as a tenant reads it: the pool's own queue-full 429 (its
 * `details.maxQueue`) without the queue's depth, `maxQueue` and
 * `maxInFlightPerWorker` (its `Retry-After` kept); a worker's crash
 * (502) without the worker, its pid and exit, and the calls it was running
 * (the other tenants' calls, by model: their activity); a model out of
 * service (503) without the workers it crashed and their exits; a placed
 * model's 503 for want of a ready worker without its workers and their
 * states; a timeout without the plugin that held the call and the
 * operator's settings (`tenantTimeout`); a plugin's failure (a hook that
 * threw a bug's error, or did not settle within `hookTimeout`) without
 * the plugin, its hook and what it said; any other error as it is (a
 * plugin's quota, a `PyProxyError` it throws on purpose, answers its own
 * words).
 *
 * @example
 * ```ts
 * import { OverloadedError } from "../errors.ts";
 * import { tenantError } from "./_tenant_view.ts";
 * const full = new OverloadedError("Cannot accept call echo: 1024 calls queued (maxQueue 1024) ...", { details: { queue: 1024, maxQueue: 1024 } });
 * console.log((tenantError(full) as Error).message); // "Cannot accept call: the model's queue is full; retry later"
 * ```
 */
export function tenantError(err: unknown): unknown {
  if (err instanceof WorkerCrashedError) return tenantCrash(err);
  if (err instanceof TimeoutError) return tenantTimeout(err);
  if (err instanceof PluginError) return tenantPluginError(err);
  if (err instanceof NoWorkerError && err.details.workers !== undefined) {
    return tenantNoWorker(err);
  }
  if (err instanceof ModelUnavailableError) {
    const { model, version } = err.details;
    if (typeof model !== "string") return err;
    const versioned = typeof version === "string";
    // Out of service for a load that failed on a restart, not a crash.
    const why = err.details.loadFailedOn === undefined
      ? TENANT_FAILED_REASON
      : TENANT_LOAD_FAILED_REASON;
    return new ModelUnavailableError(
      `Cannot call model '${model}'${
        versioned ? ` version '${version}'` : ""
      }: it is out of service (${why}) until the operator loads it again`,
      { details: versioned ? { model, version } : { model } },
    );
  }
  if (
    !(err instanceof OverloadedError) || err.details.maxQueue === undefined
  ) return err;
  const retryAfterMs = err.details.retryAfterMs;
  return new OverloadedError(
    "Cannot accept call: the model's queue is full; retry later",
    retryAfterMs === undefined ? {} : { details: { retryAfterMs } },
  );
}

/**
 * A placed model's call with no ready worker (`NoWorkerError` with its
 * `workers`) as a tenant reads it: `(it is placed on w2 failed)` and the
 * workers' ids, states and failures left out.
 */
function tenantNoWorker(err: NoWorkerError): NoWorkerError {
  const { model, version, started, retryAfterMs } = err.details;
  const who = typeof model !== "string"
    ? "the model"
    : typeof version === "string"
    ? `model '${model}' version '${version}'`
    : `model '${model}'`;
  return new NoWorkerError(
    `Cannot route call: no worker of ${who} is ready`,
    {
      details: {
        ...(typeof model === "string" ? { model } : {}),
        ...(typeof version === "string" ? { version } : {}),
        ...(started === undefined ? {} : { started }),
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      },
    },
  );
}

/**
 * A plugin's failure as a tenant reads it: the gateway failed it, or took
 * too long, and the operator's log has the rest (the app logs every 500
 * with its request id). Its message named the operator's plugin and hook
 * and held what the hook's error said (a host, a query).
 */
function tenantPluginError(err: PluginError): PluginError {
  const late = / did not settle within (\d+) ms/.exec(err.message);
  return new PluginError(
    late === null
      ? "Cannot complete call: the gateway failed it (an internal error, in the operator's log)"
      : `Cannot complete call: the gateway did not finish its checks within ${
        late[1]
      } ms (an internal error, in the operator's log)`,
  );
}

/** A worker's crash as a tenant reads it: which call failed, no more. */
function tenantCrash(err: WorkerCrashedError): WorkerCrashedError {
  const { cmd, call, model, version } = err.details;
  if (typeof cmd !== "string" || typeof call !== "string") {
    return new WorkerCrashedError(
      "Cannot complete call: the worker running it died",
    );
  }
  const verb = cmd === "executeStream" ? "stream" : "run";
  const what = typeof version === "string" && typeof model === "string"
    ? `${verb} model '${model}' version '${version}'`
    : call === cmd
    ? `complete call ${cmd}`
    : `${verb} model '${call}'`;
  return new WorkerCrashedError(
    `Cannot ${what}: the worker running it died before it completed`,
  );
}

/**
 * A model's `/v2` configuration as a tenant reads it: its instance group
 * without `count` (how many workers run it).
 */
export function tenantModelConfig(config: ModelConfig): ModelConfig {
  return {
    ...config,
    instance_group: config.instance_group.map(({ count: _, ...group }) =>
      group
    ),
  };
}

/**
 * A model's description as a tenant reads it: without `workers` and
 * `slots` (how many workers hold it, and which), nor the operator's
 * diagnostics of its workers (`suspected`: the deaths laid on it and the
 * worker holding a replay; `threaded`: why), and with a `failedReason`
 * (out of service) that names no worker nor exit.
 */
export function tenantModelView(view: ModelView): ModelView {
  if (
    view.workers === undefined && view.slots === undefined &&
    view.suspected === undefined && view.threaded === undefined &&
    view.failedReason === undefined
  ) return view;
  const {
    workers: _w,
    slots: _s,
    suspected: _x,
    threaded: _t,
    failedReason,
    ...rest
  } = view;
  return failedReason === undefined ? rest : {
    ...rest,
    failedReason: tenantFailedReason(failedReason),
  };
}

/**
 * A model's `failedReason` as a tenant reads it: why, in a few words, no
 * worker, exit, path nor setting ({@linkcode TENANT_FAILED_REASON}, or
 * {@linkcode TENANT_LOAD_FAILED_REASON} for a load that failed on a
 * restart).
 *
 * @example
 * ```ts
 * import { tenantFailedReason } from "./_tenant_view.ts";
 * console.log(tenantFailedReason("its load failed on restarted worker w1: OSError: ...")); // "its code no longer loads"
 * ```
 */
export function tenantFailedReason(failedReason: string): string {
  return failedReason.startsWith(LOAD_FAILED)
    ? TENANT_LOAD_FAILED_REASON
    : TENANT_FAILED_REASON;
}

/** How the reason of a load that failed on a restart starts (model_registry.ts). */
const LOAD_FAILED = "its load failed on restarted worker ";

/**
 * Why a model whose load failed on a restarted worker is out of service,
 * as a tenant reads it (not the load's error: paths, the worker).
 */
export const TENANT_LOAD_FAILED_REASON = "its code no longer loads";

/**
 * Why a model is out of service, as a tenant reads it (its description's
 * `failedReason`, and TF Serving's `model_version_status` `error_message`
 * after `out of service: `): no worker, exit nor setting.
 */
export const TENANT_FAILED_REASON = "it crashed the workers it ran on";

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
import { OverloadedError } from "../errors.ts";
import type { ModelConfig } from "./_inference_model_config.ts";
import type { ModelView } from "./_model_view.ts";

/**
 * `err` as a tenant reads it: the pool's own queue-full 429 (its
 * `details.maxQueue`) without the queue's depth, `maxQueue` and
 * `maxInFlightPerWorker` (its `Retry-After` kept); any other error as it
 * is (a plugin's quota answers its own words).
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
 * `slots` (how many workers hold it, and which).
 */
export function tenantModelView(view: ModelView): ModelView {
  if (view.workers === undefined && view.slots === undefined) return view;
  const { workers: _w, slots: _s, ...rest } = view;
  return rest;
}

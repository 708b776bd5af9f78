/**
 * A model's own call timeout: the default of its calls that give none,
 * set by whoever loads it (`ModelSpec.timeout`: `addModel`, `updateModel`,
 * the gateway's `models[].timeout` and `PUT` body) or by its author (the
 * class attribute `timeout_ms`, which the server reports as the
 * description's `timeoutMs`, protocol §6). The loader's wins: the operator
 * knows the deployment (hardware, load) the author guessed at. Either
 * replaces the pool's `requestTimeout` (the gateway's
 * `limits.requestTimeout`) for that model; a call's own `timeout` replaces
 * it in turn. Host-only: the server enforces nothing.
 *
 * @module
 */

/** The largest per-model timeout, in ms: a timer's range (~24.8 days). */
export const MAX_MODEL_TIMEOUT = 2 ** 31 - 1;

/** What a per-model timeout must be, for error messages. */
export const MODEL_TIMEOUT_SHAPE =
  `an integer number of ms from 1 to ${MAX_MODEL_TIMEOUT}`;

/**
 * Whether `value` can be a model's `timeout` in the library: an integer
 * from 1 to 2^31 − 1, or `Infinity` (no timeout for this model, whatever
 * the pool's `requestTimeout`).
 */
export function isModelTimeout(value: unknown): value is number {
  return value === Infinity ||
    (Number.isInteger(value) && (value as number) >= 1 &&
      (value as number) <= MAX_MODEL_TIMEOUT);
}

/**
 * The timeout a model's calls get when they give none, from the spec it was
 * loaded with and the description its server answered: the spec's
 * `timeout`, else the class's `timeoutMs`, else `undefined` (the pool's or
 * gateway's default applies).
 */
export function modelTimeoutOf(
  spec: { timeout?: number } | undefined,
  description: unknown,
): number | undefined {
  if (spec?.timeout !== undefined) return spec.timeout;
  const declared = (description as { timeoutMs?: unknown } | null | undefined)
    ?.timeoutMs;
  return declared !== Infinity && isModelTimeout(declared)
    ? declared
    : undefined;
}

/** The largest `close_timeout_ms` a model may declare, in ms (protocol §6). */
export const MAX_CLOSE_TIMEOUT_MS = 60_000;

/**
 * A model's `close_timeout_ms` from the description its server answered
 * (`closeTimeoutMs`, present for a model with a `close()`), else
 * `undefined`: a remove or update waits up to twice this for the version's
 * calls in flight and then its `close()`.
 */
export function closeTimeoutOf(description: unknown): number | undefined {
  const declared =
    (description as { closeTimeoutMs?: unknown } | null | undefined)
      ?.closeTimeoutMs;
  return Number.isInteger(declared) && (declared as number) >= 1 &&
      (declared as number) <= MAX_CLOSE_TIMEOUT_MS
    ? declared as number
    : undefined;
}

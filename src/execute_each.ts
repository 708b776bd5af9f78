/**
 * `executeEach`: runs one call per input of an iterable or async iterable
 * with a bounded number pending, yielding each input with its result or its
 * error (`Pool.executeEach`, docs/performance.md "Scoring many rows").
 *
 * @module
 */
import { CancelledError, ConfigError } from "./errors.ts";

/**
 * Options of {@linkcode executeEach} beside its call's own.
 *
 * @example
 * ```ts
 * import type { EachOptions } from "@pyproxy/pyproxy";
 * const options: EachOptions = { concurrency: 256, ordered: false };
 * console.log(options.concurrency);
 * ```
 */
export interface EachOptions {
  /**
   * Calls pending at most (made and not yet taken by the loop), an
   * integer of at least 1; the source is read only as fast as results are
   * taken. `Pool`'s
   * default: its workers × `maxInFlightPerWorker`, × the model's
   * `batch_size` for a model that batches, at most 8192; more than it
   * takes without refusing (`maxQueue` more) is lowered to that.
   */
  concurrency?: number;
  /**
   * `true`: results come in the inputs' order (a slow call holds those after
   * it, up to `concurrency`); `false`: as they settle.
   * @default {true}
   */
  ordered?: boolean;
  /**
   * Ends the run: the pending calls are cancelled and the iteration throws
   * a `CancelledError` (its `cause`: the signal's reason).
   */
  signal?: AbortSignal;
}

/**
 * One input and how its call ended, as {@linkcode executeEach} yields it.
 * `index` counts the inputs from 0.
 *
 * @example
 * ```ts
 * import type { EachResult } from "@pyproxy/pyproxy";
 * const r: EachResult<{ id: number }, number> = { index: 0, input: { id: 7 }, ok: true, result: 0.5 };
 * if (r.ok) console.log(r.input.id, r.result);
 * ```
 */
export type EachResult<I, T> =
  | { index: number; input: I; ok: true; result: T }
  | { index: number; input: I; ok: false; error: unknown };

/**
 * Runs `call(input, signal)` for each input of `inputs` with at most
 * `concurrency` pending, yielding `{ index, input, ok, result | error }`
 * for each, in the inputs' order unless `ordered: false`. A call's failure
 * is its item's `error`, never thrown. When the loop ends early (`break`, a
 * throw) or `signal` aborts, the pending calls are aborted through the
 * `signal` each got and awaited, and the source's `return()` is called: no
 * call is left running and no rejection unhandled. The source's own error
 * is thrown, after the same clean-up. A failure for which `endsRun`
 * returns true (`Pool.executeEach`: the pool closed, no worker left, the model
 * out of service or gone) ends the run: no more
 * inputs are read, the pending calls' items come, then it is thrown.
 *
 * @example
 * ```ts
 * import { executeEach } from "@pyproxy/pyproxy";
 * const square = (x: number) => Promise.resolve(x * x);
 * for await (const r of executeEach([1, 2, 3], square, { concurrency: 2 })) {
 *   if (r.ok) console.log(r.index, r.result); // 0 1, 1 4, 2 9
 * }
 * ```
 */
export async function* executeEach<I, T>(
  inputs: Iterable<I> | AsyncIterable<I>,
  call: (input: I, signal: AbortSignal) => Promise<T>,
  options: EachOptions = {},
  endsRun?: (error: unknown) => boolean,
): AsyncGenerator<EachResult<I, T>, void, undefined> {
  const { concurrency = 64, ordered = true, signal } = options;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new ConfigError(
      `Cannot executeEach: concurrency must be an integer >= 1, got ${
        String(concurrency)
      }`,
      { details: { field: "concurrency" } },
    );
  }
  const iterator = Symbol.asyncIterator in Object(inputs)
    ? (inputs as AsyncIterable<I>)[Symbol.asyncIterator]()
    : (inputs as Iterable<I>)[Symbol.iterator]();
  // Each call's own controller, while it is pending: one signal shared by
  // every pending call made each call's listener cost O(pending) to add and
  // to remove in Deno's EventTarget (55 µs at 4096 pending, the default
  // window of a batching model: 4x slower).
  const running = new Set<AbortController>();
  let stopped = false;
  const stopAll = () => {
    stopped = true;
    for (const c of running) c.abort(signal?.reason);
  };
  let wake: (() => void) | undefined;
  const wakeUp = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const abort = () => {
    stopAll();
    wakeUp();
  };
  signal?.addEventListener("abort", abort, { once: true });
  // Ordered: settled results by index, taken from `next`; else in the order they settled.
  const byIndex = new Map<number, EachResult<I, T>>();
  const settled: EachResult<I, T>[] = [];
  let settledHead = 0;
  let started = 0;
  let taken = 0;
  let pull: Promise<IteratorResult<I>> | undefined;
  let pulled: IteratorResult<I> | undefined;
  let pullError: { error: unknown } | undefined;
  let exhausted = false;
  let ended: { error: unknown } | undefined;
  const onSettled = (result: EachResult<I, T>) => {
    if (ordered) byIndex.set(result.index, result);
    else settled.push(result);
    wakeUp();
  };
  const start = (input: I) => {
    const index = started++;
    const controller = new AbortController();
    if (stopped) controller.abort(signal?.reason);
    running.add(controller);
    let promise: Promise<T>;
    try {
      promise = call(input, controller.signal);
    } catch (error) {
      promise = Promise.reject(error);
    }
    // A handler at once: no rejection waits unhandled.
    Promise.resolve(promise).then(
      (result) => {
        running.delete(controller);
        onSettled({ index, input, ok: true, result });
      },
      (error) => {
        running.delete(controller);
        // A failure every later call would have too (the pool closed):
        // no more inputs are read, the pending ones come, then it is thrown.
        if (ended === undefined && endsRun?.(error) === true) {
          ended = { error };
        }
        onSettled({ index, input, ok: false, error });
      },
    );
  };
  const take = (): EachResult<I, T> | undefined => {
    if (ordered) {
      const result = byIndex.get(taken);
      if (result !== undefined) byIndex.delete(taken);
      return result;
    }
    if (settledHead === settled.length) return undefined;
    const result = settled[settledHead];
    settled[settledHead++] = undefined as unknown as EachResult<I, T>;
    if (settledHead === settled.length) settled.length = settledHead = 0;
    return result;
  };
  const cancelled = () =>
    new CancelledError(
      `executeEach was aborted after ${taken} results: its ${
        started - taken
      } pending calls were cancelled`,
      { cause: signal?.reason },
    );
  try {
    while (true) {
      if (signal?.aborted) throw cancelled();
      // Read the source while there is room, without waiting on it when a
      // result is ready (a slow source does not hold results back).
      while (
        !exhausted && ended === undefined && started - taken < concurrency
      ) {
        if (pullError !== undefined) throw pullError.error;
        if (pulled === undefined) {
          if (pull !== undefined) break; // still coming
          const next = iterator.next();
          if (typeof (next as { then?: unknown }).then === "function") {
            const coming = Promise.resolve(next);
            pull = coming;
            coming.then(
              (r) => {
                pull = undefined;
                pulled = r;
                wakeUp();
              },
              (error) => {
                pull = undefined;
                pullError = { error };
                wakeUp();
              },
            );
            break;
          }
          pulled = next as IteratorResult<I>;
        }
        const next = pulled;
        pulled = undefined;
        if (next.done) {
          exhausted = true;
          break;
        }
        start(next.value);
      }
      if (pullError !== undefined) throw pullError.error;
      const result = take();
      if (result !== undefined) {
        taken++;
        yield result;
        continue;
      }
      if (taken === started) {
        if (ended !== undefined) throw ended.error;
        if (exhausted) return;
      }
      await new Promise<void>((resolve) => wake = resolve);
    }
  } finally {
    signal?.removeEventListener("abort", abort);
    // `running`: the calls not settled yet.
    if (running.size > 0) {
      stopAll();
      while (running.size > 0) {
        await new Promise<void>((resolve) => wake = resolve);
      }
    }
    if (!exhausted && pullError === undefined) {
      // A next() still pending: return() waits behind it in an async
      // generator; not awaited then, so a silent source cannot hold us.
      const closing = pull !== undefined;
      try {
        const done = iterator.return?.();
        if (done instanceof Promise) {
          if (closing) done.catch(() => {});
          else await done;
        }
      } catch {
        // The source's own clean-up failed: the run's outcome stands.
      }
    }
  }
}

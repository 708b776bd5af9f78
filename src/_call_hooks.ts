/**
 * Internals of the pool: the call hooks of its plugins
 * ({@linkcode Plugin.onCall}, {@linkcode Plugin.onSettle}) around each model
 * call. A pool whose plugins have neither gets no `CallHooks` at all
 * ({@linkcode CallHooks.of} is `undefined`): its calls pay nothing.
 *
 * @module
 */
import {
  CancelledError,
  PluginError,
  ShuttingDownError,
  TimeoutError,
} from "./errors.ts";
import type {
  CallAnswer,
  CallOutcome,
  ModelCall,
  Plugin,
  PluginContext,
} from "./plugin.ts";
import { isThenable } from "./_thenable.ts";
import { settleWithin } from "./_settle_within.ts";
import { messageHookError, pluginError } from "./_plugin_error.ts";
import { setTimeoutOrNever } from "./_timer.ts";

/** Options of {@linkcode CallHooks}. */
export interface CallHooksOptions {
  /** How long an asynchronous hook may take, in ms (`PluginHostOptions.hookTimeout`). */
  hookTimeout: number;
  /** The context the hooks get (read at each call: the pool makes it after its plugins). */
  context: () => PluginContext;
  /** Reports an `onSettle` that threw (as a lifecycle hook's error is). */
  onError: (error: PluginError, plugin: string, hook: string) => void;
}

/** An `onCall`'s answer, and who gave it. */
interface Answered {
  answer: CallAnswer;
  plugin: string;
}

/** What of a call's own options bounds its wait for an asynchronous `onCall`. */
export interface CallBounds {
  /** Its `signal`. */
  signal?: AbortSignal;
  /** Called each time it is sent to a worker. */
  onSend?: (worker: string) => void;
}

/** Where a call is, from its `onCall`s to its end. */
interface Run {
  /** `performance.now()` when it was made. */
  start: number;
  /**
   * Settled before its asynchronous `onCall`s were done (its timeout, its
   * signal, the pool's close): what they do next is ignored.
   */
  cut: boolean;
  /** The plugin whose asynchronous `onCall` it waits for. */
  waitingOn?: string;
  /** That hook's `hookTimeout` timer. */
  timer?: ReturnType<typeof setTimeout> | undefined;
  /** Times it was sent to a worker. */
  attempts: number;
  /** The last worker it was sent to. */
  worker?: string;
  /** The plugin whose `onCall` answered it. */
  answeredBy?: string;
}

/** An error an `onCall` threw, with who threw it. */
class Refused {
  constructor(readonly error: Error, readonly plugin: string) {}
}

/**
 * Runs a call through the plugins' `onCall`, then (unless refused or
 * answered) the pool, then their `onSettle`.
 *
 * @example
 * ```ts ignore
 * const hooks = CallHooks.of(plugins, { hookTimeout, context, onError });
 * const result = hooks === undefined
 *   ? send(options.onSend)
 *   : hooks.run(call, options.onSend, send, (answer) => answer.result);
 * ```
 */
export class CallHooks {
  readonly #onCall: readonly Plugin[];
  readonly #onSettle: readonly Plugin[];
  readonly #opts: CallHooksOptions;
  /** The calls waiting for an asynchronous `onCall`: each one's cut. */
  readonly #waiting = new Map<(error: (cmd: string) => Error) => void, Run>();
  /** The asynchronous `onSettle`s running. */
  readonly #settling = new Set<Promise<void>>();

  private constructor(
    onCall: readonly Plugin[],
    onSettle: readonly Plugin[],
    options: CallHooksOptions,
  ) {
    this.#onCall = onCall;
    this.#onSettle = onSettle;
    this.#opts = options;
  }

  /** The call hooks of `plugins`; `undefined` when none has one. */
  static of(
    plugins: readonly Plugin[],
    options: CallHooksOptions,
  ): CallHooks | undefined {
    const onCall = plugins.filter((p) => typeof p.onCall === "function");
    const onSettle = plugins.filter((p) => typeof p.onSettle === "function");
    if (onCall.length === 0 && onSettle.length === 0) return undefined;
    return new CallHooks(onCall, onSettle, options);
  }

  /**
   * `call` through the hooks: `send` runs it (given the `onSend` that
   * counts its attempts and then calls the caller's `onSend`, and the ms
   * the hooks took, which its timeout counts too), `answered` turns an
   * `onCall`'s answer into what the caller gets (it throws for an answer of
   * the wrong kind). Synchronous `onCall`s keep the call synchronous: it is
   * queued (or sent) before `run` returns, as a call without hooks is, so
   * calls keep their order and a `close()` right after finds it in the
   * queue. Behind an asynchronous one, the call still ends by its own
   * `timeoutMs` (counted from the call) and `signal`, and by the pool's
   * {@linkcode CallHooks.close}: its caller and `onSettle` do not wait for
   * the hook (whose late result is ignored, a late failure reported once).
   */
  run<T>(
    call: ModelCall,
    bounds: CallBounds,
    timeoutMs: number | undefined,
    send: (onSend: (worker: string) => void, spentMs: number) => Promise<T>,
    answered: (answer: CallAnswer, plugin: string) => T,
  ): Promise<T> {
    const run: Run = { start: performance.now(), attempts: 0, cut: false };
    let by: Answered | undefined | Promise<Answered | undefined>;
    try {
      by = this.#callFrom(call, run, 0);
    } catch (err) {
      return Promise.reject(this.#failure(call, run, err));
    }
    if (by instanceof Promise) {
      return this.#waitFor(call, run, by, bounds, timeoutMs, send, answered);
    }
    return this.#go(call, run, by, bounds.onSend, send, answered, 0);
  }

  /**
   * Settles every call still waiting for an asynchronous `onCall` with a
   * `ShuttingDownError`, their `onSettle`s run now (the pool is closing:
   * as its queued calls are).
   */
  close(): void {
    for (const [cut, run] of [...this.#waiting]) {
      cut((cmd) =>
        new ShuttingDownError(`Cannot send call ${cmd}: pool is closing`)
      );
      // Nothing waits for the hook any more: its hookTimeout's timer would
      // only hold the process up to that long after the close.
      clearTimeout(run.timer);
    }
  }

  /**
   * Resolves once every asynchronous `onSettle` begun so far has settled
   * (each bounded by `hookTimeout`): the pool's close waits for them before
   * `onPoolClosed`, where a plugin flushes what they wrote.
   */
  async settled(): Promise<void> {
    while (this.#settling.size > 0) await Promise.all([...this.#settling]);
  }

  /**
   * A call behind an asynchronous `onCall`: settled by whichever comes
   * first, the hooks' outcome (then sent, or answered), its deadline, its
   * signal or the pool's close.
   */
  #waitFor<T>(
    call: ModelCall,
    run: Run,
    hooks: Promise<Answered | undefined>,
    bounds: CallBounds,
    timeoutMs: number | undefined,
    send: (onSend: (worker: string) => void, spentMs: number) => Promise<T>,
    answered: (answer: CallAnswer, plugin: string) => T,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const { signal } = bounds;
      const cmd = call.kind === "execute" ? "executeModel" : "executeStream";
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = (): void => {
        this.#waiting.delete(cut);
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      const cut = (error: (cmd: string) => Error): void => {
        if (run.cut) return;
        run.cut = true;
        done();
        reject(this.#failure(call, run, error(cmd)));
      };
      const onAbort = (): void =>
        cut((cmd) =>
          new CancelledError(`Cannot send call ${cmd}: aborted`, {
            cause: signal?.reason,
          })
        );
      this.#waiting.set(cut, run);
      if (timeoutMs !== undefined) {
        timer = setTimeoutOrNever(
          () => cut((cmd) => this.#timedOut(call, run, cmd, timeoutMs)),
          timeoutMs - (performance.now() - run.start),
        );
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      // Aborted by a synchronous onCall before this one (no event comes).
      if (signal?.aborted) onAbort();
      hooks.then(
        (by) => {
          if (run.cut) return;
          done();
          this.#go(
            call,
            run,
            by,
            bounds.onSend,
            send,
            answered,
            performance.now() - run.start,
          ).then(resolve, reject);
        },
        (err) => {
          if (run.cut) return this.#late(err);
          done();
          reject(this.#failure(call, run, err));
        },
      );
    });
  }

  /** A call's timeout, passed while an asynchronous `onCall` held it. */
  #timedOut(
    call: ModelCall,
    run: Run,
    cmd: string,
    timeoutMs: number,
  ): TimeoutError {
    const plugin = run.waitingOn ?? "";
    return new TimeoutError(
      `Cannot complete ${cmd} of model '${call.resolved}': timed out after ${timeoutMs} ms waiting for the onCall hook of plugin '${plugin}' (it was never sent)`,
      {
        details: {
          model: call.resolved,
          timeoutMs,
          waited: "plugin",
          plugin,
        },
      },
    );
  }

  /**
   * An `onCall` that failed after its call had ended (by its timeout, its
   * signal or the close): reported once, as a throwing `onSettle` is; its
   * caller already has its outcome.
   */
  #late(err: unknown): void {
    const refused = err instanceof Refused ? err : undefined;
    const plugin = refused?.plugin ?? "";
    const error = refused?.error ?? err;
    this.#opts.onError(pluginError(plugin, "onCall", error), plugin, "onCall");
  }

  /** After the `onCall`s: answered, or sent (`spentMs` after the call was made). */
  #go<T>(
    call: ModelCall,
    run: Run,
    by: Answered | undefined,
    onSend: ((worker: string) => void) | undefined,
    send: (onSend: (worker: string) => void, spentMs: number) => Promise<T>,
    answered: (answer: CallAnswer, plugin: string) => T,
    spentMs: number,
  ): Promise<T> {
    if (by !== undefined) {
      let value: T;
      try {
        value = answered(by.answer, by.plugin);
      } catch (err) {
        return Promise.reject(
          this.#failure(call, run, new Refused(err as Error, by.plugin)),
        );
      }
      run.answeredBy = by.plugin;
      return Promise.resolve(this.#succeeded(call, run, value));
    }
    return send((sentTo) => {
      run.attempts++;
      run.worker = sentTo;
      onSend?.(sentTo);
    }, spentMs).then(
      (value) => this.#succeeded(call, run, value),
      (err) => Promise.reject(this.#failure(call, run, err)),
    );
  }

  #succeeded<T>(call: ModelCall, run: Run, value: T): T {
    const outcome: CallOutcome = {
      ok: true,
      durationMs: performance.now() - run.start,
      attempts: run.attempts,
    };
    if (call.kind === "execute") outcome.result = value;
    else {
      const items = (value as { items?: unknown } | null)?.items;
      if (typeof items === "number") outcome.items = items;
    }
    if (run.worker !== undefined) outcome.worker = run.worker;
    if (run.answeredBy !== undefined) outcome.answeredBy = run.answeredBy;
    this.#settle(call, outcome);
    return value;
  }

  /** Settles the call as failed with `err` (its `onSettle`s run); the caller's error. */
  #failure(call: ModelCall, run: Run, err: unknown): unknown {
    const refused = err instanceof Refused ? err : undefined;
    const error = refused?.error ?? err;
    const outcome: CallOutcome = {
      ok: false,
      error,
      durationMs: performance.now() - run.start,
      attempts: run.attempts,
    };
    if (run.worker !== undefined) outcome.worker = run.worker;
    if (refused !== undefined) outcome.refusedBy = refused.plugin;
    this.#settle(call, outcome);
    return error;
  }

  /**
   * The `onCall`s from the `i`th on, in order: an answer, nothing (go on),
   * or a `Refused` thrown; a promise from the first asynchronous one on
   * (which runs no later `onCall` once the call was cut).
   */
  #callFrom(
    call: ModelCall,
    run: Run,
    i: number,
  ): Answered | undefined | Promise<Answered | undefined> {
    const plugins = this.#onCall;
    if (i >= plugins.length) return undefined;
    const ctx = this.#opts.context();
    for (; i < plugins.length; i++) {
      const plugin = plugins[i]!;
      let out: unknown;
      try {
        out = plugin.onCall!(call, ctx);
      } catch (err) {
        throw refusal(plugin.name, err);
      }
      if (isThenable(out)) {
        const next = i + 1;
        run.waitingOn = plugin.name;
        return settleWithin(
          Promise.resolve(out),
          this.#opts.hookTimeout,
          plugin.name,
          "onCall",
          run,
        ).then(
          (value) => {
            const answer = answerOf(plugin.name, value);
            if (answer !== undefined || run.cut) return answer;
            return this.#callFrom(call, run, next);
          },
          (err) => {
            throw refusal(plugin.name, err);
          },
        );
      }
      const answer = answerOf(plugin.name, out);
      if (answer !== undefined) return answer;
    }
    return undefined;
  }

  /**
   * Runs every `onSettle`, in order; nothing but the close waits for them
   * (the synchronous ones have run when it returns).
   */
  #settle(call: ModelCall, outcome: CallOutcome): void {
    if (this.#onSettle.length === 0) return;
    const rest = this.#settleFrom(call, outcome, 0);
    if (rest === undefined) return;
    this.#settling.add(rest);
    void rest.finally(() => this.#settling.delete(rest));
  }

  /** The `onSettle`s from the `i`th on; a promise from the first asynchronous one on. */
  #settleFrom(
    call: ModelCall,
    outcome: CallOutcome,
    i: number,
  ): Promise<void> | undefined {
    const plugins = this.#onSettle;
    const ctx = this.#opts.context();
    for (; i < plugins.length; i++) {
      const plugin = plugins[i]!;
      try {
        const out = plugin.onSettle!(call, outcome, ctx);
        if (isThenable(out)) {
          const next = i + 1;
          return settleWithin(
            Promise.resolve(out),
            this.#opts.hookTimeout,
            plugin.name,
            "onSettle",
          ).then(
            () => this.#settleFrom(call, outcome, next),
            (err) => {
              this.#settleFailed(plugin.name, err);
              return this.#settleFrom(call, outcome, next);
            },
          );
        }
      } catch (err) {
        this.#settleFailed(plugin.name, err);
      }
    }
    return undefined;
  }

  #settleFailed(plugin: string, err: unknown): void {
    this.#opts.onError(
      pluginError(plugin, "onSettle", err),
      plugin,
      "onSettle",
    );
  }
}

/** An `onCall`'s error as its call's: a `PyProxyError` as it is. */
function refusal(plugin: string, err: unknown): Refused {
  return err instanceof Refused
    ? err
    : new Refused(messageHookError(plugin, "onCall", err), plugin);
}

/** What an `onCall` returned: an answer, `undefined` (go on), or a `Refused` thrown. */
function answerOf(plugin: string, out: unknown): Answered | undefined {
  if (out === undefined || out === null) return undefined;
  if (typeof out === "object" && ("result" in out || "items" in out)) {
    return { answer: out as CallAnswer, plugin };
  }
  throw new Refused(
    new PluginError(
      `Cannot run hook onCall of plugin '${plugin}': it returned ${
        Array.isArray(out) ? "an array" : typeof out
      }, expected { result }, { items } (a stream) or nothing`,
      { details: { plugin, hook: "onCall" } },
    ),
    plugin,
  );
}

/**
 * Internals of the pool: the call hooks of its plugins
 * ({@linkcode Plugin.onCall}, {@linkcode Plugin.onSettle}) around each model
 * call. A pool whose plugins have neither gets no `CallHooks` at all
 * ({@linkcode CallHooks.of} is `undefined`): its calls pay nothing.
 *
 * @module
 */
import { PluginError } from "./errors.ts";
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

/** Where a call is, from its `onCall`s to its end. */
interface Run {
  /** `performance.now()` when it was made. */
  start: number;
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
   * counts its attempts and then calls the caller's `onSend`), `answered`
   * turns an `onCall`'s answer into what the caller gets (it throws for an
   * answer of the wrong kind). Synchronous `onCall`s keep the call
   * synchronous: it is queued (or sent) before `run` returns, as a call
   * without hooks is, so calls keep their order and a `close()` right
   * after finds it in the queue.
   */
  run<T>(
    call: ModelCall,
    onSend: ((worker: string) => void) | undefined,
    send: (onSend: (worker: string) => void) => Promise<T>,
    answered: (answer: CallAnswer, plugin: string) => T,
  ): Promise<T> {
    const run: Run = { start: performance.now(), attempts: 0 };
    let by: Answered | undefined | Promise<Answered | undefined>;
    try {
      by = this.#callFrom(call, 0);
    } catch (err) {
      return this.#failed(call, run, err);
    }
    if (by instanceof Promise) {
      return by.then(
        (b) => this.#go(call, run, b, onSend, send, answered),
        (err) => this.#failed(call, run, err),
      );
    }
    return this.#go(call, run, by, onSend, send, answered);
  }

  /** After the `onCall`s: answered, or sent. */
  #go<T>(
    call: ModelCall,
    run: Run,
    by: Answered | undefined,
    onSend: ((worker: string) => void) | undefined,
    send: (onSend: (worker: string) => void) => Promise<T>,
    answered: (answer: CallAnswer, plugin: string) => T,
  ): Promise<T> {
    if (by !== undefined) {
      let value: T;
      try {
        value = answered(by.answer, by.plugin);
      } catch (err) {
        return this.#failed(call, run, new Refused(err as Error, by.plugin));
      }
      run.answeredBy = by.plugin;
      return Promise.resolve(this.#succeeded(call, run, value));
    }
    return send((sentTo) => {
      run.attempts++;
      run.worker = sentTo;
      onSend?.(sentTo);
    }).then(
      (value) => this.#succeeded(call, run, value),
      (err) => this.#failed(call, run, err),
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

  #failed(call: ModelCall, run: Run, err: unknown): Promise<never> {
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
    return Promise.reject(error);
  }

  /**
   * The `onCall`s from the `i`th on, in order: an answer, nothing (go on),
   * or a `Refused` thrown; a promise from the first asynchronous one on.
   */
  #callFrom(
    call: ModelCall,
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
        return settleWithin(
          Promise.resolve(out),
          this.#opts.hookTimeout,
          plugin.name,
          "onCall",
        ).then(
          (value) => answerOf(plugin.name, value) ?? this.#callFrom(call, next),
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

  /** Runs every `onSettle`, in order; nothing waits for them. */
  #settle(call: ModelCall, outcome: CallOutcome): void {
    if (this.#onSettle.length > 0) void this.#settleFrom(call, outcome);
  }

  async #settleFrom(call: ModelCall, outcome: CallOutcome): Promise<void> {
    const ctx = this.#opts.context();
    for (const plugin of this.#onSettle) {
      try {
        const out = plugin.onSettle!(call, outcome, ctx);
        if (isThenable(out)) {
          await settleWithin(
            Promise.resolve(out),
            this.#opts.hookTimeout,
            plugin.name,
            "onSettle",
          );
        }
      } catch (err) {
        this.#opts.onError(
          pluginError(plugin.name, "onSettle", err),
          plugin.name,
          "onSettle",
        );
      }
    }
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

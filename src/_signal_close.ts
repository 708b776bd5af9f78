/**
 * What a SIGINT/SIGTERM closes before the process exits: every open pool
 * with `handleSignals`. A signal is the process's, so this registry is too:
 * it lives on `globalThis` (under `Symbol.for`), shared by every copy of
 * this module that a program may load, and no module holds state of its own.
 *
 * @module
 */

interface SignalCloseRegistry {
  /** The closes to run on a signal, one per open pool. */
  closers: Set<() => Promise<void>>;
  /** The closing a signal started, until it settles (one per signal). */
  closing: Promise<unknown> | undefined;
}

const KEY = Symbol.for("pyproxy.signalClose");

function registry(): SignalCloseRegistry {
  const scope = globalThis as { [KEY]?: SignalCloseRegistry };
  return scope[KEY] ??= { closers: new Set(), closing: undefined };
}

/**
 * Registers `close` to run when a signal arrives; returns its removal.
 *
 * @example
 * ```ts
 * import { closeAllOnSignal, closeOnSignal } from "./_signal_close.ts";
 * const remove = closeOnSignal(() => Promise.resolve());
 * await closeAllOnSignal();
 * remove();
 * ```
 */
export function closeOnSignal(close: () => Promise<void>): () => void {
  const { closers } = registry();
  closers.add(close);
  return () => closers.delete(close);
}

/**
 * Runs every registered close, once per signal: the listeners of all pools
 * run for one signal, and each may exit the process once this settles.
 *
 * @example
 * ```ts
 * import { closeAllOnSignal } from "./_signal_close.ts";
 * await closeAllOnSignal(); // nothing registered: settles at once
 * ```
 */
export function closeAllOnSignal(): Promise<unknown> {
  const reg = registry();
  reg.closing ??= Promise.allSettled([...reg.closers].map((close) => close()))
    .finally(() => reg.closing = undefined);
  return reg.closing;
}

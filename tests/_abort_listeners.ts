/**
 * Counts the gateway's stop and retirement listeners on abort signals
 * (functions named `onStop` or `onRetire`), for tests that check a stream
 * lets go of them; `Symbol.dispose` puts `EventTarget`'s methods back.
 */
export function countAbortListeners(): Disposable & {
  /** Listeners added and not removed. */
  readonly held: number;
  /** The most held at once. */
  readonly peak: number;
} {
  const add = EventTarget.prototype.addEventListener;
  const remove = EventTarget.prototype.removeEventListener;
  let held = 0;
  let peak = 0;
  const counted = (listener: unknown) =>
    typeof listener === "function" &&
    (listener.name === "onStop" || listener.name === "onRetire");
  EventTarget.prototype.addEventListener = function (
    this: EventTarget,
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ) {
    if (this instanceof AbortSignal && type === "abort" && counted(listener)) {
      peak = Math.max(peak, ++held);
    }
    return add.call(this, type, listener, options);
  };
  EventTarget.prototype.removeEventListener = function (
    this: EventTarget,
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ) {
    if (this instanceof AbortSignal && type === "abort" && counted(listener)) {
      held--;
    }
    return remove.call(this, type, listener, options);
  };
  return {
    get held() {
      return held;
    },
    get peak() {
      return peak;
    },
    [Symbol.dispose]() {
      EventTarget.prototype.addEventListener = add;
      EventTarget.prototype.removeEventListener = remove;
    },
  };
}

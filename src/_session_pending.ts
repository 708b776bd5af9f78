/**
 * Internals of `Session`: the record of one pending request.
 *
 * @module
 */
import type { Deadlines } from "./_session_deadlines.ts";
import type { ResponseMeta, SessionMessage } from "./session_types.ts";

/**
 * One request waiting for its reply. It is its own abort listener
 * (`handleEvent`), so a request with a signal costs no extra closure.
 */
export class Pending {
  /** Where its timeout is tracked, if it has one. */
  deadlines: Deadlines<Pending> | undefined;
  /** Its slot in `deadlines` (-1: none). */
  slot = -1;
  /** Its bucket in `deadlines` and its index there. */
  bucket: unknown[] | undefined = undefined;
  index = 0;
  timeout = 0;
  signal: AbortSignal | undefined;
  /** Handed to the outbox (past the outgoing middleware). */
  queued = false;
  /** Timed out or aborted before it was queued: its cancel goes out after it. */
  cancelWhenQueued = false;
  /** `RequestOptions.onDone`, until it is called (or handed to the late replies). */
  onDone: (() => void) | undefined;
  /** `RequestOptions.onResponseMeta`. */
  onMeta: ((meta: ResponseMeta) => void) | undefined;

  constructor(
    readonly id: number,
    readonly cmd: string,
    /** Its arguments: what it was running, should the connection be lost (`countInFlight`). */
    readonly args: Record<string, unknown> | undefined,
    readonly resolve: (value: unknown) => void,
    readonly reject: (error: Error) => void,
    readonly onEvent: ((event: SessionMessage) => void) | undefined,
    readonly onAbort: (id: number) => void,
  ) {}

  handleEvent(): void {
    this.onAbort(this.id);
  }

  /** Its `onDone`, handed over once (later calls get `undefined`). */
  takeDone(): (() => void) | undefined {
    const done = this.onDone;
    this.onDone = undefined;
    return done;
  }

  /** Stops the timer and the abort listener. */
  dispose(): void {
    if (this.slot >= 0) this.deadlines!.remove(this);
    this.signal?.removeEventListener("abort", this);
  }
}

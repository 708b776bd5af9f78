/**
 * Request/reply matching by id for the baseline clients (floor and stdio):
 * both speak `{id, ok, result | error}` replies and settle them the same way.
 *
 * @module
 */

/** A reply as the baseline servers send it. */
export interface Reply {
  id?: number;
  ok?: boolean;
  result?: unknown;
  error?: { message?: string };
}

interface Pending {
  resolve(value: unknown): void;
  reject(reason: unknown): void;
}

/**
 * Requests waiting for their reply, by id.
 *
 * @example
 * ```ts ignore
 * const pending = new PendingReplies();
 * const result = pending.expect(1, () => writer.write(bytes));
 * pending.settle({ id: 1, ok: true, result: 42 }); // result resolves to 42
 * ```
 */
export class PendingReplies {
  readonly #pending = new Map<number, Pending>();

  /** Waits for the reply to `id`; `send` writes the request (its failure rejects). */
  expect(id: number, send: () => Promise<unknown>): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      send().catch(reject);
    });
  }

  /** Settles the request `msg` answers (ignores unknown ids). */
  settle(msg: Reply): void {
    const pending = msg.id === undefined
      ? undefined
      : this.#pending.get(msg.id);
    if (pending === undefined) return;
    this.#pending.delete(msg.id as number);
    if (msg.ok) pending.resolve(msg.result);
    else {
      pending.reject(
        new Error(`Cannot execute: ${msg.error?.message ?? "unknown error"}`),
      );
    }
  }

  /** Rejects every waiting request with `err`. */
  failAll(err: unknown): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }
}

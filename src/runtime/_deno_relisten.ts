/**
 * A `Deno.serve` server that listens again when its accept loop fails.
 *
 * Deno 2.9's accept loop ends for good on an accept error: at `EMFILE`
 * ("Too many open files", which enough connections that never speak reach:
 * Deno.serve closes none of them) its `finished` rejects, which nothing
 * handled, so the process exited (the gateway with its workers); handled,
 * the port stays closed (connection refused) for the process's life. Here
 * the rejection is caught and the same port listened on again once fds
 * may have been freed, every `retryIn` ms until it succeeds, for as long as
 * it takes (a port another process took meanwhile included: it may leave;
 * each failed attempt is told, `retryFailed`) (hyper's
 * `sleep_on_errors` waits a second in the same case; denoland/deno#10148).
 * The failed server's connections are gone already: Deno closes them as
 * its loop ends.
 *
 * @module
 */
import type { ListenerEvent } from "./types.ts";

/**
 * Starts one `Deno.serve` on `port`, calling `onListen` with its address
 * (and the warning of its set-up, if any) once it listens.
 */
export type DenoListen = (
  port: number,
  onListen: (addr: Deno.NetAddr, warning?: string) => void,
) => Deno.HttpServer;

/**
 * Options of {@linkcode Relisten}.
 *
 * @example
 * ```ts
 * import type { RelistenOptions } from "./_deno_relisten.ts";
 * const options: RelistenOptions = { retryIn: 1000, onEvent: (e) => console.log(e.type) };
 * console.log(options.retryIn);
 * ```
 */
export interface RelistenOptions {
  /** Aborted: the server stops for good (no listening again). */
  signal?: AbortSignal;
  /**
   * Told of a failure (once per failure), of each attempt to listen again
   * that failed (`retryFailed`, `portTaken` when another process has the
   * port) and of the listener it made next.
   */
  onEvent?: (event: ListenerEvent) => void;
  /**
   * The wait before listening again, and between attempts that fail.
   * @default {1000}
   */
  retryIn?: number;
}

/**
 * Keeps a `Deno.serve` server listening on its port across accept-loop
 * failures ({@link https://github.com/denoland/deno/issues/10148}).
 *
 * @example
 * ```ts ignore
 * const relisten = new Relisten((port, onListen) =>
 *   Deno.serve({ port, onListen }, () => new Response("ok")));
 * const { port } = await relisten.start(0);
 * await relisten.shutdown();
 * ```
 */
export class Relisten {
  readonly #listen: DenoListen;
  readonly #signal: AbortSignal | undefined;
  readonly #onEvent: ((event: ListenerEvent) => void) | undefined;
  readonly #retryIn: number;
  #server: Deno.HttpServer | undefined;
  #port = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;

  /** Listens with `listen`, again after `options.retryIn` ms when it fails. */
  constructor(listen: DenoListen, options: RelistenOptions = {}) {
    this.#listen = listen;
    this.#signal = options.signal;
    this.#onEvent = options.onEvent;
    this.#retryIn = options.retryIn ?? 1000;
    this.#signal?.addEventListener("abort", () => this.#stop(), {
      once: true,
    });
  }

  /**
   * Listens on `port` (`0`: a free one, kept for the listeners after);
   * rejects when the first listen fails (`EADDRINUSE`...).
   */
  start(
    port: number,
  ): Promise<{ port: number; hostname: string; warning?: string }> {
    return new Promise((resolve, reject) => {
      try {
        this.#watch(this.#listen(port, (addr, warning) => {
          this.#port = addr.port;
          resolve({
            port: addr.port,
            hostname: addr.hostname,
            ...(warning === undefined ? {} : { warning }),
          });
        }));
      } catch (err) {
        reject(err);
      }
    });
  }

  /** Stops listening for good; resolves once the server in force has shut down. */
  async shutdown(): Promise<void> {
    this.#stop();
    const server = this.#server;
    this.#server = undefined;
    await server?.shutdown();
  }

  #stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #watch(server: Deno.HttpServer): void {
    this.#server = server;
    server.finished.catch((err: unknown) => {
      if (this.#server !== server) return;
      this.#server = undefined;
      if (this.#stopped || this.#signal?.aborted === true) return;
      const error = err instanceof Error ? err : new Error(String(err));
      this.#onEvent?.({ type: "failed", error, retryIn: this.#retryIn });
      this.#again();
    });
  }

  /** Listens again after retryIn, and again while that fails. */
  #again(): void {
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#stopped) return;
      try {
        this.#watch(this.#listen(this.#port, (addr) => {
          this.#onEvent?.({ type: "listening", port: addr.port });
        }));
      } catch (err) {
        // Still out of fds (socket() itself fails), or the port taken
        // meanwhile by another process (which may leave it: tried again,
        // as the operator is told).
        const error = err instanceof Error ? err : new Error(String(err));
        this.#onEvent?.({
          type: "retryFailed",
          error,
          retryIn: this.#retryIn,
          portTaken: error instanceof Deno.errors.AddrInUse ||
            (error as { code?: unknown }).code === "EADDRINUSE",
        });
        this.#again();
      }
    }, this.#retryIn);
  }
}

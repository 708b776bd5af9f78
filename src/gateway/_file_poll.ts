/**
 * A check run every `interval` ms, the next armed once the last settled
 * (never two at once), until stopped: the token files' and the TLS files'
 * polls (`_token_files.ts`, `_tls_file_watch.ts`).
 *
 * @module
 */

/** Runs `check` every `interval` ms until {@linkcode FilePoll.stop}. */
export class FilePoll {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  /** The check under way, if any. */
  #running: Promise<void> | undefined;

  /**
   * `failed` gets the message of a check that rejects (to log): nothing of
   * a read may end the process (an unhandled rejection).
   */
  constructor(
    readonly interval: number,
    readonly check: () => Promise<void>,
    readonly failed: (message: string) => void,
  ) {
    this.#arm();
  }

  /** Whether {@linkcode FilePoll.stop} was called. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Stops the polls (a check under way finishes; none follows). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  /**
   * Resolves once no check is under way (after `stop()`: the last one's
   * reads are over). A shutdown that returned with one under way left its
   * file reads pending (Deno's test sanitizers saw them: a loaded machine,
   * a 1000-token file polled every 100 ms).
   */
  settled(): Promise<void> {
    return this.#running ?? Promise.resolve();
  }

  #arm(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#running = this.check().catch((err) => {
        this.failed(err instanceof Error ? err.message : String(err));
      }).finally(() => {
        this.#running = undefined;
        this.#arm();
      });
    }, this.interval);
  }
}

/**
 * The models of the models directory that `serve` skipped at start (a file
 * that failed to import: a redeploy with a syntax error), remembered until
 * a load of the name succeeds. Without it such a model left no trace after
 * the start's log line: its calls answered a 404 "not loaded" like a
 * made-up name's (counted under `_unknown`), `GET /v1/models/{name}` a bare
 * 404, and `/metrics` had no `pyproxy_models_ready` series for it, so the
 * documented alert on `pyproxy_models_ready{model="scorer"} == 0` never
 * fired (the on-call walkthrough). Internal.
 *
 * @module
 */
import { hideModelsDir } from "./_model_changes.ts";

/**
 * Why each skipped model is not served (its start's error, the models
 * directory kept out of it unless `debug`), until {@linkcode
 * StartSkips.loaded} says a load of it succeeded. Bounded by the start's
 * skips (the files of one directory): nothing is added later.
 *
 * @example
 * ```ts
 * import { StartSkips } from "./_start_skips.ts";
 * const skips = new StartSkips(
 *   [{ name: "scorer", error: "Cannot load model 'scorer': SyntaxError: expected ':' (scorer.py, line 2)" }],
 *   undefined,
 *   false,
 * );
 * console.log(skips.reason("scorer")); // "Cannot load model 'scorer': SyntaxError: ..."
 * skips.loaded("scorer");
 * console.log(skips.reason("scorer")); // undefined
 * ```
 */
export class StartSkips {
  readonly #reasons = new Map<string, string>();

  /**
   * `skipped`: `serve`'s `skippedModels`; `modelsDir`: the directory to
   * keep out of the reasons unless `debug`.
   */
  constructor(
    skipped: ReadonlyArray<{ name: string; error: string }>,
    modelsDir: string | undefined,
    debug: boolean,
  ) {
    for (const { name, error } of skipped) {
      const shown = modelsDir === undefined
        ? error
        : (hideModelsDir(new Error(error), [modelsDir], debug) as Error)
          .message;
      this.#reasons.set(name, shown);
    }
  }

  /** Why model `name` was skipped at start and not loaded since, if it was. */
  reason(name: string): string | undefined {
    return this.#reasons.get(name);
  }

  /** The names skipped at start and not loaded since. */
  names(): IterableIterator<string> {
    return this.#reasons.keys();
  }

  /** A load of `name` succeeded (a `PUT`, the repository's load): served now. */
  loaded(name: string): void {
    this.#reasons.delete(name);
  }

  /**
   * The 404 message of a call of `name`, a model the start skipped and no
   * load brought since: what failed and what brings it back.
   */
  message(name: string): string | undefined {
    const reason = this.reason(name);
    if (reason === undefined) return undefined;
    return `Cannot find model '${name}': it failed to load at start, so ` +
      `this gateway does not serve it: ${reason}; fix its file, then ` +
      `PUT /v1/models/${name} (with --allow-manage) or restart the gateway`;
  }
}

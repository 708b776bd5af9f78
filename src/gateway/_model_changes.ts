/**
 * Loading, reloading and removing a model through the gateway, one change
 * of a name at a time: `PUT`/`DELETE /v1/models/{name}` and the Open
 * Inference Protocol's model repository extension
 * (`POST /v2/repository/models/{name}/load` and `/unload`) share it, so a
 * load, a `PUT` and an unload of one name settle in arrival order whichever
 * route each came by.
 *
 * @module
 */
import { RemoteError } from "../errors.ts";
import { versionKey } from "../_model_version.ts";
import { describeError, httpError } from "./error_response.ts";
import { modelEntries } from "./_pool_reads.ts";
import type { GatewayModelSpec } from "./gateway_pool.ts";
import type { GatewayModelInfo } from "./model_catalog.ts";
import type { RouteContext } from "./route_context.ts";

/** What a name's change in progress does (the repository index's state). */
export type ModelChangeKind = "load" | "unload";

/**
 * A gateway's model changes in progress: queued per name (other names go on
 * in parallel), and what runs now. One per gateway (`RouteContext`), shared
 * by its `/v1` and `/v2` routes, which change the same models.
 *
 * @example
 * ```ts ignore
 * const changes = new ModelChanges();
 * await changes.run("scorer", "load", () => pool.addModel({ name: "scorer", file }));
 * ```
 */
export class ModelChanges {
  /** Each name's last change queued (its settling ends the queue). */
  readonly #tails = new Map<string, Promise<void>>();
  /** The change running now per name (and the version it changes, if one). */
  readonly #running = new Map<
    string,
    { kind: ModelChangeKind; version: string | undefined }
  >();

  /**
   * Runs `change` once the changes of `name` queued before it have settled:
   * each checks whether the model exists, then acts. `version`: the version
   * label it changes, for a model with versions.
   */
  run<T>(
    name: string,
    kind: ModelChangeKind,
    change: () => Promise<T>,
    version?: string,
  ): Promise<T> {
    const tails = this.#tails;
    const running = this.#running;
    const run = (tails.get(name) ?? Promise.resolve()).then(async () => {
      running.set(name, { kind, version });
      try {
        return await change();
      } finally {
        running.delete(name);
      }
    });
    const tail = run.then(() => {}, () => {});
    tails.set(name, tail);
    void tail.then(() => {
      if (tails.get(name) === tail) tails.delete(name);
    });
    return run;
  }

  /** The change of `name` running now, if any. */
  running(name: string): ModelChangeKind | undefined {
    return this.#running.get(name)?.kind;
  }

  /**
   * The version label the change of `name` running now acts on (a `PUT` of
   * `/v1/models/{name}/versions/{label}`, a repository load with a
   * version); `undefined` for a model without versions, or none running.
   */
  runningVersion(name: string): string | undefined {
    return this.#running.get(name)?.version;
  }
}

/** Errors a model file that is not there (or not a file) loads with (protocol §3, `stage: "read"`). */
const MISSING_FILE = new Set([
  "FileNotFoundError",
  "IsADirectoryError",
  "NotADirectoryError",
]);

/** The Python server could not read the model file because it is not there. */
function missingModelFile(err: unknown): boolean {
  if (!(err instanceof RemoteError) || err.remoteType !== "ModelLoadError") {
    return false;
  }
  const { stage, exception } = err.details;
  return stage === "read" && MISSING_FILE.has(String(exception));
}

/** A name for a message: whatever a client sent, at most 64 characters of it. */
export function quoteShort(text: string): string {
  return text.length <= 64
    ? JSON.stringify(text)
    : `${JSON.stringify(text.slice(0, 64))}... (${text.length} characters)`;
}

/**
 * Without `debug`, an error that names the models directory (the Python
 * server reports absolute paths, with symlinks resolved) is answered with
 * the paths made relative and the directory itself called "the models
 * directory". `dirs`: the directory as configured and its real path.
 */
export function hideModelsDir(
  err: unknown,
  dirs: readonly string[],
  debug: boolean,
): unknown {
  if (debug || !(err instanceof Error)) return err;
  // Longest first: one may be a prefix of the other.
  const found = [...new Set(dirs)]
    .filter((dir) => dir !== "" && err.message.includes(dir))
    .sort((a, b) => b.length - a.length);
  if (found.length === 0) return err;
  const { status, body, headers } = describeError(err, false);
  const { type, message, ...extra } = body;
  let text = message;
  for (const dir of found) {
    text = text.replaceAll(`${dir}/`, "").replaceAll(
      dir,
      "the models directory",
    );
  }
  return httpError(status, type, text, extra, headers);
}

/**
 * Whether the pool has a model of that name now (any version of it), or,
 * with `version`, that version of it.
 */
export function modelLoaded(
  ctx: RouteContext,
  name: string,
  version?: string,
): boolean {
  return version === undefined
    ? modelEntries(ctx.pool, name).length > 0
    : ctx.pool.modelVersions?.(name)?.versions.includes(version) === true;
}

/**
 * A remove, or an update, retires the version loaded now: each worker
 * waits for its calls in flight and then runs its close(), each step
 * bounded by its close_timeout_ms (docs/models.md "close"). That work is
 * documented, so it comes on top of loadTimeout rather than out of it.
 */
function retireBound(
  ctx: RouteContext,
  name: string,
  version?: string,
): { timeout: number } {
  const close = ctx.catalog.describe(ctx.pool, name, version)?.closeTimeoutMs ??
    0;
  return { timeout: ctx.loadTimeout + 2 * close };
}

/**
 * Adds `name` with `spec`, or replaces the version loaded now, as one step
 * of the name's changes, bounded by `loadTimeout` (plus the old version's
 * retirement): a model whose import or `__init__` hangs would otherwise
 * hold every later change of the name for ever. A file missing from the
 * models directory is a 404 `ModelFileNotFound`; the directory is kept out
 * of the errors unless `debug`.
 */
export function loadModel(
  ctx: RouteContext,
  name: string,
  spec: GatewayModelSpec,
  debug: boolean,
): Promise<{ existed: boolean; model: GatewayModelInfo }> {
  const { pool, catalog } = ctx;
  return ctx.modelChanges.run(name, "load", async () => {
    // Checked in the queue: two loads of a new name would both see it
    // missing, and the second add would fail ("it already exists").
    const existed = modelLoaded(ctx, name, spec.version);
    try {
      const model = existed
        ? await catalog.update(
          pool,
          name,
          spec,
          retireBound(ctx, name, spec.version),
        )
        : await catalog.add(pool, name, spec, { timeout: ctx.loadTimeout });
      return { existed, model };
    } catch (err) {
      // The Python server resolves the path (and refuses escapes) before it
      // reads the file: a missing file is told apart only inside the
      // directory, never where a symlink out of it leads.
      if (missingModelFile(err)) {
        throw httpError(
          404,
          "ModelFileNotFound",
          `Cannot load model '${name}': no file ${
            quoteShort(spec.file ?? "")
          } in the models directory`,
        );
      }
      const dir = ctx.modelsDir;
      if (dir === undefined) throw err;
      const real = await ctx.runtime.realPath(dir).catch(() => dir);
      throw hideModelsDir(err, [dir, real], debug);
    }
  }, spec.version);
}

/**
 * Removes `name` (every version of it), or with `version` that version, as
 * one step of the name's changes (its calls in flight finish first, then its
 * `close()`), bounded as an update is; `notFound` when the pool has no such
 * model or version once its turn comes. Resolves to the close warning, if
 * its `close()` raised or overran.
 */
export async function unloadModel(
  ctx: RouteContext,
  name: string,
  notFound: () => Error,
  version?: string,
): Promise<string | undefined> {
  const { pool } = ctx;
  let closeWarning: unknown;
  await ctx.modelChanges.run(name, "unload", async () => {
    if (!modelLoaded(ctx, name, version)) throw notFound();
    // Every version's metrics go with a model removed by its name.
    const keys = version === undefined
      ? (pool.modelVersions?.(name)?.versions ?? []).map((v) =>
        versionKey(name, v)
      )
      : [versionKey(name, version)];
    const out = await ctx.catalog.remove(pool, name, {
      ...retireBound(ctx, name, version),
      ...(version === undefined ? {} : { version }),
    });
    closeWarning = (out as { closeWarning?: unknown } | null)?.closeWarning;
    if (version === undefined) ctx.metrics.forget(name);
    for (const key of keys) ctx.metrics.forget(key);
  });
  const shown = version === undefined ? name : `${name} version ${version}`;
  ctx.logger.info("Model {name} removed", { name: shown });
  if (typeof closeWarning !== "string") return undefined;
  // Its close() raised or overran (the worker's log has the traceback):
  // removed all the same.
  ctx.logger.warn("Model {name}: {warning}", {
    name: shown,
    warning: closeWarning,
  });
  return closeWarning;
}

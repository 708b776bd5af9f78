/**
 * The Open Inference Protocol's model repository extension (Triton's
 * explicit model control): `POST /v2/repository/index`, and
 * `POST /v2/repository/models/{name}/load` and `/unload`, with
 * `allowManage` only, as `PUT`/`DELETE /v1/models/{name}` (a 403 without
 * it). The repository is the models directory's `*.py` files (each a model
 * named by its file name, as `serve` loads them) and the models configured
 * by name; a load or unload is one change of the name among the `PUT`s and
 * `DELETE`s of it (`_model_changes.ts`). docs/gateway.md, "Model repository
 * extension".
 *
 * @module
 */
import { Hono } from "hono";
import { describeError, httpError } from "./error_response.ts";
import type { GatewayModelSpec } from "./gateway_pool.ts";
import {
  hideModelsDir,
  loadModel,
  quoteShort,
  unloadModel,
} from "./_model_changes.ts";
import { modelNameProblem } from "./model_name_problem.ts";
import { modelFiles } from "./_model_files.ts";
import { readJsonBody } from "./read_json_body.ts";
import type { RouteContext } from "./route_context.ts";
import { MAX_MODEL_TIMEOUT } from "../_model_timeout.ts";

/** An entry of the repository index (Triton's `$repository_index_response`). */
export interface RepositoryIndexEntry {
  name: string;
  /** The version loaded now (none for a model not loaded). */
  version?: string;
  /** `READY`, `UNAVAILABLE`, `LOADING` or `UNLOADING`. */
  state: string;
  /** Why it is in that state (`""` when ready). */
  reason: string;
}

/** The most load failures remembered for the index (one per name). */
const MAX_FAILURES = 1024;

/** The fields of a load's `config` the gateway maps (docs/gateway.md). */
const CONFIG_FIELDS = [
  "name",
  "parameters",
  "instance_group",
  "options",
  "class",
  "timeout",
  "workers",
];

const bad = (action: string, name: string, why: string) =>
  httpError(
    400,
    "InvalidRequestError",
    `Cannot ${action} model ${quoteShort(name)}: ${why}`,
  );

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function forbidden() {
  return httpError(
    403,
    "Forbidden",
    "Cannot manage models: model management is disabled (start with --allow-manage)",
  );
}

/** A count of workers in a config: 1 to 1024. */
function workerCount(name: string, value: unknown, what: string): number {
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < 1 ||
    value > 1024
  ) {
    throw bad(
      "load",
      name,
      `config ${what}: expected an integer from 1 to 1024 (how many workers load the model)`,
    );
  }
  return value;
}

/**
 * The spec a load's `config` (Triton's model configuration, as JSON) makes
 * of the repository's: `name` must be the model's; `parameters`
 * (`{"key": {"string_value": "..."}}`) become the constructor's options;
 * `instance_group` (one group's `count`) the number of workers; and
 * pyproxy's own `options`, `class`, `timeout` and `workers` as a `PUT` body
 * takes them. Anything else is a 400 naming it: the model file is always
 * the repository's.
 */
function configuredSpec(
  name: string,
  base: GatewayModelSpec,
  text: unknown,
): GatewayModelSpec {
  if (typeof text !== "string") {
    throw bad("load", name, "parameters.config: expected a string of JSON");
  }
  let config: unknown;
  try {
    config = JSON.parse(text);
  } catch (err) {
    throw bad(
      "load",
      name,
      `parameters.config is not JSON (${(err as Error).message})`,
    );
  }
  if (!isRecord(config)) {
    throw bad("load", name, "parameters.config: expected a JSON object");
  }
  const unknown = Object.keys(config).filter((k) => !CONFIG_FIELDS.includes(k));
  if (unknown.length > 0) {
    throw bad(
      "load",
      name,
      `config fields ${
        unknown.slice(0, 8).map((k) => quoteShort(k)).join(", ")
      }${
        unknown.length > 8 ? ` and ${unknown.length - 8} more` : ""
      } have no meaning here (the gateway maps name, parameters, instance_group, options, class, timeout and workers)`,
    );
  }
  const spec: GatewayModelSpec = { ...base };
  if (config.name !== undefined && config.name !== name) {
    throw bad(
      "load",
      name,
      `config name ${quoteShort(String(config.name))} is not the model's`,
    );
  }
  if (config.parameters !== undefined && config.options !== undefined) {
    throw bad("load", name, "config has both parameters and options");
  }
  if (config.parameters !== undefined) {
    if (!isRecord(config.parameters)) {
      throw bad("load", name, "config parameters: expected an object");
    }
    const options: [string, string][] = [];
    for (const [key, value] of Object.entries(config.parameters)) {
      if (
        !isRecord(value) || typeof value.string_value !== "string" ||
        Object.keys(value).length !== 1
      ) {
        throw bad(
          "load",
          name,
          `config parameters ${
            quoteShort(key)
          }: expected {"string_value": "..."}`,
        );
      }
      options.push([key, value.string_value]);
    }
    // Own properties all: under Bun, an assignment of "__proto__" calls
    // Object.prototype's setter, which drops a string (Deno has none).
    spec.options = Object.fromEntries(options);
  }
  if (config.options !== undefined) {
    if (!isRecord(config.options)) {
      throw bad("load", name, "config options: expected an object");
    }
    spec.options = config.options;
  }
  if (config.class !== undefined) {
    if (typeof config.class !== "string" || config.class === "") {
      throw bad("load", name, "config class: expected a class name");
    }
    spec.class = config.class;
  }
  if (config.timeout !== undefined) {
    const t = config.timeout;
    if (
      typeof t !== "number" || !Number.isInteger(t) || t < 1 ||
      t > MAX_MODEL_TIMEOUT
    ) {
      throw bad(
        "load",
        name,
        `config timeout: expected an integer from 1 to ${MAX_MODEL_TIMEOUT} (ms)`,
      );
    }
    spec.timeout = t;
  }
  if (config.instance_group !== undefined && config.workers !== undefined) {
    throw bad("load", name, "config has both instance_group and workers");
  }
  if (config.workers !== undefined) {
    spec.workers = workerCount(name, config.workers, "workers");
  }
  if (config.instance_group !== undefined) {
    const groups = config.instance_group;
    const group = Array.isArray(groups) && groups.length === 1
      ? groups[0]
      : undefined;
    const extra = isRecord(group)
      ? Object.keys(group).filter((k) => !["count", "kind", "name"].includes(k))
      : [];
    if (
      !isRecord(group) || extra.length > 0 ||
      (group.kind !== undefined && group.kind !== "KIND_CPU" &&
        group.kind !== "KIND_AUTO")
    ) {
      throw bad(
        "load",
        name,
        'config instance_group: expected one group {"count": n} (of kind KIND_CPU or KIND_AUTO): its count is how many workers load the model',
      );
    }
    if (group.count !== undefined) {
      spec.workers = workerCount(name, group.count, "instance_group count");
    }
  }
  return spec;
}

/** A load's or unload's body: `{"parameters": {...}}`, or nothing. */
function parametersOf(
  action: string,
  name: string,
  body: unknown,
): Record<string, unknown> {
  if (body === undefined) return {};
  if (!isRecord(body)) {
    throw bad(action, name, 'expected a JSON object {"parameters"?: {...}}');
  }
  const extra = Object.keys(body).filter((k) => k !== "parameters");
  if (extra.length > 0) {
    throw bad(
      action,
      name,
      `unknown field ${quoteShort(extra[0]!)} (allowed: parameters)`,
    );
  }
  if (body.parameters === undefined || body.parameters === null) return {};
  if (!isRecord(body.parameters)) {
    throw bad(action, name, "parameters: expected an object");
  }
  return body.parameters;
}

/**
 * The repository extension's routes (each a 403 without `allowManage`).
 *
 * @example
 * ```ts ignore
 * app.route("/", inferenceRepositoryRoutes(ctx));
 * ```
 */
export function inferenceRepositoryRoutes(ctx: RouteContext): Hono {
  const { pool, catalog, runtime } = ctx;
  const app = new Hono();
  // Why the last load of a name failed, until it loads (bounded: only names
  // of the repository get that far).
  const failures = new Map<string, string>();
  const failed = (name: string, why: string) => {
    failures.delete(name);
    failures.set(name, why);
    if (failures.size > MAX_FAILURES) {
      failures.delete(failures.keys().next().value!);
    }
  };
  // The start's own failures, until a load of the name succeeds (the
  // directory kept out of them unless debug, as a load's errors).
  for (const { name, error } of ctx.skippedModels) {
    const dir = ctx.modelsDir;
    const shown = dir === undefined
      ? error
      : (hideModelsDir(new Error(error), [dir], ctx.manageDebug) as Error)
        .message;
    failed(name, shown);
  }

  const readBody = (request: Request) =>
    readJsonBody(
      request,
      ctx.bodyLimit,
      ctx.bodyReads,
      ctx.runtime,
      ctx.maxIntegerDigits,
      ctx.maxJsonDepth,
    );

  // One directory read for the index calls that come while it runs.
  let listing: Promise<string[]> | undefined;
  const directoryModels = (): Promise<string[]> => {
    const dir = ctx.modelsDir;
    if (dir === undefined) return Promise.resolve([]);
    listing ??= runtime.readDir(dir).then(
      (files) =>
        modelFiles(
          runtime,
          dir,
          files.filter((f) =>
            f.endsWith(".py") && !f.startsWith("_") &&
            modelNameProblem(f.slice(0, -3)) === undefined
          ),
        ).then((found) => found.map((f) => f.slice(0, -3))),
      // A directory gone: only the loaded and configured models are left.
      () => [],
    ).finally(() => listing = undefined);
    return listing;
  };

  /**
   * The specs the repository loads `name` with (one per configured version,
   * in the configured order; else one), or a 404.
   */
  const repositorySpecs = async (
    name: string,
  ): Promise<GatewayModelSpec[]> => {
    const configured = ctx.repositoryModels.get(name);
    if (configured !== undefined) return configured.map((s) => ({ ...s }));
    return [await repositorySpec(name)];
  };

  /** The spec the repository loads an unconfigured `name` with, or a 404. */
  const repositorySpec = async (name: string): Promise<GatewayModelSpec> => {
    // Listed, not stat'ed: a symlink out of the directory then gets the
    // Python server's one answer whether its target exists or not.
    if ((await directoryModels()).includes(name)) return { file: `${name}.py` };
    // Loaded some other way (a PUT of another file): reloaded as it is.
    const loaded = catalog.describe(pool, name);
    if (loaded?.file !== undefined) {
      const spec: GatewayModelSpec = { file: loaded.file };
      if (loaded.class !== undefined) spec.class = loaded.class;
      if (loaded.options !== undefined) spec.options = loaded.options;
      if (loaded.timeoutSource === "spec") spec.timeout = loaded.timeout!;
      if (loaded.workers !== undefined) spec.workers = loaded.workers;
      return spec;
    }
    throw httpError(
      404,
      "ModelNotFoundError",
      `Cannot load model ${
        quoteShort(name)
      }: the repository has no such model (no file ${
        quoteShort(`${name}.py`)
      } in the models directory, and none configured by that name)`,
    );
  };

  app.post("/v2/repository/index", async (c) => {
    if (!ctx.allowManage) throw forbidden();
    const body = await readBody(c.req.raw);
    if (body !== undefined && !isRecord(body)) {
      throw httpError(
        400,
        "InvalidRequestError",
        'Cannot list the model repository: expected a JSON object {"ready"?: boolean}',
      );
    }
    const extra = Object.keys(body ?? {}).filter((k) => k !== "ready");
    if (extra.length > 0) {
      throw httpError(
        400,
        "InvalidRequestError",
        `Cannot list the model repository: unknown field ${
          quoteShort(extra[0]!)
        } (allowed: ready)`,
      );
    }
    const ready = body?.ready ?? false;
    if (typeof ready !== "boolean") {
      throw httpError(
        400,
        "InvalidRequestError",
        "Cannot list the model repository: ready: expected a boolean",
      );
    }
    const entries = new Map<string, RepositoryIndexEntry>();
    for (const m of catalog.list(pool)) {
      // In Triton's order: name, version, state, reason.
      // A model with versions has an entry per version, as Triton's index.
      const version = m.label ?? m.version;
      entries.set(m.label === undefined ? m.name : `${m.name}@${m.label}`, {
        name: m.name,
        ...(version === undefined ? {} : { version: String(version) }),
        state: m.failedReason === undefined ? "READY" : "UNAVAILABLE",
        reason: m.failedReason ?? "",
      });
    }
    const names = [...ctx.repositoryModels.keys(), ...await directoryModels()];
    for (const name of names) {
      if (entries.has(name) || pool.modelVersions?.(name) !== undefined) {
        continue;
      }
      entries.set(name, {
        name,
        state: "UNAVAILABLE",
        reason: failures.get(name) ?? "unloaded",
      });
    }
    const out: RepositoryIndexEntry[] = [];
    for (const entry of entries.values()) {
      const running = ctx.modelChanges.running(entry.name);
      if (running !== undefined) {
        entry.state = running === "load" ? "LOADING" : "UNLOADING";
        entry.reason = "";
      }
      if (!ready || entry.state === "READY") out.push(entry);
    }
    out.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    return c.json(out);
  });

  app.post("/v2/repository/models/:name/load", async (c) => {
    if (!ctx.allowManage) throw forbidden();
    const name = c.req.param("name");
    const problem = modelNameProblem(name);
    if (problem !== undefined) {
      throw bad("load", name, `expected a name of ${problem}`);
    }
    const parameters = parametersOf("load", name, await readBody(c.req.raw));
    const files = Object.keys(parameters).filter((k) => k.startsWith("file:"));
    if (files.length > 0) {
      throw bad(
        "load",
        name,
        `parameter ${
          quoteShort(files[0]!)
        } overrides a model file, and the gateway never writes files from a request: put the file in the models directory`,
      );
    }
    const unknown = Object.keys(parameters).filter((k) =>
      k !== "config" && parameters[k] !== null
    );
    if (unknown.length > 0) {
      throw bad(
        "load",
        name,
        `unknown parameter ${quoteShort(unknown[0]!)} (allowed: config)`,
      );
    }
    const config = parameters.config ?? undefined;
    // Every spec checked before the first loads: a bad config loads none.
    const specs = (await repositorySpecs(name)).map((base) =>
      config === undefined ? base : configuredSpec(name, base, config)
    );
    try {
      // A name configured with versions loads each of them, in their order
      // (the first listed is the default when none was loaded), as Triton's
      // load_model loads a model's versions.
      for (const spec of specs) {
        const { existed } = await loadModel(
          ctx,
          name,
          spec,
          ctx.debug(c.req.raw),
        );
        ctx.logger.info("Model {name} {action} from {file}", {
          name: spec.version === undefined
            ? name
            : `${name} version ${spec.version}`,
          action: existed ? "reloaded" : "loaded",
          file: spec.file,
        });
      }
      failures.delete(name);
      ctx.startSkips.loaded(name);
    } catch (err) {
      const { status, body } = describeError(err, ctx.debug(c.req.raw));
      // Kept for the index: a management route (the management token's
      // only, when one is set), as this load's answer.
      if (status !== 504) failed(name, body.message);
      // A model that fails to load is the request's problem, as Triton
      // answers it (400), not the 422 of a model's exception.
      if (status === 422) {
        throw httpError(400, body.type, body.message);
      }
      throw err;
    }
    return new Response(null, { status: 200 });
  });

  app.post("/v2/repository/models/:name/unload", async (c) => {
    if (!ctx.allowManage) throw forbidden();
    const name = c.req.param("name");
    const parameters = parametersOf(
      "unload",
      name,
      await readBody(c.req.raw),
    );
    // unload_dependents: a model has no dependents here (no ensembles).
    const flag = parameters.unload_dependents ?? undefined;
    if (flag !== undefined && typeof flag !== "boolean") {
      throw bad(
        "unload",
        name,
        "parameters.unload_dependents: expected a boolean",
      );
    }
    const unknown = Object.keys(parameters).filter((k) =>
      k !== "unload_dependents" && parameters[k] !== null
    );
    if (unknown.length > 0) {
      throw bad(
        "unload",
        name,
        `unknown parameter ${
          quoteShort(unknown[0]!)
        } (allowed: unload_dependents)`,
      );
    }
    // As Triton: a model that is not loaded is the request's problem (400).
    await unloadModel(
      ctx,
      name,
      () => bad("unload", name, "it is not loaded"),
    );
    return new Response(null, { status: 200 });
  });

  return app;
}

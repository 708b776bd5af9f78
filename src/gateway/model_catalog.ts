/**
 * The gateway's record of model descriptions (declared inputs, outputs,
 * docstring) as returned by `addModel`/`updateModel`, and of their versions.
 *
 * @module
 */
import type {
  GatewayModelSpec,
  GatewayPool,
  GatewayPoolEvent,
} from "./gateway_pool.ts";
import { type InputValidator, InputValidatorCache } from "./input_validator.ts";
import { closeTimeoutOf, modelTimeoutOf } from "../_model_timeout.ts";
import { versionKey } from "../_model_version.ts";
import { modelEntries } from "./_pool_reads.ts";
import type { ModelSuspicion } from "../model_registry.ts";

/** The key of a model, or of one of its versions, in the catalog. */
function keyOf(name: string, version: string | undefined): string {
  return version === undefined ? name : versionKey(name, version);
}

/**
 * A model description (protocol §6) plus the spec it was loaded with.
 *
 * @example
 * ```ts
 * import type { GatewayModelInfo } from "@pyproxy/pyproxy";
 * const info: GatewayModelInfo = {
 *   name: "doubler",
 *   file: "doubler.py",
 *   inputs: { x: "number" },
 *   outputs: { y: "number" },
 * };
 * console.log(Object.keys(info.inputs ?? {})); // ["x"]
 * ```
 */
export interface GatewayModelInfo {
  /** Model name. */
  name: string;
  /**
   * Its version label, for a version of a model with versions
   * (docs/models.md, "Versions"); `version` is then the count of that
   * version's loads.
   */
  label?: string;
  /** With `label`: whether it is the model's default version. */
  default?: boolean;
  /**
   * The labels of the model's versions, in the order they were added (the
   * description of a model with versions by its name: its default one's).
   */
  versions?: string[];
  /** Class name. */
  class?: string;
  /** File under the models directory. */
  file?: string;
  /**
   * Version: 1 when first added, then one more on each successful add or
   * update of the name (never reused, even after a delete) while the
   * catalog lives.
   */
  version?: number;
  /** Declared inputs: field → type name, or a dict of its type and constraints. */
  inputs?: Record<string, string | Record<string, unknown>>;
  /** Declared outputs: field → type name, or a dict of a tensor's `type`, `items` and `datatype`. */
  outputs?: Record<string, string | Record<string, unknown>>;
  /** The class docstring. */
  doc?: string;
  /** Its batching (`batch_size`, `batch_delay_ms`), when it batches. */
  batch?: { size: number; delayMs: number };
  /** `true` when its `execute` yields: `POST .../stream` sends the items as they come. */
  streams?: boolean;
  /** Its class's `media_type`: the `Content-Type` of a `bytes` result (else `application/octet-stream`). */
  mediaType?: string;
  /**
   * The default (and, for `?timeout=`, the largest) timeout of its calls in
   * ms, when it has one of its own: its spec's `timeout` (`models[].timeout`,
   * the `PUT` body), else its class's `timeout_ms`. The routes show the
   * gateway's `requestTimeout` for a model without one.
   */
  timeout?: number;
  /**
   * Where `timeout` comes from: `"spec"` (the config or `PUT` body),
   * `"class"` (`timeout_ms`); the routes show `"default"` for the gateway's.
   */
  timeoutSource?: "spec" | "class" | "default";
  /**
   * Its class's `close_timeout_ms` in ms, when it has a `close()`: a
   * `DELETE`, or a `PUT` that replaces it, may spend up to twice this
   * retiring it (its calls in flight, then its `close()`), on top of
   * `loadTimeout`.
   */
  closeTimeoutMs?: number;
  /** How many workers load it (its spec's `workers`), when not every one. */
  workers?: number;
  /** With `workers`: the ids of the workers that hold it now. */
  slots?: string[];
  /**
   * With `workers`: why it is out of service (it crashed the workers it
   * was moved to; its calls answer 503 `ModelUnavailableError` until a
   * `PUT`). Absent: it is in service.
   */
  failedReason?: string;
  /**
   * Set while it is suspected of killing its worker soon after its load
   * (the pool's `loadCrashWindow`): the deaths laid on it so far, its
   * strikes (2 take it out of service), and a held replay under way
   * (`heldWorker`, `heldUntil`, ms since the epoch). It still serves
   * meanwhile. Absent: not suspected.
   */
  suspected?: ModelSuspicion;
  /**
   * Why its calls run on call threads, never inline on a worker's event
   * loop: one of its inline calls held that loop past its timeout, or while
   * the pool killed the worker for answering nothing (a hung call;
   * docs/reliability.md, "A fast model's call hangs"). Absent otherwise; a
   * `PUT` clears it.
   */
  threaded?: string;
  /** The options it was constructed with. */
  options?: Record<string, unknown>;
}

function asDescription(
  name: string,
  raw: unknown,
  spec: GatewayModelSpec,
): GatewayModelInfo {
  const d = typeof raw === "object" && raw !== null
    ? raw as Record<string, unknown>
    : {};
  const out: GatewayModelInfo = { name };
  if (spec.version !== undefined) out.label = spec.version;
  if (typeof d.class === "string") out.class = d.class;
  const file = typeof d.file === "string" ? d.file : spec.file;
  if (file !== undefined) out.file = file;
  if (typeof d.version === "number") out.version = d.version;
  if (typeof d.inputs === "object" && d.inputs !== null) {
    out.inputs = d.inputs as Record<string, string | Record<string, unknown>>;
  }
  if (typeof d.outputs === "object" && d.outputs !== null) {
    out.outputs = d.outputs as Record<string, string | Record<string, unknown>>;
  }
  if (typeof d.doc === "string") out.doc = d.doc;
  if (typeof d.batch === "object" && d.batch !== null) {
    out.batch = d.batch as { size: number; delayMs: number };
  }
  if (d.streams === true) out.streams = true;
  if (typeof d.mediaType === "string") out.mediaType = d.mediaType;
  const timeout = modelTimeoutOf(spec, d);
  if (timeout !== undefined) {
    out.timeout = timeout;
    out.timeoutSource = spec.timeout === undefined ? "class" : "spec";
  }
  const closeTimeoutMs = closeTimeoutOf(d);
  if (closeTimeoutMs !== undefined) out.closeTimeoutMs = closeTimeoutMs;
  if (spec.workers !== undefined) out.workers = spec.workers;
  if (spec.options !== undefined) out.options = spec.options;
  return out;
}

/**
 * Loads models through the pool and keeps their descriptions, with one
 * cached input schema per model version.
 *
 * The catalog owns the versions: each Python process counts its own (and a
 * restarted one starts again at 1), so the version a worker reports could go
 * backwards. Here a name's version only grows, by one on each successful
 * add or update, also across a remove and a new add.
 *
 * Over a pool with events (`on`, as the library's `Pool` has), the catalog
 * follows its model changes ({@linkcode ModelCatalog.follow}, which
 * `createGateway` calls): a model added, updated or removed on the pool
 * directly is described, validated and timed as the pool now has it.
 *
 * @example
 * ```ts ignore
 * const catalog = new ModelCatalog();
 * await catalog.add(pool, "scorer", { file: "scorer.py" });
 * console.log(catalog.get("scorer")?.inputs);
 * ```
 */
export class ModelCatalog {
  #models = new Map<string, GatewayModelInfo>();
  /** The models with a timeout of their own: what the execute path reads. */
  #timeouts = new Map<string, number>();
  /** The last version given to each name, kept after a remove. */
  #versions = new Map<string, number>();
  #validators = new InputValidatorCache();
  /**
   * The descriptions recorded from the pool's events, by the answer they
   * came with: the command's promise, which resolves with that same answer
   * after its event, finds it here rather than record it twice.
   */
  #recorded = new WeakMap<object, GatewayModelInfo>();
  /** The pools followed (`follow`), each once. */
  #followed = new WeakSet<object>();
  /** Counts model changes as they begin and end ({@linkcode ModelCatalog.changes}). */
  #changes = 0;

  /**
   * A count that moves whenever a model change through the catalog begins
   * or ends, or the pool reports one: a route that described a model before
   * an `await` (a request body's read) describes it again only when it
   * moved, rather than on every request.
   *
   * @example
   * ```ts ignore
   * const before = catalog.changes;
   * const body = await request.json();
   * if (catalog.changes !== before) model = catalog.describe(pool, name);
   * ```
   */
  get changes(): number {
    return this.#changes;
  }

  /**
   * Follows the pool's model changes (its `model` events): an add or
   * update recorded as it answered, a remove forgotten. Returns the
   * function that stops following (a no-op for a pool without `on`, or
   * already followed). `createGateway` calls it; loading models through
   * the catalog works without it.
   *
   * @example
   * ```ts ignore
   * const catalog = new ModelCatalog();
   * const stop = catalog.follow(pool);
   * await pool.addModel("scorer", { file: "scorer.py" });
   * console.log(catalog.get("scorer")?.inputs);
   * stop();
   * ```
   */
  follow(pool: Pick<GatewayPool, "on">): () => void {
    if (pool.on === undefined || this.#followed.has(pool)) return () => {};
    this.#followed.add(pool);
    const off = pool.on((ev) => this.#onEvent(ev));
    return () => {
      this.#followed.delete(pool);
      off();
    };
  }

  #onEvent(ev: GatewayPoolEvent): void {
    if (ev.type !== "model" || typeof ev.name !== "string") return;
    this.#changes++;
    if (ev.action === "remove") this.#forget(keyOf(ev.name, ev.version));
    else if (
      (ev.action === "add" || ev.action === "update") && ev.spec !== undefined
    ) {
      const desc = this.#answered(ev.name, ev.description, ev.spec);
      const raw = ev.description;
      if (typeof raw === "object" && raw !== null) {
        this.#recorded.set(raw, desc);
      }
    }
  }

  /** Records the answer of an add or update made through the catalog. */
  #resolved(
    name: string,
    raw: unknown,
    spec: GatewayModelSpec,
  ): GatewayModelInfo {
    if (typeof raw === "object" && raw !== null) {
      const seen = this.#recorded.get(raw);
      if (seen !== undefined) {
        this.#recorded.delete(raw);
        return seen;
      }
    }
    return this.#answered(name, raw, spec);
  }

  /** Records the pool's answer to an add or update. */
  #answered(
    name: string,
    raw: unknown,
    spec: GatewayModelSpec,
  ): GatewayModelInfo {
    const key = keyOf(name, spec.version);
    this.#validators.delete(key);
    return this.#record(key, asDescription(name, raw, spec));
  }

  #forget(name: string): void {
    this.#models.delete(name);
    this.#timeouts.delete(name);
    this.#validators.delete(name);
  }

  /** Records a description with the name's next version. */
  #record(name: string, desc: GatewayModelInfo): GatewayModelInfo {
    // The worker's own count only matters for a model changed around the
    // catalog (directly on the pool): the version still never goes back.
    const version = Math.max(
      (this.#versions.get(name) ?? 0) + 1,
      desc.version ?? 0,
    );
    this.#versions.set(name, version);
    desc.version = version;
    this.#models.set(name, desc);
    if (desc.timeout === undefined) this.#timeouts.delete(name);
    else this.#timeouts.set(name, desc.timeout);
    return desc;
  }

  /**
   * The version the next load of `name` (a version's internal name
   * `name@label`) will be recorded with: TF Serving's status names a model
   * still loading by it.
   *
   * @example
   * ```ts ignore
   * catalog.nextVersion("scorer"); // 1 before its first load, 2 after it
   * ```
   */
  nextVersion(name: string): number {
    return (this.#versions.get(name) ?? 0) + 1;
  }

  /** Adds a model to the pool and records its description. */
  async add(
    pool: Pick<GatewayPool, "addModel">,
    name: string,
    spec: GatewayModelSpec,
    options: { timeout?: number; signal?: AbortSignal } = {},
  ): Promise<GatewayModelInfo> {
    this.#changes++;
    try {
      return this.#resolved(
        name,
        await pool.addModel(name, spec, options),
        spec,
      );
    } finally {
      this.#changes++;
    }
  }

  /**
   * Updates a model in the pool and records its new description; the
   * answer adds `closeWarning` (not recorded) when the old version's
   * `close()` raised or overran.
   */
  async update(
    pool: Pick<GatewayPool, "updateModel">,
    name: string,
    spec: GatewayModelSpec,
    options: { timeout?: number } = {},
  ): Promise<GatewayModelInfo & { closeWarning?: string }> {
    this.#changes++;
    let out;
    try {
      out = await pool.updateModel(name, spec, options);
    } finally {
      this.#changes++;
    }
    const recorded = this.#resolved(name, out, spec);
    const warning = (out as { closeWarning?: unknown } | null)?.closeWarning;
    return typeof warning === "string"
      ? { ...recorded, closeWarning: warning }
      : recorded;
  }

  /**
   * Removes a model from the pool and forgets it, unless the name was
   * added again on the pool (its event recorded) before this answer came.
   */
  async remove(
    pool: Pick<GatewayPool, "removeModel">,
    name: string,
    options: { timeout?: number; version?: string } = {},
  ): Promise<unknown> {
    const key = keyOf(name, options.version);
    const before = this.#models.get(key);
    this.#changes++;
    let out;
    try {
      out = await pool.removeModel(name, options);
    } finally {
      this.#changes++;
    }
    const now = this.#models.get(key);
    if (now === undefined || now === before) this.#forget(key);
    return out;
  }

  /**
   * The timeout of a known model's calls when it has its own (`timeout`),
   * else `undefined`: one size check while no model has one, one map lookup
   * otherwise. Internal to the gateway's routes.
   *
   * @ignore
   */
  timeout(name: string): number | undefined {
    return this.#timeouts.size === 0 ? undefined : this.#timeouts.get(name);
  }

  /** The description, when the model was loaded through this catalog. */
  get(name: string): GatewayModelInfo | undefined {
    return this.#models.get(name);
  }

  /**
   * The input validator of a known model with declared inputs (cached per
   * version), else `undefined`.
   * Internal to the gateway's routes.
   *
   * @ignore
   */
  validator(name: string): InputValidator | undefined {
    const desc = this.#models.get(name);
    if (!desc?.inputs) return undefined;
    return this.#validators.get(name, desc.version ?? 0, desc.inputs);
  }

  /**
   * Describes the pool's models (those loaded before the catalog followed
   * the pool, or on a pool without events, have just a name, and their
   * timeout and close timeout when the pool reports them).
   */
  list(pool: Pick<GatewayPool, "status">): GatewayModelInfo[] {
    return pool.status().models.map((m) => this.#describe(m));
  }

  /**
   * Describes one of the pool's models as {@linkcode ModelCatalog.list}
   * does, `undefined` when the pool has none of that name.
   */
  describe(
    pool: Pick<GatewayPool, "status" | "modelStatus">,
    name: string,
    version?: string,
  ): GatewayModelInfo | undefined {
    // That name's entries only (a pool with `modelStatus`): the calls and
    // the probes of one model cost the same with thousands of others.
    const models = modelEntries(pool, name);
    // A model with versions: the one asked for, else its default, with the
    // labels of them all.
    const m = models.find((m) =>
      m.name === name &&
      (version === undefined
        ? m.version === undefined || m.default === true
        : m.version === version)
    );
    if (m === undefined) return undefined;
    const desc = this.#describe(m);
    if (m.version === undefined) return desc;
    return {
      ...desc,
      versions: models.filter((o) => o.name === name && o.version !== undefined)
        .map((o) => o.version!),
    };
  }

  /**
   * Describes model `name` at `version` (its default one without it; a
   * model without versions, at its own version number or none) as
   * {@linkcode ModelCatalog.describe} does, without `versions`: from that
   * one entry of the pool's status (`modelVersionStatus`), at a cost that
   * does not grow with the number of versions. `undefined` when the pool
   * cannot tell that way, or there is no such model or version (then
   * `describe` gives the 404's facts).
   */
  describeOne(
    pool: Pick<GatewayPool, "modelVersionStatus">,
    name: string,
    version?: string,
  ): GatewayModelInfo | undefined {
    if (pool.modelVersionStatus === undefined) return undefined;
    const m = pool.modelVersionStatus(name, version) ??
      (version === undefined ? undefined : pool.modelVersionStatus(name));
    if (m === undefined || m.name !== name) return undefined;
    if (version !== undefined && m.version !== version) {
      // A model without versions, by its own version number.
      if (m.version !== undefined) return undefined;
      const desc = this.#describe(m);
      return version === String(desc.version) ? desc : undefined;
    }
    return this.#describe(m);
  }

  /**
   * Describes each version of model `name` as
   * {@linkcode ModelCatalog.describe} does (`[]` for a model without
   * versions, or none): one read of that model's entries for them all.
   */
  describeVersions(
    pool: Pick<GatewayPool, "status" | "modelStatus">,
    name: string,
  ): GatewayModelInfo[] {
    return modelEntries(pool, name).flatMap((m) =>
      m.version === undefined ? [] : [this.#describe(m)]
    );
  }

  #describe(
    m: ReturnType<GatewayPool["status"]>["models"][number],
  ): GatewayModelInfo {
    const known = this.#models.get(keyOf(m.name, m.version));
    // A version says which one it is, and whether it is the default now.
    if (m.version !== undefined) {
      const out: GatewayModelInfo = {
        ...(known ?? { name: m.name }),
        label: m.version,
        default: m.default === true,
      };
      if (m.slots !== undefined) out.slots = [...m.slots];
      if (m.failedReason !== undefined) out.failedReason = m.failedReason;
      if (m.suspected !== undefined) out.suspected = m.suspected;
      if (m.threaded !== undefined) out.threaded = m.threaded;
      return known === undefined ? this.#unknown(m, out) : out;
    }
    // Its slots as they are now (a resize or a restart moves them).
    if (known !== undefined) {
      if (
        m.slots === undefined && m.failedReason === undefined &&
        m.suspected === undefined && m.threaded === undefined
      ) return known;
      const placed: GatewayModelInfo = { ...known };
      if (m.slots !== undefined) placed.slots = [...m.slots];
      // An unplaced model too: one quarantined for killing its workers
      // soon after its load (PoolOptions.loadCrashWindow).
      if (m.failedReason !== undefined) placed.failedReason = m.failedReason;
      if (m.suspected !== undefined) placed.suspected = m.suspected;
      if (m.threaded !== undefined) placed.threaded = m.threaded;
      return placed;
    }
    return this.#unknown(m, { name: m.name });
  }

  /** What the pool's status tells of a model loaded before the catalog followed it. */
  #unknown(
    m: ReturnType<GatewayPool["status"]>["models"][number],
    out: GatewayModelInfo,
  ): GatewayModelInfo {
    if (m.spec?.workers !== undefined) out.workers = m.spec.workers;
    if (m.slots !== undefined) out.slots = [...m.slots];
    if (m.failedReason !== undefined) out.failedReason = m.failedReason;
    if (m.suspected !== undefined) out.suspected = m.suspected;
    if (m.threaded !== undefined) out.threaded = m.threaded;
    if (m.timeout !== undefined) {
      out.timeout = m.timeout;
      out.timeoutSource = m.spec?.timeout === undefined ? "class" : "spec";
    }
    if (m.closeTimeoutMs !== undefined) out.closeTimeoutMs = m.closeTimeoutMs;
    return out;
  }
}

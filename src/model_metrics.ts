/**
 * Model metrics on the host: what model code records with
 * `pyproxy.metrics` (docs/models.md, "Metrics"), aggregated per model from
 * the workers' `metrics` events (protocol §6, "Model metrics").
 *
 * @module
 */
import type { Logger } from "./logger.ts";

/**
 * One series of a model metric, as {@linkcode ModelMetricStore.snapshot}
 * (and `pool.modelMetrics()`) returns it.
 *
 * Counters and histograms are summed across workers and restarts (a
 * counter never goes back while its model is loaded); a gauge is the last
 * value one worker set, with that worker's id in `worker`, and is dropped
 * when that worker's connection ends.
 *
 * @example
 * ```ts
 * import type { ModelMetricSeries } from "@pyproxy/pyproxy";
 * const series: ModelMetricSeries = {
 *   model: "doubler",
 *   name: "hits_total",
 *   type: "counter",
 *   labels: { path: "/a" },
 *   value: 3,
 * };
 * console.log(series.value); // 3
 * ```
 */
export interface ModelMetricSeries {
  /** The model whose call recorded it; `null`: recorded outside any model's call (eval code, other threads). */
  model: string | null;
  /** The name the model gave (`GET /metrics` shows it as `pyproxy_model_<name>`). */
  name: string;
  /** The kind of metric. */
  type: "counter" | "gauge" | "histogram";
  /** The model's labels. */
  labels: Record<string, string>;
  /** The description given at first use (`# HELP`), if any. */
  help?: string;
  /** Gauges only: the worker that set it. */
  worker?: string;
  /** Counters and gauges: the value. */
  value?: number;
  /** Histograms: the upper bounds of the buckets (without `+Inf`). */
  buckets?: number[];
  /** Histograms: observations per bucket, not cumulative; one more than `buckets` (the last: above every bound). */
  counts?: number[];
  /** Histograms: the sum of the observations. */
  sum?: number;
  /** Histograms: the number of observations. */
  count?: number;
}

/**
 * The model metrics at one time: the series and the updates dropped by
 * the cardinality bounds, by model (`""`: no model).
 *
 * @example
 * ```ts
 * import type { ModelMetricsSnapshot } from "@pyproxy/pyproxy";
 * const snapshot: ModelMetricsSnapshot = { series: [], dropped: { doubler: 2 } };
 * console.log(snapshot.dropped["doubler"]); // 2
 * ```
 */
export interface ModelMetricsSnapshot {
  /** The series, in the order they were first seen. */
  series: ModelMetricSeries[];
  /** Updates of series past the bounds, dropped, by model (`""`: no model). */
  dropped: Record<string, number>;
}

/**
 * Bounds of {@linkcode ModelMetricStore}.
 *
 * @example
 * ```ts
 * import type { ModelMetricsOptions } from "@pyproxy/pyproxy";
 * const options: ModelMetricsOptions = { maxSeriesPerModel: 100, maxSeries: 1000 };
 * console.log(options.maxSeries); // 1000
 * ```
 */
export interface ModelMetricsOptions {
  /**
   * Series one model may have (a gauge counts once per worker); updates of
   * further series are dropped, with one warning per model.
   * @default {1000}
   */
  maxSeriesPerModel?: number;
  /**
   * Series all models may have together.
   * @default {10000}
   */
  maxSeries?: number;
}

/**
 * Where a `metrics` event came from: one worker's connection. The store
 * tells sources apart by identity: keep one object per connection, and
 * pass the same one to {@linkcode ModelMetricStore.forgetSource} when it
 * closes (its gauges go; its counters stay).
 *
 * @example
 * ```ts
 * import { type ModelMetricSource, ModelMetricStore } from "@pyproxy/pyproxy";
 * const store = new ModelMetricStore();
 * const w1: ModelMetricSource = { worker: "w1" };
 * store.ingest(w1, {
 *   event: "metrics",
 *   series: [{ model: "m", name: "queue_depth", type: "gauge", labels: {}, value: 4 }],
 * });
 * console.log(store.size); // 1
 * store.forgetSource(w1); // its connection closed
 * console.log(store.size); // 0
 * ```
 */
export interface ModelMetricSource {
  /** The worker's id. */
  readonly worker: string;
}

type Kind = ModelMetricSeries["type"];

interface Family {
  type: Kind;
  help: string | undefined;
  buckets: number[] | undefined;
  series: number;
}

interface Series {
  model: string | null;
  name: string;
  labels: Record<string, string>;
  source: ModelMetricSource | undefined;
  value: number;
  counts: number[] | undefined;
  sum: number;
  count: number;
}

const NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
// A lone surrogate: UTF-8 (the scrape's body) turns it into U+FFFD, so two
// label values would render as one series, twice.
const LONE_SURROGATE = /\p{Cs}/u;
const RESERVED_LABELS = new Set(["model", "worker", "le", "quantile"]);
const MAX_NAME = 128;
const MAX_LABELS = 8;
const MAX_LABEL_VALUE = 256;
const MAX_HELP = 1024;
const MAX_BUCKETS = 32;
// Removed models whose late updates are dropped (the oldest forgotten first).
const MAX_REMOVED = 1000;

/**
 * Aggregates the model metrics of a pool's workers, within bounds; what
 * `pool.modelMetrics()` reads and the gateway's `GET /metrics` renders.
 * Each event is checked whole: a series that is not valid (a bad name,
 * label, number, a kind or buckets other than its name's) is dropped and
 * counted, as are series past the bounds.
 *
 * @example
 * ```ts
 * import { ModelMetricStore } from "@pyproxy/pyproxy";
 * const store = new ModelMetricStore();
 * const w0 = { worker: "w0" };
 * store.ingest(w0, {
 *   event: "metrics",
 *   series: [{ model: "m", name: "hits_total", type: "counter", labels: {}, value: 2 }],
 * });
 * store.ingest({ worker: "w1" }, {
 *   event: "metrics",
 *   series: [{ model: "m", name: "hits_total", type: "counter", labels: {}, value: 3 }],
 * });
 * console.log(store.snapshot().series[0]?.value); // 5
 * ```
 */
export class ModelMetricStore {
  #maxPerModel: number;
  #max: number;
  #logger: Logger | undefined;
  #families = new Map<string, Family>();
  #series = new Map<string, Series>();
  #perModel = new Map<string | null, number>();
  #dropped = new Map<string, number>();
  #warned = new Set<string>();
  #removed = new Set<string>();

  /** Creates an empty store. */
  constructor(options: ModelMetricsOptions = {}, logger?: Logger) {
    this.#maxPerModel = options.maxSeriesPerModel ?? 1000;
    this.#max = options.maxSeries ?? 10000;
    this.#logger = logger;
  }

  /** Series held now. */
  get size(): number {
    return this.#series.size;
  }

  /** Adds the deltas of one `metrics` event from `source`. */
  ingest(source: ModelMetricSource, event: Record<string, unknown>): void {
    const { series, dropped } = event;
    if (Array.isArray(series)) {
      for (const entry of series) this.#add(source, entry);
    }
    if (Array.isArray(dropped)) {
      for (const d of dropped) {
        if (typeof d !== "object" || d === null) continue;
        const { model, count } = d as Record<string, unknown>;
        if (
          (model === null || typeof model === "string") &&
          Number.isSafeInteger(count) && (count as number) > 0 &&
          !(model !== null && this.#removed.has(model))
        ) {
          this.#drop(model as string | null, count as number);
        }
      }
    }
  }

  /**
   * Drops the series of a removed model; its updates still on their way
   * are dropped too, until {@linkcode ModelMetricStore.modelAdded} says the
   * name is in use again.
   */
  forgetModel(model: string): void {
    for (const [key, s] of this.#series) {
      if (s.model === model) this.#delete(key, s);
    }
    this.#dropped.delete(model);
    this.#warned.delete(model);
    this.#removed.delete(model);
    this.#removed.add(model);
    if (this.#removed.size > MAX_REMOVED) {
      this.#removed.delete(this.#removed.values().next().value!);
    }
  }

  /** A model is (being) added under `model`: its updates count again. */
  modelAdded(model: string): void {
    this.#removed.delete(model);
  }

  /** Drops the gauges `source` set: its worker's connection ended. */
  forgetSource(source: ModelMetricSource): void {
    for (const [key, s] of this.#series) {
      if (s.source === source) this.#delete(key, s);
    }
  }

  /** A copy of the series and dropped counts. */
  snapshot(): ModelMetricsSnapshot {
    const series: ModelMetricSeries[] = [];
    for (const s of this.#series.values()) {
      const family = this.#families.get(s.name)!;
      const out: ModelMetricSeries = {
        model: s.model,
        name: s.name,
        type: family.type,
        labels: { ...s.labels },
      };
      if (family.help !== undefined) out.help = family.help;
      if (s.source !== undefined) out.worker = s.source.worker;
      if (family.type === "histogram") {
        out.buckets = [...family.buckets!];
        out.counts = [...s.counts!];
        out.sum = s.sum;
        out.count = s.count;
      } else {
        out.value = s.value;
      }
      series.push(out);
    }
    return { series, dropped: Object.fromEntries(this.#dropped) };
  }

  #add(source: ModelMetricSource, entry: unknown): void {
    if (typeof entry !== "object" || entry === null) return;
    const e = entry as Record<string, unknown>;
    const model = e.model;
    if (model !== null && typeof model !== "string") return;
    if (model !== null && this.#removed.has(model)) return;
    const checked = check(e);
    if (checked === undefined) return this.#drop(model, 1);
    const { name, type, labels } = checked;
    const family = this.#families.get(name);
    if (
      family !== undefined &&
      (family.type !== type ||
        (type === "histogram" && !sameBounds(family.buckets!, checked.buckets)))
    ) {
      return this.#drop(model, 1);
    }
    const gaugeSource = type === "gauge" ? source : undefined;
    const key = JSON.stringify([
      model,
      name,
      Object.entries(labels).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0),
      gaugeSource?.worker ?? null,
    ]);
    let s = this.#series.get(key);
    if (s === undefined) {
      const n = this.#perModel.get(model) ?? 0;
      if (n >= this.#maxPerModel || this.#series.size >= this.#max) {
        return this.#drop(model, 1);
      }
      this.#perModel.set(model, n + 1);
      s = {
        model,
        name,
        labels,
        source: gaugeSource,
        value: 0,
        counts: type === "histogram" ? checked.counts.map(() => 0) : undefined,
        sum: 0,
        count: 0,
      };
      this.#series.set(key, s);
      if (family === undefined) {
        this.#families.set(name, {
          type,
          help: checked.help,
          buckets: checked.buckets,
          series: 1,
        });
      } else {
        family.series++;
        family.help ??= checked.help;
      }
    } else if (gaugeSource !== undefined) {
      s.source = gaugeSource; // a restarted worker's new connection
    }
    if (type === "counter") {
      // Summed past the largest double: Infinity would go out as null in
      // ?format=json, and the sum never moves again.
      if (!Number.isFinite(s.value + checked.value)) {
        return this.#drop(model, 1);
      }
      s.value += checked.value;
    } else if (type === "gauge") s.value = checked.value;
    else {
      if (!Number.isFinite(s.sum + checked.value)) return this.#drop(model, 1);
      for (let i = 0; i < checked.counts.length; i++) {
        s.counts![i]! += checked.counts[i]!;
      }
      s.sum += checked.value;
      s.count += checked.count;
    }
  }

  #delete(key: string, s: Series): void {
    this.#series.delete(key);
    const n = (this.#perModel.get(s.model) ?? 1) - 1;
    if (n <= 0) this.#perModel.delete(s.model);
    else this.#perModel.set(s.model, n);
    const family = this.#families.get(s.name);
    if (family !== undefined && --family.series <= 0) {
      this.#families.delete(s.name);
    }
  }

  #drop(model: string | null, count: number): void {
    const label = model ?? "";
    this.#dropped.set(label, (this.#dropped.get(label) ?? 0) + count);
    if (!this.#warned.has(label) && this.#warned.size < MAX_REMOVED) {
      this.#warned.add(label);
      this.#logger?.warn(
        "Dropped model metric updates of model {model}: past the series bounds (maxSeriesPerModel {perModel}, maxSeries {max}) or not valid; counted in pyproxy_dropped_model_series_total",
        { model: label, perModel: this.#maxPerModel, max: this.#max },
      );
    }
  }
}

interface Checked {
  name: string;
  type: Kind;
  labels: Record<string, string>;
  help: string | undefined;
  /** Counter, gauge: the value; histogram: the sum. */
  value: number;
  buckets: number[] | undefined;
  counts: number[];
  count: number;
}

/** An entry of a `metrics` event, checked as the Python side checks it; `undefined` when not valid. */
function check(e: Record<string, unknown>): Checked | undefined {
  const { name, type, labels, help } = e;
  if (
    typeof name !== "string" || name.length > MAX_NAME || !NAME.test(name) ||
    name.startsWith("__")
  ) return undefined;
  if (type !== "counter" && type !== "gauge" && type !== "histogram") {
    return undefined;
  }
  if (
    help !== undefined &&
    (typeof help !== "string" || longer(help, MAX_HELP) ||
      LONE_SURROGATE.test(help))
  ) {
    return undefined;
  }
  if (typeof labels !== "object" || labels === null || Array.isArray(labels)) {
    return undefined;
  }
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) return undefined;
  const own: Record<string, string> = {};
  for (const [k, v] of entries) {
    if (
      k.length > MAX_NAME || !NAME.test(k) || k.startsWith("__") ||
      RESERVED_LABELS.has(k) || typeof v !== "string" ||
      longer(v, MAX_LABEL_VALUE) || LONE_SURROGATE.test(v)
    ) return undefined;
    own[k] = v;
  }
  const base = {
    name,
    type: type as Kind,
    labels: own,
    help: help as string | undefined,
  };
  if (type !== "histogram") {
    const value = e.value;
    if (typeof value !== "number" || !Number.isFinite(value)) return undefined;
    if (type === "counter" && value < 0) return undefined;
    return { ...base, value, buckets: undefined, counts: [], count: 0 };
  }
  const { buckets, counts, sum, count } = e;
  if (
    !Array.isArray(buckets) || buckets.length === 0 ||
    buckets.length > MAX_BUCKETS || !Array.isArray(counts) ||
    counts.length !== buckets.length + 1 || typeof sum !== "number" ||
    !Number.isFinite(sum) || !Number.isSafeInteger(count) ||
    (count as number) < 0
  ) return undefined;
  for (let i = 0; i < buckets.length; i++) {
    const b = buckets[i];
    if (typeof b !== "number" || !Number.isFinite(b)) return undefined;
    if (i > 0 && b <= buckets[i - 1]) return undefined;
  }
  let total = 0;
  for (const c of counts) {
    if (!Number.isSafeInteger(c) || c < 0) return undefined;
    total += c;
  }
  if (total !== count) return undefined;
  return {
    ...base,
    value: sum,
    buckets: buckets as number[],
    counts: counts as number[],
    count: count as number,
  };
}

/**
 * Whether `text` has more than `max` characters as Python counts them (code
 * points: an emoji is one, two UTF-16 units here), as the bounds are Python's.
 */
function longer(text: string, max: number): boolean {
  if (text.length <= max) return false;
  if (text.length > 2 * max) return true;
  let n = 0;
  for (const _ of text) if (++n > max) return true;
  return false;
}

function sameBounds(
  a: readonly number[],
  b: readonly number[] | undefined,
): boolean {
  return b !== undefined && a.length === b.length &&
    a.every((x, i) => x === b[i]);
}

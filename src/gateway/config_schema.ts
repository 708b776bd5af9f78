/**
 * The valibot schema of `pyproxy.json`, the gateway's config file.
 *
 * @module
 */
import * as v from "valibot";

const LEVELS = ["trace", "debug", "info", "warning", "error", "fatal"] as const;

/** A LogTape log level. */
export type LogLevel = typeof LEVELS[number];

function int(min: number, max = Number.MAX_SAFE_INTEGER) {
  const msg = max === Number.MAX_SAFE_INTEGER
    ? `expected an integer >= ${min}`
    : `expected an integer from ${min} to ${max}`;
  return v.pipe(
    v.number(msg),
    v.integer(msg),
    v.minValue(min, msg),
    v.maxValue(max, msg),
  );
}

const str = (what = "a non-empty string") =>
  v.pipe(v.string(`expected ${what}`), v.minLength(1, `expected ${what}`));
const bool = () => v.boolean("expected true or false");
const level = () => v.picklist(LEVELS, `expected one of ${LEVELS.join(", ")}`);
const record = () => v.record(v.string(), v.unknown(), "expected an object");

function strict<T extends v.ObjectEntries>(entries: T) {
  const allowed = Object.keys(entries).join(", ");
  // One message for both failures: the issue of an unknown key carries that key in its path.
  return v.strictObject(
    entries,
    (issue) => {
      if (issue.expected === "never") {
        return `unknown field (allowed: ${allowed})`;
      }
      if (issue.input === undefined && issue.path?.length) return "is required";
      return "expected an object";
    },
  );
}

/** A model loaded at start. */
export const ModelEntrySchema = strict({
  name: v.pipe(
    v.string("expected a model name"),
    v.regex(
      /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/,
      "expected a model name (letters, digits, _ . -)",
    ),
  ),
  file: str("a file path under modelsDir"),
  options: v.optional(record()),
  class: v.optional(str("a class name")),
});

/** Limits on requests and on the pool. */
export const LimitsSchema = strict({
  bodyLimit: v.optional(int(1)),
  requestTimeout: v.optional(int(1)),
  maxInFlightPerWorker: v.optional(int(1)),
  maxQueue: v.optional(int(0)),
  shutdownGrace: v.optional(int(0)),
});

/** CORS settings. */
export const CorsSchema = strict({
  origins: v.array(str("an origin"), "expected an array of origins"),
  credentials: v.optional(bool()),
  maxAge: v.optional(int(0)),
});

/**
 * The schema of `pyproxy.json`. Every field is optional; unknown fields are
 * refused so typos do not pass silently.
 *
 * @example
 * ```ts
 * import * as v from "valibot";
 * import { ConfigSchema } from "./config_schema.ts";
 * console.log(v.safeParse(ConfigSchema, { workers: 4, port: 9000 }).success); // true
 * console.log(v.safeParse(ConfigSchema, { workers: 0 }).success); // false
 * ```
 */
export const ConfigSchema = strict({
  $schema: v.optional(v.string()),
  host: v.optional(str("a hostname or IP address")),
  port: v.optional(int(0, 65535)),
  workers: v.optional(int(1, 1024)),
  python: v.optional(str("a python executable")),
  modelsDir: v.optional(str("a directory")),
  models: v.optional(
    v.array(
      ModelEntrySchema,
      "expected an array of {name, file, options?, class?}",
    ),
  ),
  plugins: v.optional(
    v.record(
      v.string(),
      v.union(
        [record(), v.literal(false)],
        "expected an options object or false",
      ),
      "expected an object",
    ),
  ),
  limits: v.optional(LimitsSchema),
  channels: v.optional(
    strict({ historySize: v.optional(int(0)), bufferSize: v.optional(int(1)) }),
  ),
  token: v.optional(
    v.pipe(
      v.string("expected a string"),
      v.minLength(16, "expected a token of at least 16 characters"),
    ),
  ),
  allowedHosts: v.optional(
    v.array(str("a host name"), "expected an array of host names"),
  ),
  cors: v.optional(CorsSchema),
  allowEval: v.optional(bool()),
  allowManage: v.optional(bool()),
  debug: v.optional(bool()),
  logLevel: v.optional(level()),
  logLevels: v.optional(
    v.record(v.string(), level(), "expected an object of category → level"),
  ),
});

/** `pyproxy.json` as parsed (every field optional). */
export type GatewayConfig = v.InferOutput<typeof ConfigSchema>;

/** A model to load at start. */
export type ModelEntry = v.InferOutput<typeof ModelEntrySchema>;

/**
 * The OpenTelemetry SDK's environment variables the gateway's tracing reads
 * (docs/gateway.md, "Tracing"), as the OTel specification defines them
 * (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/
 * and .../protocol/exporter/): under the flags and the file's `tracing`.
 *
 * A variable that is set but wrong fails the start with a `ConfigError`
 * naming it, as a wrong field of the file does (none is read with
 * `OTEL_SDK_DISABLED=true`; all but the endpoint's and the protocol's only
 * when tracing is on and the flags and the file do not set that field, the
 * resource attributes' whenever tracing is on: they go under the file's); a
 * header variable's error never repeats its text (it holds API keys), only
 * which entry is wrong.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import { headerNameOk, headerValueOk } from "./_trace_headers.ts";

/** What the variables set (each only when set and not empty). */
export interface OtelEnv {
  /** `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`. */
  endpoint?: string;
  /** `OTEL_SERVICE_NAME`. */
  serviceName?: string;
  /** `OTEL_RESOURCE_ATTRIBUTES`: the spans' resource's attributes. */
  resourceAttributes?: Record<string, string>;
  /** `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`. */
  headers?: Record<string, string>;
  /** From `OTEL_TRACES_SAMPLER` (and `OTEL_TRACES_SAMPLER_ARG`). */
  sampleRatio?: number;
  /** `OTEL_BSP_MAX_QUEUE_SIZE`. */
  maxQueue?: number;
  /** `OTEL_BSP_SCHEDULE_DELAY`. */
  batchIntervalMs?: number;
  /** `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`. */
  batchSize?: number;
  /**
   * `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`;
   * with `OTEL_BSP_EXPORT_TIMEOUT`, the smaller of the two (an SDK's export
   * is cut by both).
   */
  exportTimeoutMs?: number;
  /**
   * `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION`, else
   * `OTEL_EXPORTER_OTLP_COMPRESSION`: `gzip` or `none`.
   */
  compression?: "gzip" | "none";
  /** From `OTEL_PROPAGATORS`. */
  propagation?: "tracecontext" | "none";
  /** `OTEL_SDK_DISABLED=true`: no tracing, whatever sets an endpoint. */
  disabled?: true;
  /**
   * A variable set but wrong: thrown only when tracing is on and the field
   * is not the flags' or the file's (an environment made for other
   * services' SDKs, `OTEL_TRACES_SAMPLER=always_on` say, must not fail a
   * gateway that does not trace).
   */
  problems?: Partial<Record<OtelField, ConfigError>>;
}

/** The fields of `tracing` a variable can set that a wrong one fails. */
export type OtelField =
  | "headers"
  | "resourceAttributes"
  | "sampleRatio"
  | "maxQueue"
  | "batchIntervalMs"
  | "batchSize"
  | "exportTimeoutMs"
  | "compression"
  | "propagation";

/**
 * The integer variables of the batch span processor and the exporter: the
 * field each sets and its bounds (those of the file's field).
 */
const INTEGERS: ReadonlyArray<
  readonly [
    OtelField & ("maxQueue" | "batchIntervalMs" | "batchSize"),
    string,
    number,
    number,
  ]
> = [
  ["maxQueue", "OTEL_BSP_MAX_QUEUE_SIZE", 1, 1_000_000],
  ["batchIntervalMs", "OTEL_BSP_SCHEDULE_DELAY", 1, 3_600_000],
  ["batchSize", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 1_000_000],
];

/** The bounds of an export's timeout, in ms (the file's `exportTimeoutMs`). */
export const EXPORT_TIMEOUT_BOUNDS = [1, 600_000] as const;

/** The samplers pyproxy's parent-based sampling can be, as the spec names them. */
const SAMPLERS =
  "parentbased_always_on, parentbased_always_off or parentbased_traceidratio";

/**
 * The variables `env` gives (empty counts as unset), checked; `undefined`
 * when none is set. `checkEndpoint` checks an endpoint as the file's
 * `tracing.endpoint` is (a `ConfigError` naming `source`).
 */
export function otelEnv(
  env: (name: string) => string | undefined,
  checkEndpoint: (endpoint: string, source: string) => void,
): OtelEnv | undefined {
  const read = (name: string) => env(name)?.trim() || undefined;
  const out: OtelEnv = {};
  // The SDK's booleans: "true" in any case is true, anything else false.
  // Disabled, the others are not read: an environment set up for other
  // services (OTEL_EXPORTER_OTLP_PROTOCOL=grpc, OTEL_TRACES_SAMPLER=always_on)
  // failed the start of the gateway it was meant to turn tracing off for.
  if (read("OTEL_SDK_DISABLED")?.toLowerCase() === "true") {
    return { disabled: true };
  }
  const tracesEndpoint = read("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  const baseEndpoint = read("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (tracesEndpoint !== undefined) {
    checkEndpoint(tracesEndpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    out.endpoint = tracesEndpoint;
  } else if (baseEndpoint !== undefined) {
    // The base URL of all signals: the traces' path appended (the spec's
    // rule: after a "/" when it has none).
    const endpoint = `${baseEndpoint}${
      baseEndpoint.endsWith("/") ? "" : "/"
    }v1/traces`;
    checkEndpoint(endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT");
    out.endpoint = endpoint;
  }
  if (out.endpoint !== undefined) {
    // An endpoint meant for gRPC (port 4317) would fail every POST.
    const protocolName = read("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") !==
        undefined
      ? "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
      : "OTEL_EXPORTER_OTLP_PROTOCOL";
    const protocol = read(protocolName);
    if (
      protocol !== undefined && protocol !== "http/json" &&
      protocol !== "http/protobuf"
    ) {
      throw new ConfigError(
        `${protocolName}: ${
          JSON.stringify(protocol.slice(0, 50))
        } is not supported: the gateway sends OTLP/HTTP with JSON (set it to http/json, and the endpoint to the collector's HTTP port, 4318)`,
        { details: { source: protocolName } },
      );
    }
  }
  const serviceName = read("OTEL_SERVICE_NAME");
  if (serviceName !== undefined) out.serviceName = serviceName;
  const attributes = read("OTEL_RESOURCE_ATTRIBUTES");
  if (attributes !== undefined) {
    try {
      out.resourceAttributes = resourceAttributes(attributes);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      (out.problems ??= {}).resourceAttributes = err;
    }
  }
  for (
    const name of [
      "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
      "OTEL_EXPORTER_OTLP_HEADERS",
    ]
  ) {
    const value = read(name);
    if (value === undefined) continue;
    // The traces' own wins whole: the two are not merged.
    try {
      out.headers = otelHeaders(value, name);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      (out.problems ??= {}).headers = err;
    }
    break;
  }
  for (const [field, name, min, max] of INTEGERS) {
    const value = read(name);
    if (value === undefined) continue;
    try {
      out[field] = integer(name, value, min, max);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      (out.problems ??= {})[field] = err;
    }
  }
  try {
    const [min, max] = EXPORT_TIMEOUT_BOUNDS;
    const exporterName = read("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") !== undefined
      ? "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
      : "OTEL_EXPORTER_OTLP_TIMEOUT";
    const exporter = read(exporterName);
    const processor = read("OTEL_BSP_EXPORT_TIMEOUT");
    const timeouts = [
      exporter === undefined
        ? undefined
        : integer(exporterName, exporter, min, max),
      processor === undefined
        ? undefined
        : integer("OTEL_BSP_EXPORT_TIMEOUT", processor, min, max),
    ].filter((ms) => ms !== undefined);
    if (timeouts.length > 0) out.exportTimeoutMs = Math.min(...timeouts);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    (out.problems ??= {}).exportTimeoutMs = err;
  }
  const compressionName =
    read("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") !== undefined
      ? "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
      : "OTEL_EXPORTER_OTLP_COMPRESSION";
  const compression = read(compressionName);
  if (compression !== undefined) {
    // The spec's values: gzip and none (an SDK may know others; a value
    // the gateway cannot send with would leave the collector's load as it
    // was silently).
    if (compression === "gzip" || compression === "none") {
      out.compression = compression;
    } else {
      (out.problems ??= {}).compression = new ConfigError(
        `${compressionName}: ${
          JSON.stringify(compression.slice(0, 50))
        } is not supported: expected gzip or none`,
        { details: { source: compressionName } },
      );
    }
  }
  const propagators = read("OTEL_PROPAGATORS");
  if (propagators !== undefined) {
    try {
      const value = propagation(propagators);
      if (value !== undefined) out.propagation = value;
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      (out.problems ??= {}).propagation = err;
    }
  }
  const sampler = read("OTEL_TRACES_SAMPLER");
  if (sampler !== undefined) {
    try {
      out.sampleRatio = sampleRatio(sampler, read("OTEL_TRACES_SAMPLER_ARG"));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      (out.problems ??= {}).sampleRatio = err;
    }
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/** Propagators an SDK may list that the gateway does not read. */
const OTHER_PROPAGATORS = new Set([
  "b3",
  "b3multi",
  "jaeger",
  "xray",
  "ottrace",
]);

/**
 * An `OTEL_PROPAGATORS` value (comma-separated): `tracecontext` among them,
 * clients' `traceparent` is read (`baggage` and the others beside it are
 * not: the gateway passes no baggage on); `none` (alone) or `baggage`
 * alone, no trace context is read; no name (`,`), as unset. A list of
 * propagators the gateway cannot read without `tracecontext` (`b3` alone:
 * the clients' context would be dropped silently) or an unknown name fails.
 */
function propagation(value: string): "tracecontext" | "none" | undefined {
  const names = value.split(",").map((name) => name.trim()).filter((name) =>
    name !== ""
  );
  // No name at all (","): as unset, as an empty variable is (it read as
  // none, turning off clients' trace context unasked).
  if (names.length === 0) return undefined;
  const unknown = names.find((name) =>
    name !== "tracecontext" && name !== "baggage" && name !== "none" &&
    !OTHER_PROPAGATORS.has(name)
  );
  if (unknown !== undefined) {
    throw new ConfigError(
      `OTEL_PROPAGATORS: ${
        JSON.stringify(unknown.slice(0, 50))
      } is not a propagator: expected tracecontext, baggage or none (the gateway reads W3C trace context only)`,
      { details: { source: "OTEL_PROPAGATORS" } },
    );
  }
  if (names.includes("tracecontext")) return "tracecontext";
  const other = names.find((name) => OTHER_PROPAGATORS.has(name));
  if (other !== undefined) {
    throw new ConfigError(
      `OTEL_PROPAGATORS: ${other} is not supported: the gateway reads W3C trace context only (traceparent, tracestate); add tracecontext (clients that send both are joined), or set none`,
      { details: { source: "OTEL_PROPAGATORS" } },
    );
  }
  return "none";
}

/**
 * An `OTEL_EXPORTER_OTLP_*HEADERS` value: comma-separated `key=value`
 * entries (the W3C Baggage format without properties), values
 * percent-decoded, names and values trimmed. Checked as `tracing.headers`
 * is (names and values fetch takes); the error names the variable and the
 * entry's position, never its text.
 */
function otelHeaders(value: string, variable: string): Record<string, string> {
  const headers = keyValues(
    value,
    variable,
    "api-key=abc%20def",
    (name, text) => {
      if (!headerNameOk(name)) {
        return "has a key that is not a header name (letters, digits and !#$%&'*+-.^_`|~)";
      }
      if (!headerValueOk(text)) {
        return "has a value with CR, LF, NUL or a character beyond Latin-1 once decoded";
      }
      return undefined;
    },
  );
  return Object.fromEntries(
    [...headers].map(([name, text]) => [name.toLowerCase(), text]),
  );
}

/**
 * An `OTEL_RESOURCE_ATTRIBUTES` value: the same `key=value` list, keys
 * without control characters (the spec's Baggage keys are tokens; a
 * resource's conventional keys, `k8s.pod.name`, are). The spec asks an SDK
 * to drop the whole variable on an error; as the other variables, a wrong
 * one fails the start instead.
 */
function resourceAttributes(value: string): Record<string, string> {
  return Object.fromEntries(
    keyValues(
      value,
      "OTEL_RESOURCE_ATTRIBUTES",
      "deployment.environment=prod,k8s.pod.name=scorer-0",
      (name, text) =>
        // deno-lint-ignore no-control-regex
        /[\x00-\x1f\x7f]/.test(name + text)
          ? "has a control character once decoded"
          : undefined,
    ),
  );
}

/**
 * A comma-separated list of `key=value` entries (the W3C Baggage format
 * without properties): empty entries skipped, keys and values trimmed,
 * values percent-decoded; a later key replaces an earlier one. `check`
 * says what is wrong with an entry, if anything. A Map, made an object by
 * the callers with `fromEntries` (which defines its keys): on Bun (not
 * Deno, which removed the setter), an assignment to an object's
 * "__proto__" key sets its prototype, and a `__proto__=...` entry was
 * dropped without a word.
 */
function keyValues(
  value: string,
  variable: string,
  example: string,
  check: (key: string, value: string) => string | undefined,
): Map<string, string> {
  const out = new Map<string, string>();
  const entries = value.split(",");
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!.trim();
    // Empty entries (a trailing comma) are skipped, as the Baggage format's.
    if (entry === "") continue;
    const wrong = (why: string) =>
      new ConfigError(
        `${variable}: entry ${
          i + 1
        } ${why} (expected comma-separated key=value entries, values URL-encoded, e.g. ${example})`,
        { details: { source: variable, entry: i + 1 } },
      );
    const eq = entry.indexOf("=");
    if (eq <= 0) throw wrong("has no key=value");
    const key = entry.slice(0, eq).trim();
    let text: string;
    try {
      text = decodeURIComponent(entry.slice(eq + 1).trim());
    } catch {
      throw wrong("has a value that is not URL-encoded (a stray %)");
    }
    const problem = check(key, text);
    if (problem !== undefined) throw wrong(problem);
    out.set(key, text);
  }
  return out;
}

/**
 * An integer variable (the spec's: decimal digits) from `min` to `max`; a
 * config error naming it otherwise. (The spec asks an SDK to warn and use
 * the default; as the other variables here, a wrong one fails the start
 * instead: an `OTEL_BSP_MAX_QUEUE_SIZE=10k` ignored would go unseen.)
 */
function integer(name: string, value: string, min: number, max: number) {
  const n = /^\d{1,10}$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) {
    throw new ConfigError(
      `${name}: expected an integer from ${min} to ${max}, got ${
        JSON.stringify(value.slice(0, 50))
      }`,
      { details: { source: name } },
    );
  }
  return n;
}

/** The `sampleRatio` of an `OTEL_TRACES_SAMPLER` (and its argument). */
function sampleRatio(sampler: string, arg: string | undefined): number {
  switch (sampler) {
    case "parentbased_always_on":
      return 1;
    case "parentbased_always_off":
      return 0;
    case "parentbased_traceidratio": {
      // The spec's default argument: 1.0.
      if (arg === undefined) return 1;
      const ratio = Number(arg);
      if (!(ratio >= 0 && ratio <= 1)) {
        throw new ConfigError(
          `OTEL_TRACES_SAMPLER_ARG: expected a number from 0 to 1, got ${
            JSON.stringify(arg.slice(0, 50))
          }`,
          { details: { source: "OTEL_TRACES_SAMPLER_ARG" } },
        );
      }
      return ratio;
    }
  }
  throw new ConfigError(
    `OTEL_TRACES_SAMPLER: ${
      JSON.stringify(sampler.slice(0, 50))
    } is not supported: the gateway's sampling is parent-based (a client's traceparent decides for its call), expected ${SAMPLERS}; OTEL_SDK_DISABLED=true turns tracing off`,
    { details: { source: "OTEL_TRACES_SAMPLER" } },
  );
}

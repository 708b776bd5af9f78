/**
 * The options of the gateway's OpenTelemetry tracing (docs/gateway.md,
 * "Tracing").
 *
 * @module
 */
import type { TlsFetchOptions } from "../runtime/types.ts";

/**
 * Tracing settings of the gateway (`GatewayOptions.tracing`, pyproxy.json
 * `tracing`, `serve --trace-endpoint`).
 *
 * @example
 * ```ts
 * import type { TracingOptions } from "@pyproxy/pyproxy";
 * const tracing: TracingOptions = { endpoint: "http://127.0.0.1:4318/v1/traces", sampleRatio: 0.1 };
 * console.log(tracing.sampleRatio); // 0.1
 * ```
 */
export interface TracingOptions {
  /** The collector's OTLP/HTTP traces URL (JSON encoding), e.g. `http://127.0.0.1:4318/v1/traces`. */
  endpoint: string;
  /** The `service.name` of the spans' resource. @default {"pyproxy"} */
  serviceName?: string;
  /**
   * Other attributes of the spans' resource (`deployment.environment`,
   * `k8s.pod.name`...), string values; `service.name` and pyproxy's
   * `telemetry.sdk.*` are not taken from here. `loadConfig` fills it from
   * `OTEL_RESOURCE_ATTRIBUTES` under the file's. @default {undefined}
   */
  resourceAttributes?: Record<string, string>;
  /**
   * Share of the calls without a sampled or unsampled parent that are
   * traced, 0 to 1; a client's `traceparent` decides for its call (as
   * OpenTelemetry's `parentbased_traceidratio` sampler).
   * @default {1}
   */
  sampleRatio?: number;
  /** Headers of each POST to the collector (an API key). @default {{}} */
  headers?: Record<string, string>;
  /** Most spans waiting to be sent; beyond, spans are dropped (counted). @default {2048} */
  maxQueue?: number;
  /** How often waiting spans are sent, in ms (a full batch goes at once). @default {5000} */
  batchIntervalMs?: number;
  /** Most spans per POST (at most `maxQueue`): a full batch goes at once. @default {512} */
  batchSize?: number;
  /** How long a POST to the collector may take, in ms. @default {10000} */
  exportTimeoutMs?: number;
  /**
   * `gzip`: each POST's body is compressed (`Content-Encoding: gzip`, which
   * OpenTelemetry's collector takes), ~10x smaller for spans: for a
   * collector across a metered or slow link. @default {"none"}
   */
  compression?: "gzip" | "none";
  /**
   * `tracecontext`: a client's W3C `traceparent` (and `tracestate`) makes
   * its call's span a child of the client's and decides whether it is
   * traced. `none`: clients' headers are not read, each call's span starts
   * a trace, sampled by `sampleRatio` alone (a public gateway: a client's
   * `traceparent` with its sampled flag set would have every call of its
   * traced, whatever the ratio). @default {"tracecontext"}
   */
  propagation?: "tracecontext" | "none";
  /**
   * TLS of the POSTs to an `https` collector, PEM texts: `ca` a CA to trust
   * (a private CA), `cert` and `key` (both or
   * neither) the client's certificate for mutual TLS. `loadConfig` fills it
   * from `OTEL_EXPORTER_OTLP_CERTIFICATE`, `..._CLIENT_CERTIFICATE` and
   * `..._CLIENT_KEY` (file paths). Needs the runtime's `tlsFetch` (Deno's
   * and Bun's have it). @default {undefined}
   */
  tls?: TlsFetchOptions;
  /**
   * The longest a stream's span lasts, in ms: a stream still open then has
   * its span ended and sent (`pyproxy.stream.span_end: "max_duration"`)
   * and goes on untraced; `Infinity`: a span ends with its stream only.
   * A graceful shutdown ends the spans of the streams still open.
   * @default {600000}
   */
  maxStreamSpanMs?: number;
}

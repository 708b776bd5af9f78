// A stand-in for an OpenTelemetry collector in the tracing tests: a real
// HTTP receiver on port 0 whose OTLP/JSON requests are parsed and kept.
import { until } from "./_gateway_harness.ts";

/** A span as OTLP/JSON sends it. */
export interface Span {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: Array<{ key: string; value: Record<string, unknown> }>;
  status: { code: number; message?: string };
}

/** A collector on port 0: keeps the spans of each OTLP/JSON POST. */
export class Collector implements AsyncDisposable {
  readonly spans: Span[] = [];
  readonly requests: Array<{ headers: Headers; body: unknown }> = [];
  #server: Deno.HttpServer<Deno.NetAddr>;
  /** `delayMs`: how long it takes to take a POST in (a slow collector). */
  constructor(delayMs = 0) {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      async (req) => {
        // A gzipped body (`compression: "gzip"`) as the OTel collector
        // takes it.
        const body = req.headers.get("content-encoding") === "gzip"
          ? await new Response(
            req.body!.pipeThrough(new DecompressionStream("gzip")),
          ).json()
          : await req.json();
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        this.requests.push({ headers: req.headers, body });
        for (const rs of body.resourceSpans) {
          for (const ss of rs.scopeSpans) this.spans.push(...ss.spans);
        }
        return Response.json({});
      },
    );
  }
  /** Its traces URL (OTLP/HTTP's `/v1/traces` on {@linkcode base}). */
  get url(): string {
    return `${this.base}/v1/traces`;
  }
  /** Its base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` gives it. */
  get base(): string {
    return `http://127.0.0.1:${this.#server.addr.port}`;
  }
  /** The span of the call with request id `id`. */
  spanOf(id: string): Promise<Span> {
    return until(
      () =>
        Promise.resolve(
          this.spans.find((s) => attr(s, "pyproxy.request_id") === id),
        ),
      `the span of ${id}`,
    );
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#server.shutdown();
  }
}

export function attr(span: Span, key: string): unknown {
  const value = span.attributes.find((a) => a.key === key)?.value;
  return value === undefined ? undefined : Object.values(value)[0];
}

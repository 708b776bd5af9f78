/**
 * Sends finished spans to an OpenTelemetry collector over OTLP/HTTP with
 * the JSON encoding (a plain `fetch`: no dependency). Spans wait in a
 * bounded queue; one POST is in flight at a time, every `intervalMs` or as
 * soon as a batch is full; a full queue drops new spans (counted, never
 * waited on: a request is never slowed by its span). A collector that
 * answers 429, 502, 503 or 504 (OTLP/HTTP's retryable statuses: it is up
 * but cannot take the batch now) gets the same batch again after the
 * pause, up to {@linkcode MAX_ATTEMPTS} POSTs in all (a graceful shutdown's
 * last export does not retry). A collector that is down, slow or answers
 * anything else costs the batch it was sent (counted as dropped). Each
 * failure costs a doubling pause before the next POST (up to 30 s, and at
 * least a Retry-After) and one log line — never an exception in the
 * gateway. The batch kept for a retry counts in `maxQueue`: memory stays
 * bounded whatever the collector does.
 *
 * @module
 */
import type { Logger } from "../logger.ts";

/** A finished span, as the gateway's tracing builds it. */
export interface ExportSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  traceState?: string;
  name: string;
  /** OTLP's `SpanKind`: 2 is SERVER. */
  kind: number;
  /** Wall-clock start and end, in ms since the epoch (fractions kept). */
  startMs: number;
  endMs: number;
  attributes: Record<string, string | number>;
  /** Set on an error: OTLP's `STATUS_CODE_ERROR` with this message. */
  error?: string;
}

/** Options of {@linkcode OtlpExporter}. */
export interface OtlpExporterOptions {
  /** The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`. */
  endpoint: string;
  /** The resource's `service.name`. @default {"pyproxy"} */
  serviceName?: string;
  /**
   * The resource's other attributes; `service.name` and `telemetry.sdk.*`
   * are the exporter's own.
   */
  resourceAttributes?: Record<string, string>;
  /** The instrumentation scope's version (pyproxy's). */
  version?: string;
  /** Extra headers of each POST (a collector's API key). @default {{}} */
  headers?: Record<string, string>;
  /** Most spans waiting; beyond, new spans are dropped. @default {2048} */
  maxQueue?: number;
  /** Most spans per POST: a full batch goes at once. @default {512} */
  batchSize?: number;
  /** How often waiting spans are sent, in ms. @default {5000} */
  intervalMs?: number;
  /** How long a POST may take, in ms. @default {10000} */
  timeoutMs?: number;
  /** `gzip`: each POST's body gzipped (`Content-Encoding: gzip`). @default {"none"} */
  compression?: "gzip" | "none";
  /** Logs failed POSTs (one line each: at most one per interval). */
  logger: Logger;
  /** The `fetch` to POST with (tests). @default {globalThis.fetch} */
  fetch?: typeof fetch;
  /**
   * Frees what `fetch` holds (a TLS client), once the exporter is closed
   * and its last POST is over.
   */
  closeFetch?: () => void;
}

/** The most POSTs of one batch a collector's 429, 502, 503 or 504 gets. */
const MAX_ATTEMPTS = 5;
/** OTLP/HTTP's retryable statuses. */
const RETRYABLE = new Set([429, 502, 503, 504]);

/** The longest pause after failed POSTs, in ms. */
const MAX_BACKOFF_MS = 30_000;
/** The longest a collector's Retry-After is waited (a larger one is cut). */
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * The exporter; see the module doc. `add` is all a request does.
 *
 * @example
 * ```ts ignore
 * const exporter = new OtlpExporter({ endpoint: "http://127.0.0.1:4318/v1/traces", logger });
 * exporter.add(span);
 * await exporter.flush(2000);
 * ```
 */
export class OtlpExporter {
  #queue: ExportSpan[] = [];
  /** A batch a collector asked to send again, and its POSTs so far. */
  #retry: { batch: ExportSpan[]; attempts: number } | undefined;
  #dropped = 0;
  #exported = 0;
  #inFlight: Promise<void> | undefined;
  /** The spans of the POST in flight. */
  #inFlightCount = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #failures = 0;
  /** No POST before this (`Date.now()`), a collector's Retry-After; 0: none. */
  #notBefore = 0;
  readonly #endpoint: string;
  /** The endpoint as logged: without credentials or a query (API keys). */
  readonly #shownEndpoint: string;
  readonly #maxQueue: number;
  readonly #batchSize: number;
  readonly #intervalMs: number;
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #gzip: boolean;
  readonly #resource: unknown;
  readonly #scope: unknown;
  readonly #logger: Logger;
  readonly #fetch: typeof fetch;
  readonly #closeFetch: (() => void) | undefined;
  /** Aborts the POST in flight: the exporter is closed. */
  readonly #closing = new AbortController();

  constructor(options: OtlpExporterOptions) {
    this.#endpoint = options.endpoint;
    this.#shownEndpoint = shownEndpoint(options.endpoint);
    this.#maxQueue = options.maxQueue ?? 2048;
    this.#batchSize = Math.min(options.batchSize ?? 512, this.#maxQueue);
    this.#intervalMs = options.intervalMs ?? 5000;
    this.#timeoutMs = options.timeoutMs ?? 10_000;
    this.#gzip = options.compression === "gzip";
    this.#headers = {
      ...options.headers,
      "content-type": "application/json",
      ...(this.#gzip ? { "content-encoding": "gzip" } : {}),
    };
    this.#resource = {
      attributes: [
        attribute("service.name", options.serviceName ?? "pyproxy"),
        ...Object.entries(options.resourceAttributes ?? {})
          .filter(([key]) =>
            key !== "service.name" && !key.startsWith("telemetry.sdk.")
          )
          .map(([key, value]) => attribute(key, value)),
        attribute("telemetry.sdk.name", "pyproxy"),
        attribute("telemetry.sdk.language", "js"),
      ],
    };
    this.#scope = options.version === undefined
      ? { name: "pyproxy" }
      : { name: "pyproxy", version: options.version };
    this.#logger = options.logger;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#closeFetch = options.closeFetch;
  }

  /**
   * Stops for good: no more POSTs or timers (a collector's `Retry-After`
   * of minutes kept a timer, and with it the process, alive), the POST in
   * flight aborted, spans added later dropped; then frees `closeFetch`'s
   * client. After {@linkcode flush}, at a gateway's end. Idempotent.
   */
  close(): void {
    if (this.#closing.signal.aborted) return;
    this.#closing.abort();
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // What waits is not sent any more.
    this.#dropped += this.#queue.length + (this.#retry?.batch.length ?? 0);
    this.#queue = [];
    this.#retry = undefined;
    const free = () => this.#closeFetch?.();
    if (this.#inFlight === undefined) free();
    else void this.#inFlight.finally(free);
  }

  /** Spans dropped so far: the queue was full, or their POST failed. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Spans the collector accepted so far. */
  get exported(): number {
    return this.#exported;
  }

  /**
   * Spans held now: waiting, kept for a retry, and in the POST in flight
   * (at most `maxQueue` and a batch).
   */
  get held(): number {
    return this.#queue.length + (this.#retry?.batch.length ?? 0) +
      this.#inFlightCount;
  }

  /** Queues a finished span (or drops it when the queue is full); never throws. */
  add(span: ExportSpan): void {
    if (
      this.#closing.signal.aborted ||
      this.#queue.length + (this.#retry?.batch.length ?? 0) >= this.#maxQueue
    ) {
      this.#dropped++;
      return;
    }
    this.#queue.push(span);
    if (this.#inFlight !== undefined) return;
    const pause = this.#pause();
    if (pause <= 0) this.#sendNow();
    else this.#schedule(pause);
  }

  /**
   * How long before the next POST: none for a full batch, else the
   * interval; after failures the interval doubled for each in a row (up to
   * 30 s), and never before a collector's Retry-After has passed.
   */
  #pause(): number {
    const backoff = this.#failures === 0
      ? (this.#queue.length >= this.#batchSize ? 0 : this.#intervalMs)
      : Math.min(this.#intervalMs * 2 ** this.#failures, MAX_BACKOFF_MS);
    return Math.max(backoff, this.#notBefore - Date.now());
  }

  /**
   * Sends what waits now (after the POST in flight), one batch after the
   * other, waiting at most `timeoutMs` in all: a graceful shutdown's last
   * export. What is left then stays queued.
   */
  async flush(timeoutMs = 5000): Promise<void> {
    if (this.#closing.signal.aborted) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const left = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), timeoutMs);
    });
    const deadline = Date.now() + timeoutMs;
    try {
      while (
        this.#inFlight !== undefined || this.#queue.length > 0 ||
        this.#retry !== undefined
      ) {
        if (this.#inFlight === undefined) {
          // The last export: a batch that fails is not tried again.
          this.#sendNow(Math.max(1, deadline - Date.now()), true);
        }
        if (await Promise.race([this.#inFlight, left]) === "late") break;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  #schedule(ms: number): void {
    if (this.#timer !== undefined || this.#closing.signal.aborted) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (
        this.#inFlight === undefined &&
        (this.#queue.length > 0 || this.#retry !== undefined)
      ) {
        this.#sendNow();
      }
    }, ms);
  }

  #sendNow(timeoutMs = this.#timeoutMs, last = false): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const retry = this.#retry;
    this.#retry = undefined;
    const batch = retry?.batch ?? this.#queue.splice(0, this.#batchSize);
    const attempt = (retry?.attempts ?? 0) + 1;
    this.#inFlightCount = batch.length;
    this.#inFlight = this.#post(
      batch,
      timeoutMs,
      last ? MAX_ATTEMPTS : attempt,
    ).finally(() => {
      this.#inFlight = undefined;
      this.#inFlightCount = 0;
      if (this.#queue.length === 0 && this.#retry === undefined) return;
      // More waits: a full batch goes now unless the collector is failing
      // (or asked to wait); else after #pause().
      this.#schedule(this.#pause());
    });
  }

  /**
   * POSTs `batch`, its `attempt`th POST; a retryable failure before the
   * last keeps it in `#retry`.
   */
  async #post(
    batch: ExportSpan[],
    timeoutMs: number,
    attempt: number,
  ): Promise<void> {
    let problem: string | undefined;
    let retryable = false;
    try {
      const json = JSON.stringify(this.#request(batch));
      const body = this.#gzip ? await gzipped(json) : json;
      const res = await this.#fetch(this.#endpoint, {
        method: "POST",
        headers: this.#headers,
        body,
        signal: AbortSignal.any([
          AbortSignal.timeout(timeoutMs),
          this.#closing.signal,
        ]),
        // A redirect is not followed: fetch would send the headers (API
        // keys; only Authorization is dropped) and the spans to wherever
        // the collector points, another host included.
        redirect: "manual",
      });
      // The body is read (and bounded by the same timeout) so the
      // connection is reused, but no more than ANSWER_BYTES of it: an
      // OTLP answer is a few bytes, and what it says matters only on an
      // error; a collector's endless or 2 GB answer is cancelled. A body
      // that cannot be read (the connection closed before its end, a TLS
      // collector's close without close_notify) changes nothing: the
      // status is the collector's answer, and a 2xx took the batch.
      const text = await answerText(res).catch(() => "");
      if (res.status >= 300 && res.status < 400) {
        const to = res.headers.get("location") ?? "";
        problem = `HTTP ${res.status} redirect to ${
          JSON.stringify(to.slice(0, 200))
        } not followed (set the endpoint to the collector's own URL)`;
      } else if (!res.ok) {
        problem = `HTTP ${res.status} ${text.slice(0, 200)}`.trim();
        // A collector that takes no gzip: each batch was dropped with a
        // bare 415, which did not name the setting.
        if (res.status === 415 && this.#gzip) {
          problem +=
            " (the collector may not take gzipped bodies: set tracing.compression to none)";
        }
        retryable = RETRYABLE.has(res.status);
        if (retryable) {
          const wait = retryAfterMs(res.headers.get("retry-after"));
          if (wait > 0) this.#notBefore = Date.now() + wait;
        }
      }
    } catch (err) {
      problem = failureText(err);
    }
    if (problem === undefined) {
      this.#failures = 0;
      this.#exported += batch.length;
      return;
    }
    if (this.#closing.signal.aborted) {
      // Closed: its flush gave up on it, and said nothing more is sent.
      this.#dropped += batch.length;
      return;
    }
    this.#failures++;
    if (retryable && attempt < MAX_ATTEMPTS) {
      this.#retry = { batch, attempts: attempt };
      this.#logger.warn(
        "Cannot export {count} spans to {endpoint}: {problem} (POST {attempt} of at most {max}: sent again after a pause)",
        {
          count: batch.length,
          endpoint: this.#shownEndpoint,
          problem,
          attempt,
          max: MAX_ATTEMPTS,
        },
      );
      return;
    }
    this.#dropped += batch.length;
    this.#logger.warn(
      "Cannot export {count} spans to {endpoint}: {problem} ({dropped} spans dropped so far)",
      {
        count: batch.length,
        endpoint: this.#shownEndpoint,
        problem,
        dropped: this.#dropped,
      },
    );
  }

  #request(batch: ExportSpan[]): unknown {
    return {
      resourceSpans: [{
        resource: this.#resource,
        scopeSpans: [{ scope: this.#scope, spans: batch.map(otlpSpan) }],
      }],
    };
  }
}

/** A span in OTLP/JSON: ids as hex, times as decimal strings of ns. */
/**
 * The wait a `Retry-After` asks for (delta-seconds or an HTTP date), at most
 * {@linkcode MAX_RETRY_AFTER_MS}; 0 for none or one that does not parse.
 */
function retryAfterMs(value: string | null): number {
  if (value === null) return 0;
  const text = value.trim();
  const ms = /^\d+$/.test(text)
    ? Number(text) * 1000
    : Date.parse(text) - Date.now();
  return ms > 0 ? Math.min(ms, MAX_RETRY_AFTER_MS) : 0;
}

/** The most of a collector's answer read (its first bytes, for a message). */
const ANSWER_BYTES = 4096;

/**
 * `text` as UTF-8, gzipped (the runtime's `CompressionStream`). Not off the
 * event loop on Deno: its compression runs on the main thread (measured:
 * 1.2 MB of JSON held the loop 33-80 ms, Bun's 1-9 ms), about as long again
 * as the `JSON.stringify` before it; the default batch (512 spans, ~300 KB)
 * costs a few ms.
 */
async function gzipped(text: string): Promise<ArrayBuffer> {
  const stream = new Blob([text]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return await new Response(stream).arrayBuffer();
}

/**
 * An error's name and message, and its causes': fetch's own message is
 * only `fetch failed`, the reason (connection refused, a DNS failure, a
 * certificate from an unknown CA) being its `cause`'s. At most 3 causes
 * and 500 characters.
 */
function failureText(err: unknown): string {
  if (!(err instanceof Error)) return String(err).slice(0, 500);
  let text = `${err.name}: ${err.message}`;
  let cause: unknown = err.cause;
  for (let i = 0; i < 3 && cause !== undefined && cause !== null; i++) {
    const message = cause instanceof Error ? cause.message : String(cause);
    if (message !== "" && !text.includes(message)) text += ` (${message})`;
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return text.slice(0, 500);
}

/**
 * The text of the first {@linkcode ANSWER_BYTES} of `res`'s body; the rest,
 * if any, is cancelled unread (the connection is then closed, not reused).
 */
async function answerText(res: Response): Promise<string> {
  if (res.body === null) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    if (size > ANSWER_BYTES) {
      await reader.cancel().catch(() => {});
      break;
    }
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
  }
  const bytes = new Uint8Array(Math.min(size, ANSWER_BYTES));
  let at = 0;
  for (const c of chunks) {
    if (at >= bytes.length) break;
    const part = c.subarray(0, bytes.length - at);
    bytes.set(part, at);
    at += part.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

function otlpSpan(span: ExportSpan): Record<string, unknown> {
  const out: Record<string, unknown> = {
    traceId: span.traceId,
    spanId: span.spanId,
    name: span.name,
    kind: span.kind,
    startTimeUnixNano: nanos(span.startMs),
    endTimeUnixNano: nanos(span.endMs),
    attributes: Object.entries(span.attributes).map(([key, value]) =>
      attribute(key, value)
    ),
    status: span.error === undefined
      ? { code: 0 }
      : { code: 2, message: span.error },
  };
  if (span.parentSpanId !== undefined) out.parentSpanId = span.parentSpanId;
  if (span.traceState !== undefined) out.traceState = span.traceState;
  return out;
}

function attribute(key: string, value: string | number): unknown {
  return {
    key,
    value: typeof value === "string"
      ? { stringValue: value }
      : Number.isInteger(value)
      ? { intValue: String(value) }
      : { doubleValue: value },
  };
}

/**
 * Epoch ms (with fractions) as ns in a decimal string, to the µs (µs since
 * the epoch are a safe integer until the year 2255).
 */
function nanos(ms: number): string {
  return `${Math.round(ms * 1000)}000`;
}

/**
 * `endpoint` for the log: a collector's URL may carry its credentials
 * (`https://user:key@host/...`, which fetch sends as Basic auth) or a key in
 * its query (`?api_key=`); each failed export's log line named them whole.
 */
function shownEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    return endpoint;
  }
  const secret = url.username !== "" || url.password !== "";
  return `${url.protocol}//${secret ? "***@" : ""}${url.host}${url.pathname}${
    url.search === "" ? "" : "?***"
  }`;
}

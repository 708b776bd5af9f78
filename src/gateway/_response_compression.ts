/**
 * Gzip for the gateway's large responses (model results), when the client
 * accepts it.
 *
 * @module
 */
import { stringifyJson } from "../_exact_json.ts";

/** The default of {@linkcode ResponseCompressionOptions.minBytes}. */
export const DEFAULT_COMPRESS_MIN_BYTES = 1024;

/** Options of {@linkcode ResponseCompression}. */
export interface ResponseCompressionOptions {
  /**
   * Smallest body compressed, in bytes (a JSON text: in characters, the
   * same for ASCII). Smaller bodies go as they are, and their request's
   * `Accept-Encoding` is not even read.
   * @default {1024}
   */
  minBytes?: number;
  /**
   * What a body (its request's answer) is sent as: by the gateway,
   * `answerBody`, so that a large one's delivery is waited for by the
   * server's shutdown. Without: the body as it is.
   */
  deliver?: (
    request: Request,
    body: string | Uint8Array | ReadableStream<Uint8Array>,
    headers: Record<string, string>,
  ) => BodyInit;
}

/**
 * Whether an `Accept-Encoding` header takes gzip: `gzip` (or `x-gzip`)
 * listed with a q-value above 0, or, when it is not listed, `*` with one.
 * `identity;q=0` alone does not make gzip acceptable (the body then goes
 * uncompressed: the gateway never answers 406). A q-value that is not a
 * number counts as 0. Case and spaces are ignored.
 *
 * @example
 * ```ts
 * import { acceptsGzip } from "./_response_compression.ts";
 * console.log(acceptsGzip("gzip, deflate, br"), acceptsGzip("gzip;q=0, *")); // true false
 * ```
 */
export function acceptsGzip(header: string | null): boolean {
  if (header === null) return false;
  let gzip: number | undefined;
  let star: number | undefined;
  // Split by hand, once through: the header is the client's, and may be long.
  let start = 0;
  while (start < header.length) {
    let end = header.indexOf(",", start);
    if (end === -1) end = header.length;
    const entry = header.slice(start, end);
    start = end + 1;
    const semi = entry.indexOf(";");
    const coding = (semi === -1 ? entry : entry.slice(0, semi)).trim()
      .toLowerCase();
    if (coding !== "gzip" && coding !== "x-gzip" && coding !== "*") continue;
    const q = semi === -1 ? 1 : qValue(entry.slice(semi + 1));
    if (coding === "*") star = q;
    else gzip = Math.max(gzip ?? 0, q);
  }
  return gzip !== undefined ? gzip > 0 : star !== undefined && star > 0;
}

/** The `q` of a coding's parameters (`q=0.5`): 1 without one, 0 when not a number. */
function qValue(params: string): number {
  for (const param of params.split(";")) {
    const p = param.trim();
    if (p[0] !== "q" && p[0] !== "Q") continue;
    const eq = p.indexOf("=");
    if (eq === -1 || p.slice(1, eq).trim() !== "") continue;
    const q = Number(p.slice(eq + 1).trim());
    return Number.isFinite(q) ? q : 0;
  }
  return 1;
}

const NO_TRANSFORM = /(?:^|,)[\t ]*no-transform[\t ]*(?:,|$)/i;

/**
 * Whether a model's headers (`host.set_header`) hold `Cache-Control:
 * no-transform`: its result then goes as it is, uncompressed (RFC 9111
 * §5.2.2.6: a proxy must not transform such content; Express's
 * `compression` leaves it alone too). A model whose result holds a secret
 * beside text its caller chose opts out of `compress` so (BREACH).
 *
 * @example
 * ```ts
 * import { noTransform } from "./_response_compression.ts";
 * console.log(noTransform({ headers: { "Cache-Control": "private, no-transform" } })); // true
 * ```
 */
export function noTransform(
  meta: { headers?: Record<string, string> } | undefined,
): boolean {
  const headers = meta?.headers;
  if (headers === undefined) return false;
  for (const name in headers) {
    if (
      name.toLowerCase() === "cache-control" &&
      NO_TRANSFORM.test(headers[name]!)
    ) return true;
  }
  return false;
}

/**
 * Media types worth compressing: text, JSON, XML and JavaScript ones
 * (`text/csv`, `application/ld+json`, `image/svg+xml`...), by the type or
 * the subtype's `+` suffix, not by a word anywhere in it: the Office
 * formats (`application/vnd.openxmlformats-officedocument...`) are zip
 * archives. Images, audio, archives and `application/octet-stream` are left
 * alone: most are compressed already, and the gateway cannot tell for the
 * rest.
 */
const COMPRESSIBLE =
  /^(?:text\/|[^/;]+\/(?:[^;]*\+)?(?:x-)?(?:json(?:l|-seq)?|ndjson|xml|javascript|ecmascript)[\t ]*(?:;|$))/i;

/**
 * Compresses large model results with gzip for clients that accept it:
 * a body of at least `minBytes` gets `Content-Encoding: gzip` (streamed
 * through `CompressionStream` 64 KiB at a time, so without a
 * `Content-Length`) and
 * `Vary: Accept-Encoding`, which an uncompressed body of that size gets
 * too (a cache must not serve one client's form to another). Smaller
 * bodies are answered as they are, without a look at `Accept-Encoding`.
 *
 * @example
 * ```ts
 * import { ResponseCompression } from "./_response_compression.ts";
 * const compression = new ResponseCompression({ minBytes: 16 });
 * const request = new Request("http://localhost/", { headers: { "accept-encoding": "gzip" } });
 * const res = compression.json(request, { text: "a".repeat(100) });
 * console.log(res.headers.get("content-encoding")); // gzip
 * ```
 */
export class ResponseCompression {
  /** Smallest body compressed, in bytes. */
  readonly minBytes: number;

  readonly #deliver: NonNullable<ResponseCompressionOptions["deliver"]>;

  /** Compression of bodies of `minBytes` and more. */
  constructor(options: ResponseCompressionOptions = {}) {
    this.minBytes = options.minBytes ?? DEFAULT_COMPRESS_MIN_BYTES;
    this.#deliver = options.deliver ?? ((_request, body) => body as BodyInit);
  }

  /**
   * `value` as a JSON response (a `BigInt` written exactly, as
   * `jsonResponse` does), compressed when large and accepted.
   */
  json(request: Request, value: unknown, status = 200): Response {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (err) {
      text = stringifyJson(value);
      if (text === undefined) throw err;
    }
    const headers: Record<string, string> = {
      "content-type": "application/json",
    };
    if (text.length < this.minBytes) {
      return new Response(this.#deliver(request, text, headers), {
        status,
        headers,
      });
    }
    return this.#large(request, text, status, headers);
  }

  /**
   * A bytes response in `headers["content-type"]`, compressed when large,
   * of a compressible type (text, JSON, XML, JavaScript) and accepted.
   */
  bytes(
    request: Request,
    bytes: Uint8Array,
    headers: Record<string, string>,
  ): Response {
    if (
      bytes.byteLength < this.minBytes ||
      !COMPRESSIBLE.test(headers["content-type"] ?? "")
    ) {
      return new Response(this.#deliver(request, bytes, headers), { headers });
    }
    return this.#large(request, bytes, 200, headers);
  }

  /**
   * A route's own answer (the inference protocol's JSON or binary tensors),
   * compressed when large and accepted, whatever its type: a client that
   * asks for gzip there asked for it (Triton's `response_compression_algorithm`).
   */
  body(
    request: Request,
    body: string | Uint8Array,
    headers: Record<string, string>,
  ): Response {
    const size = typeof body === "string" ? body.length : body.byteLength;
    if (size < this.minBytes) {
      return new Response(this.#deliver(request, body, headers), { headers });
    }
    return this.#large(request, body, 200, headers);
  }

  #large(
    request: Request,
    body: string | Uint8Array,
    status: number,
    headers: Record<string, string>,
  ): Response {
    headers["vary"] = "accept-encoding";
    if (!acceptsGzip(request.headers.get("accept-encoding"))) {
      return new Response(this.#deliver(request, body, headers), {
        status,
        headers,
      });
    }
    headers["content-encoding"] = "gzip";
    const bytes = typeof body === "string" ? UTF8.encode(body) : body;
    const stream = pieces(bytes).pipeThrough(
      new CompressionStream("gzip") as unknown as TransformStream<
        Uint8Array,
        Uint8Array
      >,
    );
    return new Response(this.#deliver(request, stream, headers), {
      status,
      headers,
    });
  }
}

const UTF8 = new TextEncoder();

/**
 * Bytes given to the compressor at once. Deno's `CompressionStream`
 * compresses a whole write in one step on the gateway's thread (~25 ms a
 * MB), and `Blob.stream()` yields a body in one chunk: 64 KiB steps (~1.5
 * ms each) let other requests run between them.
 */
const PIECE = 64 * 1024;

/** `bytes` as a stream of views of {@linkcode PIECE} bytes, each made when the compressor asks. */
function pieces(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(bytes.subarray(offset, offset + PIECE));
      offset += PIECE;
      if (offset >= bytes.byteLength) controller.close();
    },
  }, { highWaterMark: 0 });
}

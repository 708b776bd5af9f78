/**
 * Request bodies sent with a `Content-Encoding` (gzip, deflate): the
 * codings named, and the body decoded under the gateway's body limit.
 *
 * @module
 */
import { HTTPException } from "hono/http-exception";
import { httpError } from "./error_response.ts";
import { ByteCollector } from "./_byte_collector.ts";

/** The `DecompressionStream` format of each content coding taken (RFC 9110 §8.4.1). */
const FORMATS: Record<string, CompressionFormat> = {
  "gzip": "gzip",
  // RFC 9110: a recipient should take x-gzip as gzip.
  "x-gzip": "gzip",
  // HTTP's "deflate" is the zlib format (RFC 1950), DecompressionStream's "deflate".
  "deflate": "deflate",
  // Not br, though both runtimes' DecompressionStream take "brotli": Deno's
  // inflates what one write holds in one piece, and 16 bytes of brotli can
  // hold 32 MiB (256 MiB of zeros fit in 211 bytes), so no size of write
  // bounds what it allocates before the limit can be checked.
};

/** The codings a body may have, as a 415 lists them. */
export const SUPPORTED_CODINGS = "gzip, x-gzip, deflate";

/**
 * Bytes written to a decompressor at once, for a body limit of `limit`
 * bytes. Deno's `DecompressionStream` inflates a whole write before
 * yielding any of it (a 1 MB write of a gzip bomb came out as one 1 GiB
 * chunk); deflate expands at most ~1032 times, so a write of `limit / 1032`
 * bytes comes out as at most about `limit` bytes, which the limit then
 * sees. Between 256 bytes and 16 KiB: each write costs some µs of stream
 * machinery (writes of 256 bytes made decoding a 0.5 MB gzip body 26 ms
 * instead of ~6). Bun's yields its output in pieces anyway.
 */
function pieceSize(limit: number): number {
  return Math.min(16384, Math.max(256, Math.floor(limit / 1032)));
}

/**
 * Codings stacked on one body at most (`gzip, gzip` is two): each is a
 * decompressor to run, and no client has a use for more.
 */
export const MAX_CODINGS = 2;

/**
 * The decompressor formats of a `Content-Encoding` header, in the order
 * they undo the codings (the last coding applied, named last, first), or
 * `undefined` when there is nothing to undo (`identity`, empty). Throws
 * 415 `UnsupportedMediaType` for a coding the gateway cannot undo, or more
 * than {@linkcode MAX_CODINGS} of them; names are compared without case.
 */
export function contentCodings(
  header: string,
): CompressionFormat[] | undefined {
  const formats: CompressionFormat[] = [];
  // Split by hand: the header is the client's, and may be long.
  let start = 0;
  while (start <= header.length) {
    let end = header.indexOf(",", start);
    if (end === -1) end = header.length;
    const name = header.slice(start, end).trim().toLowerCase();
    start = end + 1;
    if (name === "" || name === "identity") continue;
    const format = Object.hasOwn(FORMATS, name) ? FORMATS[name] : undefined;
    if (format === undefined) throw unsupported(name);
    if (formats.length === MAX_CODINGS) throw tooManyCodings();
    formats.unshift(format);
  }
  return formats.length === 0 ? undefined : formats;
}

function unsupported(name: string): Error {
  const shown = name.length <= 64 ? name : `${name.slice(0, 64)}...`;
  return httpError(
    415,
    "UnsupportedMediaType",
    `Cannot read request: Content-Encoding ${
      JSON.stringify(shown)
    } is not supported (supported: ${SUPPORTED_CODINGS}; or send the body uncompressed)`,
    { supported: SUPPORTED_CODINGS.split(", ") },
    { "accept-encoding": "gzip, deflate" },
  );
}

function tooManyCodings(): Error {
  return httpError(
    415,
    "UnsupportedMediaType",
    `Cannot read request: the Content-Encoding names more than ${MAX_CODINGS} codings (compress the body once)`,
    { supported: SUPPORTED_CODINGS.split(", ") },
  );
}

/** 413 for an encoded body, or a body once decoded, over the limit. */
function tooLarge(limit: number, decoded: boolean, size?: number): Error {
  const what = decoded
    ? "the body, decoded,"
    : size === undefined
    ? "the encoded body"
    : `an encoded body of ${size} bytes`;
  return httpError(
    413,
    "PayloadTooLarge",
    `Cannot read request: ${what} is over the limit of ${limit} bytes`,
    decoded ? { limit, decoded: true } : { limit },
  );
}

/** 400 for a body its coding cannot undo (corrupt, truncated, trailing bytes). */
function corrupt(formats: readonly CompressionFormat[], err: unknown): Error {
  const detail = err instanceof Error && err.message
    ? `: ${err.message.slice(0, 200)}`
    : "";
  return httpError(
    400,
    "InvalidContentEncoding",
    `Cannot read request: the body is not valid ${
      [...formats].reverse().join(", ")
    } data (corrupt, cut short, or with bytes after its end)${detail}`,
  );
}

/** What the body stream (the client's bytes) did; read by the error mapping. */
interface SourceState {
  failed: boolean;
}

/**
 * The request's body stream, counted as it comes: errors with 413 past
 * `limit` (the encoded body), and notes when the client's stream failed
 * (an incomplete body, not a corrupt one).
 */
function countedSource(
  body: ReadableStream<Uint8Array>,
  limit: number,
  state: SourceState,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let size = 0;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        state.failed = true;
        throw err;
      }
      if (chunk.done) return controller.close();
      size += chunk.value.byteLength;
      if (size > limit) {
        reader.cancel().catch(() => {});
        return controller.error(tooLarge(limit, false));
      }
      enqueuePieces(controller, chunk.value, pieceSize(limit));
    },
    cancel: (reason) => reader.cancel(reason).catch(() => {}),
  }, { highWaterMark: 0 });
}

/** `chunk` as views of at most `piece` bytes (no copy). */
function enqueuePieces(
  controller: { enqueue(chunk: Uint8Array): void },
  chunk: Uint8Array,
  piece: number,
): void {
  if (chunk.byteLength <= piece) return controller.enqueue(chunk);
  for (let i = 0; i < chunk.byteLength; i += piece) {
    controller.enqueue(chunk.subarray(i, i + piece));
  }
}

/**
 * A decompressor's output, counted: errors with 413 past `limit`; passed
 * on in pieces when another decompressor follows. Each stage is counted,
 * not only the last: a body of empty gzip members stacked under another
 * coding would otherwise make the first stage inflate without end while
 * the last one yields nothing.
 */
class DecodedLimitStream extends TransformStream<Uint8Array, Uint8Array> {
  constructor(limit: number, last: boolean) {
    let size = 0;
    super({
      transform(chunk, controller) {
        size += chunk.byteLength;
        if (size > limit) controller.error(tooLarge(limit, true));
        else if (last) controller.enqueue(chunk);
        else enqueuePieces(controller, chunk, pieceSize(limit));
      },
    });
  }
}

/**
 * Reads `request`'s body undoing its content codings (`formats`, from
 * {@linkcode contentCodings}), without holding more than `limit` bytes of
 * it at any stage: 413 when the encoded body is larger (from its
 * `Content-Length`, before reading, or as it streams), and 413 saying
 * "decoded" once a decompressor's output passes `limit` (the decompression
 * stops there: a bomb costs what it takes to inflate `limit` bytes). A
 * body its codings cannot undo (corrupt, truncated, bytes after the end)
 * is a 400 `InvalidContentEncoding`, one the client stopped sending a 400
 * `IncompleteBody` (from `incomplete`). `watch` bounds the time the whole
 * read takes (the body guard): it cancels the streams when it gives up.
 */
export async function readDecodedBody(
  request: Request,
  formats: readonly CompressionFormat[],
  limit: number,
  watch: (
    read: Promise<Uint8Array>,
    cancel: () => void,
  ) => Promise<Uint8Array>,
  incomplete: () => Error,
): Promise<Uint8Array> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    throw tooLarge(limit, false, Number(declared));
  }
  if (!request.body || declared === "0") return new Uint8Array(0);
  const state: SourceState = { failed: false };
  let stream = countedSource(request.body, limit, state);
  for (const [i, format] of formats.entries()) {
    // DecompressionStream's writable is typed for any BufferSource.
    const decompress = new DecompressionStream(
      format,
    ) as unknown as TransformStream<Uint8Array, Uint8Array>;
    stream = stream.pipeThrough(decompress)
      .pipeThrough(new DecodedLimitStream(limit, i === formats.length - 1));
  }
  const reader = stream.getReader();
  try {
    return await watch(
      collect(reader, limit),
      () => void reader.cancel().catch(() => {}),
    );
  } catch (err) {
    if (err instanceof HTTPException) throw err;
    throw state.failed ? incomplete() : corrupt(formats, err);
  }
}

/**
 * The stream's chunks, joined as they come (each stage already bounded
 * them to `limit`): a body trickled in bytes comes out of the decompressor
 * in as many small pieces, each an object of its own if kept.
 */
async function collect(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  limit: number,
): Promise<Uint8Array> {
  const bytes = new ByteCollector(limit);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    bytes.push(value);
  }
  return bytes.bytes();
}

/**
 * Reading and writing spill files (protocol §8). Private to `spillover()`.
 *
 * @module
 */
import * as v from "valibot";
import { SpillError } from "../src/errors.ts";
import { jsonAsBase64 } from "../src/_binary.ts";
import type { FileWriter, Runtime } from "../src/runtime/types.ts";
import * as zlib from "node:zlib";
import { jsonPieces, type JsonSegment } from "./_json_pieces.ts";
import { SpillJsonReader } from "./_spill_json_reader.ts";
import { md5Job, type ParallelMd5 } from "./_parallel_md5.ts";
import { md5PartsJob } from "./_md5_parts.ts";

/**
 * The `$spill` reference carried by a frame instead of a large message: the
 * file's md5, or (when the peer takes them, see `partSize` in `configure`)
 * the md5 of each of its parts.
 */
export interface SpillRef {
  /** Absolute path of the file inside the spill directory. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Lower-case hex MD5 of the file's bytes. */
  md5?: string | undefined;
  /** Bytes per part of `md5Parts` (the last part may be shorter). */
  partSize?: number | undefined;
  /** Lower-case hex MD5 of each part, in order (one part for an empty file). */
  md5Parts?: string[] | undefined;
  /** CRC-32 (zlib) of the file's bytes, for a peer that announced `crc32`. */
  crc32?: number | undefined;
  /** Bytes of JSON at the start of the file, when `strings` follow it. */
  json?: number | undefined;
  /** Strings stored as raw UTF-8 after the JSON, with the path of the `null` each replaces. */
  strings?: SpillString[] | undefined;
  /** Bytes stored raw after the JSON, with the path of the `null` each replaces. */
  bytes?: SpillString[] | undefined;
}

/** One string (or bytes) segment of a spill file (protocol §8). */
export interface SpillString {
  /** Steps from the message object to the `null` the string replaces. */
  at: (string | number)[];
  /** First byte of its UTF-8 in the file. */
  offset: number;
  /** Bytes of its UTF-8. */
  length: number;
}

/** Node's `zlib.crc32` where the runtime has it (Deno, Bun, Node 22): spill files then carry CRC-32s. */
export const crc32:
  | ((data: Uint8Array, value?: number) => number)
  | undefined = typeof (zlib as { crc32?: unknown }).crc32 === "function"
    ? (zlib as unknown as {
      crc32: (data: Uint8Array, value?: number) => number;
    }).crc32
    : undefined;

// Smallest and largest `partSize` (protocol §8, as in the Python server): tiny parts would make huge references.
const MIN_PART_SIZE = 64 * 1024;
const MAX_PART_SIZE = 1024 * 1024 * 1024;

const Md5Schema = v.pipe(v.string(), v.regex(/^[0-9a-fA-F]{32}$/));

const SegmentSchema = v.object({
  at: v.pipe(
    v.array(
      v.union([
        v.string(),
        v.pipe(v.number(), v.integer(), v.minValue(0)),
      ]),
    ),
    v.minLength(1),
  ),
  offset: v.pipe(v.number(), v.integer(), v.minValue(0)),
  length: v.pipe(v.number(), v.integer(), v.minValue(0)),
});

const SpillRefSchema = v.pipe(
  v.object({
    path: v.pipe(v.string(), v.minLength(1)),
    size: v.pipe(v.number(), v.integer(), v.minValue(0)),
    md5: v.optional(Md5Schema),
    partSize: v.optional(
      v.pipe(
        v.number(),
        v.integer(),
        v.minValue(MIN_PART_SIZE),
        v.maxValue(MAX_PART_SIZE),
      ),
    ),
    md5Parts: v.optional(v.array(Md5Schema)),
    crc32: v.optional(
      v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(0xffffffff)),
    ),
    json: v.optional(v.pipe(v.number(), v.integer(), v.minValue(0))),
    strings: v.optional(v.array(SegmentSchema)),
    bytes: v.optional(v.array(SegmentSchema)),
  }),
  v.check(
    (ref) =>
      ref.md5Parts === undefined
        ? ref.md5 !== undefined || ref.crc32 !== undefined
        : ref.partSize !== undefined &&
          ref.md5Parts.length === partCount(ref.size, ref.partSize),
    "needs md5, crc32, or partSize and one md5Parts entry per part",
  ),
  v.check(
    (ref) =>
      (ref.json === undefined) ===
        (ref.strings === undefined && ref.bytes === undefined) &&
      (ref.json === undefined || ref.json <= ref.size),
    "needs json and strings together (or json and bytes), json at most size",
  ),
);

function partCount(size: number, partSize: number): number {
  return Math.max(1, Math.ceil(size / partSize));
}

type HashFields = Pick<SpillRef, "md5" | "partSize" | "md5Parts" | "crc32">;

/** Hashes the bytes given to `update`: one md5, md5 parts or a CRC-32 ({@linkcode sameHashes} compares with a reference). */
interface FileHash {
  update(chunk: Uint8Array): Promise<void>;
  /** The checksum fields of a reference to these bytes. */
  fields(): Promise<HashFields>;
  drop(): void;
}

const DONE: Promise<void> = Promise.resolve();

/** The form a reader checks: the first of md5Parts, md5, crc32 (protocol §8). */
function hashFor(
  ref: HashFields,
  threads: readonly ParallelMd5[],
): FileHash {
  if (ref.md5Parts !== undefined) return fileHash(threads, ref.partSize);
  if (ref.md5 !== undefined) return fileHash(threads, undefined);
  return fileHash([], undefined, true);
}

function fileHash(
  threads: readonly ParallelMd5[],
  partSize: number | undefined,
  crc = false,
): FileHash {
  if (crc) {
    const fn = crc32;
    if (fn === undefined) {
      throw new SpillError(
        "Cannot check spill file: this runtime has no zlib.crc32",
      );
    }
    let value = 0;
    return {
      update: (chunk) => {
        value = fn(chunk, value);
        return DONE;
      },
      fields: () => Promise.resolve({ crc32: value >>> 0 }),
      drop: () => {},
    };
  }
  if (partSize === undefined) {
    const job = md5Job(threads[0]);
    return {
      update: (chunk) => job.update(chunk),
      fields: async () => ({ md5: await job.digest() }),
      drop: () => job.drop(),
    };
  }
  const job = md5PartsJob(threads, partSize);
  return {
    update: (chunk) => job.update(chunk),
    fields: async () => ({ partSize, md5Parts: await job.digests() }),
    drop: () => job.drop(),
  };
}

/** True when `got` (from {@linkcode FileHash.fields}) matches the reference's hashes. */
function sameHashes(got: HashFields, ref: HashFields): boolean {
  if (ref.md5Parts !== undefined) {
    return got.md5Parts !== undefined &&
      got.md5Parts.length === ref.md5Parts.length &&
      got.md5Parts.every((hex, i) => hex === ref.md5Parts![i]!.toLowerCase());
  }
  if (ref.md5 !== undefined) return got.md5 === ref.md5.toLowerCase();
  return got.crc32 === ref.crc32;
}

/** What failed: named after the form that was checked. */
function mismatch(path: string, ref: HashFields): SpillError {
  const form = ref.md5Parts !== undefined || ref.md5 !== undefined
    ? "md5"
    : "crc32";
  return new SpillError(`Cannot read spill file ${path}: ${form} mismatch`);
}

// Big enough that the per-chunk cost vanishes, small enough to stay cache-friendly.
const CHUNK_BYTES = 2 * 1024 * 1024;

/** Options of {@linkcode writeSpill}. */
export interface WriteSpillOptions {
  /** Nothing is written, and undefined returned, when the JSON is at most this many bytes. */
  threshold: number;
  /** Called before each chunk of `n` bytes is written; throws to stop (maxBytes). */
  reserve(n: number): void | Promise<void>;
  /** Hash threads (large messages); none: hashed on this one. */
  md5?: readonly ParallelMd5[] | undefined;
  /** The peer reads part hashes of this size: the reference gets `md5Parts`, not `md5`. */
  partSize?: number | undefined;
  /** The peer reads CRC-32s: the reference gets `crc32` (no md5 at all). */
  crc32?: boolean | undefined;
  /** The peer reads string segments: well-formed strings of at least this many characters go after the JSON. */
  strings?: number | undefined;
  /** The peer reads bytes segments: bytes go raw after the JSON (else as base64 with `$bytes`). */
  bytes?: boolean | undefined;
}

/**
 * Writes `JSON.stringify(value)` as UTF-8 to `path` (created 0600) when it
 * is longer than `threshold` bytes, and returns its reference (else
 * undefined, and no file). The JSON is produced piece by piece
 * ({@linkcode jsonPieces}), encoded and hashed through one reused buffer, so
 * neither the whole text nor its encoded copy ever exists in memory. A
 * partly written file is removed on failure.
 *
 * @example
 * ```ts ignore
 * const ref = await writeSpill(runtime, "/dev/shm/pyproxy-spill-x/w1/h-1.json", msg, {
 *   threshold: 1 << 20,
 *   reserve: () => {},
 * });
 * ```
 */
export async function writeSpill(
  runtime: Runtime,
  path: string,
  value: unknown,
  options: WriteSpillOptions,
): Promise<SpillRef | undefined> {
  const { threshold, reserve } = options;
  const job = fileHash(
    options.md5 ?? [],
    options.partSize,
    options.crc32 === true,
  );
  const segments = {
    minLength: options.strings ?? Infinity,
    found: [] as JsonSegment[],
    bytes: options.bytes === true,
  };
  const encoder = new TextEncoder();
  let buffer = new Uint8Array(CHUNK_BYTES);
  let used = 0;
  let size = 0;
  // Chunks held back until the size passes the threshold: below it there is no file.
  let held: Uint8Array[] | undefined = [];
  let file: FileWriter | undefined;
  const flush = async (): Promise<void> => {
    if (used === 0) return;
    const chunk = buffer.subarray(0, used);
    size += used;
    used = 0;
    if (held !== undefined) {
      held.push(chunk);
      buffer = new Uint8Array(CHUNK_BYTES);
      if (size <= threshold) return;
      file = await runtime.openWrite(path);
      for (const part of held) await writeChunk(part);
      held = undefined;
      return;
    }
    await writeChunk(chunk);
    // Two buffers: one is filled while the other is being written (and hashed).
    const writing = buffer;
    buffer = spare ?? new Uint8Array(CHUNK_BYTES);
    spare = writing;
  };
  let spare: Uint8Array<ArrayBuffer> | undefined;
  let inflight: Promise<unknown> | undefined;
  // At most one chunk in flight; the file system (and the md5 thread) work while the next chunk is encoded.
  const writeChunk = async (chunk: Uint8Array): Promise<void> => {
    await reserve(chunk.length);
    const hashed = job.update(chunk);
    await inflight;
    inflight = Promise.all([file!.write(chunk), hashed]);
    // Marked handled here; the error still comes out of the next await.
    inflight.catch(() => {});
  };
  const emit = async (piece: string): Promise<void> => {
    let pos = 0;
    while (pos < piece.length) {
      const { read, written } = encoder.encodeInto(
        pos === 0 ? piece : piece.slice(pos),
        buffer.subarray(used),
      );
      pos += read;
      used += written;
      // Full (or too full for the next character): hand the buffer over.
      if (pos < piece.length || buffer.length - used < 4) await flush();
    }
  };
  let hashes: HashFields;
  let json = 0;
  const strings: SpillString[] = [];
  const blobs: SpillString[] = [];
  // Raw bytes, copied into the chunk buffer as they fit.
  const emitBytes = async (bytes: Uint8Array): Promise<void> => {
    let pos = 0;
    while (pos < bytes.length) {
      const n = Math.min(bytes.length - pos, buffer.length - used);
      buffer.set(bytes.subarray(pos, pos + n), used);
      pos += n;
      used += n;
      if (used === buffer.length) await flush();
    }
  };
  try {
    try {
      const pieces = jsonPieces(value, segments);
      for (;;) {
        let next: IteratorResult<string>;
        try {
          next = pieces.next();
        } catch (err) {
          // The value's own fault (a toJSON that throws...): not the file's.
          throw new Unencodable(err);
        }
        if (next.done) break;
        await emit(next.value);
      }
      // String segments: their UTF-8 right after the JSON, with no escaping pass.
      json = size + used;
      for (const { at, value } of segments.found) {
        const offset = size + used;
        if (typeof value === "string") {
          await emit(value);
          strings.push({ at, offset, length: size + used - offset });
        } else {
          await emitBytes(value);
          blobs.push({ at, offset, length: value.length });
        }
      }
      if (held !== undefined && size + used <= threshold) {
        job.drop();
        return undefined;
      }
      await flush();
      await inflight;
      hashes = await job.fields();
    } finally {
      await inflight?.catch(() => {});
      await file?.close();
    }
  } catch (err) {
    job.drop();
    if (file !== undefined) await runtime.remove(path).catch(() => {});
    if (err instanceof Unencodable) throw err.cause;
    if (err instanceof SpillError || err instanceof TypeError) throw err;
    throw new SpillError(
      `Cannot write spill file ${path}: ${
        err instanceof Error ? err.message : err
      }`,
      {
        cause: err,
      },
    );
  }
  if (strings.length === 0 && blobs.length === 0) {
    return { path, size, ...hashes };
  }
  const ref: SpillRef = { path, size, ...hashes, json };
  if (strings.length > 0) ref.strings = strings;
  if (blobs.length > 0) ref.bytes = blobs;
  return ref;
}

/**
 * Frees `bytes` now rather than at the next major GC, which may come after
 * JSON.parse has allocated the message: only the text and the message then
 * coexist. Detaching frees the memory at once on Deno (V8); elsewhere it is a
 * harmless no-op. Only a buffer the view covers whole is ours to detach.
 */
function release(bytes: Uint8Array): void {
  const buffer = bytes.buffer as ArrayBuffer & {
    transfer?: (n: number) => ArrayBuffer;
  };
  if (
    typeof buffer.transfer === "function" && bytes.byteOffset === 0 &&
    bytes.byteLength === buffer.byteLength
  ) buffer.transfer(0);
}

/**
 * Reads the message a peer spilled: checks the reference, that the file is
 * inside `dir` (a realpath), its size and md5, parses it (with `parse`,
 * `JSON.parse` by default), and deletes it in every case (except a path
 * outside `dir`: not ours to delete). Throws `SpillError`.
 *
 * @example
 * ```ts ignore
 * const message = await readSpill(runtime, "/dev/shm/pyproxy-spill-x/w1", frame.$spill);
 * ```
 */
export async function readSpill(
  runtime: Runtime,
  dir: string,
  ref: unknown,
  md5Threads: readonly ParallelMd5[] = [],
  parse: (text: string) => unknown = JSON.parse,
): Promise<Record<string, unknown>> {
  const parsed = v.safeParse(SpillRefSchema, ref);
  if (!parsed.success) {
    await discardSpill(runtime, dir, ref);
    throw new SpillError(
      `Cannot read spill file: invalid $spill reference (${
        v.summarize(parsed.issues)
      })`,
    );
  }
  const { path, size } = parsed.output;
  let real: string;
  try {
    real = await runtime.realPath(path);
  } catch (err) {
    throw new SpillError(
      `Cannot read spill file ${path}: ${
        err instanceof Error ? err.message : err
      }`,
      {
        cause: err,
      },
    );
  }
  if (!real.startsWith(dir + "/")) {
    throw new SpillError(
      `Cannot read spill file ${path}: outside the spill directory ${dir}`,
    );
  }
  try {
    const stat = await runtime.stat(real);
    if (stat === null || !stat.isFile) {
      throw new SpillError(`Cannot read spill file ${path}: not a file`);
    }
    // Checked before reading so a wrong reference never makes us load a huge file.
    if (stat.size !== size) {
      throw new SpillError(
        `Cannot read spill file ${path}: size ${stat.size}, expected ${size}`,
      );
    }
    if (
      parsed.output.strings !== undefined || parsed.output.bytes !== undefined
    ) {
      return await readSegmented(
        runtime,
        real,
        path,
        parsed.output,
        md5Threads,
        parse,
      );
    }
    // Hashed and parsed chunk by chunk, reading the next chunk meanwhile: no copy of the whole file
    // (nor of its text) is ever made for the usual shape, a few long strings in a small structure.
    const reader = new SpillJsonReader({ parse });
    await readChecked(
      runtime,
      real,
      path,
      parsed.output,
      md5Threads,
      (chunk) => {
        if (!reader.failed) reader.push(chunk);
      },
    );
    let message = reader.finish();
    if (reader.failed) {
      message = await readWhole(runtime, real, path, parsed.output, parse);
    }
    if (
      typeof message !== "object" || message === null || Array.isArray(message)
    ) {
      throw new SpillError(`Cannot read spill file ${path}: not a JSON object`);
    }
    return message as Record<string, unknown>;
  } catch (err) {
    if (err instanceof SpillError) throw err;
    throw new SpillError(
      `Cannot read spill file ${path}: ${
        err instanceof Error ? err.message : err
      }`,
      {
        cause: err,
      },
    );
  } finally {
    await runtime.remove(real).catch(() => {});
  }
}

/**
 * Deletes the file a spill reference names without reading it, when it lies
 * inside `dir` (a reference pointing elsewhere is left alone, as
 * {@linkcode readSpill} leaves it); never throws. For an invalid reference
 * (every file read goes, as §8 says) and a reply nobody waits for.
 *
 * @example
 * ```ts ignore
 * await discardSpill(runtime, dir, msg.$spill); // a reply nobody waits for
 * ```
 */
export async function discardSpill(
  runtime: Runtime,
  dir: string,
  ref: unknown,
): Promise<void> {
  const path = (ref as { path?: unknown } | null)?.path;
  if (typeof path !== "string") return;
  try {
    const real = await runtime.realPath(path);
    if (real.startsWith(dir + "/")) await runtime.remove(real);
  } catch {
    // Gone already, or never there.
  }
}

/**
 * Reads the file through {@linkcode readChunks}, giving each chunk to the
 * checksum of `ref` and to `onChunk`, then checks the size and the checksum
 * (throws `SpillError`): nothing `onChunk` built may be used before this
 * returned.
 */
async function readChecked(
  runtime: Runtime,
  real: string,
  path: string,
  ref: SpillRef,
  md5Threads: readonly ParallelMd5[],
  onChunk: (chunk: Uint8Array) => void,
): Promise<void> {
  const job = hashFor(ref, md5Threads);
  let read: number;
  try {
    read = await readChunks(runtime, real, (chunk) => {
      const hashed = job.update(chunk);
      onChunk(chunk);
      return hashed;
    });
  } catch (err) {
    job.drop();
    throw err;
  }
  if (read !== ref.size) {
    throw new SpillError(
      `Cannot read spill file ${path}: size ${read}, expected ${ref.size}`,
    );
  }
  if (!sameHashes(await job.fields(), ref)) throw mismatch(path, ref);
}

const READ_CHUNK = 4 * 1024 * 1024;
const READ_SLOTS = 3;

/**
 * Reads `path` through a ring of reused buffers: `onChunk` gets each chunk
 * while the next one is being read, and a chunk's buffer is refilled only
 * once the promise `onChunk` returned for it (its copy for the md5 thread)
 * resolved. Returns the number of bytes read.
 */
async function readChunks(
  runtime: Runtime,
  path: string,
  onChunk: (chunk: Uint8Array) => Promise<void>,
): Promise<number> {
  const file = await runtime.openRead(path);
  const slots: { buffer: Uint8Array; busy?: Promise<void> }[] = [];
  const slot = async (i: number): Promise<Uint8Array> => {
    slots[i] ??= { buffer: new Uint8Array(READ_CHUNK) };
    await slots[i].busy;
    return slots[i].buffer;
  };
  let pending: Promise<number | null> | undefined;
  try {
    let k = 0;
    let total = 0;
    pending = file.read(await slot(0));
    for (;;) {
      const n = await pending;
      pending = undefined;
      if (n === null) return total;
      total += n;
      const current = slots[k]!;
      const chunk = current.buffer.subarray(0, n);
      k = (k + 1) % READ_SLOTS;
      pending = file.read(await slot(k));
      current.busy = onChunk(chunk);
      // Handled when the slot is reused; a failure also shows in the digest.
      current.busy.catch(() => {});
    }
  } finally {
    await pending?.catch(() => {});
    await file.close();
  }
}

/** The plain way, for what {@linkcode SpillJsonReader} does not take: the whole text, then JSON.parse. */
async function readWhole(
  runtime: Runtime,
  real: string,
  path: string,
  ref: SpillRef,
  parse: (text: string) => unknown,
): Promise<unknown> {
  // On this thread, so each update is hashed at once.
  const hash = hashFor(ref, []);
  let bytes: Uint8Array | undefined = await runtime.readFile(real, {
    onChunk: (chunk) => void hash.update(chunk),
  });
  // Checked again: this is a second read of the file.
  if (!sameHashes(await hash.fields(), ref)) throw mismatch(path, ref);
  const text = new TextDecoder().decode(bytes);
  release(bytes);
  bytes = undefined;
  try {
    return parse(text);
  } catch (err) {
    throw new SpillError(
      `Cannot read spill file ${path}: invalid JSON (${
        err instanceof Error ? err.message : err
      })`,
    );
  }
}

/**
 * Decodes one string segment from the chunks as they are read, piece by piece
 * (V8 keeps the pieces: no flat copy of the whole text, nor of its bytes).
 * The decoder is the fast one: not fatal, and stripping a leading BOM (a
 * decoder with `ignoreBOM` takes a path 2x slower on long text), so the BOM
 * is put back by hand and a text holding U+FFFD is only a suspect, which
 * the caller decodes again strictly from the file.
 */
class SegmentText {
  readonly segment: SpillString & { index: number };
  #decoder = new TextDecoder();
  #text = "";
  #head: number[] = [];
  // Checked piece by piece: includes() on the joined text would flatten it (a copy).
  #suspect = false;

  constructor(segment: SpillString & { index: number }) {
    this.segment = segment;
  }

  push(bytes: Uint8Array): void {
    for (let i = 0; this.#head.length < 3 && i < bytes.length; i++) {
      this.#head.push(bytes[i]!);
    }
    const piece = this.#decoder.decode(bytes, { stream: true });
    if (piece.includes("\uFFFD")) this.#suspect = true;
    this.#text += piece;
  }

  /** The text, or undefined when it holds U+FFFD (a real one, or invalid bytes). */
  text(): string | undefined {
    const last = this.#decoder.decode();
    let text = this.#text + last;
    this.#text = "";
    const [a, b, c] = this.#head;
    if (a === 0xef && b === 0xbb && c === 0xbf) text = "\uFEFF" + text;
    return this.#suspect || last.includes("\uFFFD") ? undefined : text;
  }
}

/** Collects one bytes segment from the chunks as they are read. */
class SegmentBytes {
  readonly segment: SpillString & { index: number };
  readonly bytes: Uint8Array;
  #used = 0;

  constructor(segment: SpillString & { index: number }) {
    this.segment = segment;
    this.bytes = jsonAsBase64(new Uint8Array(segment.length));
  }

  push(bytes: Uint8Array): void {
    this.bytes.set(bytes, this.#used);
    this.#used += bytes.length;
  }
}

// What step() gives for a step that does not exist.
const MISSING: unique symbol = Symbol("missing");

/** Follows one step of a segment's path: an own key of an object, or an index inside an array. */
function step(node: unknown, key: string | number): unknown {
  if (typeof key === "number") {
    return Array.isArray(node) && key < node.length ? node[key] : MISSING;
  }
  return typeof node === "object" && node !== null && !Array.isArray(node) &&
      Object.hasOwn(node, key)
    ? (node as Record<string, unknown>)[key]
    : MISSING;
}

/** Puts `text` at `at` in `message`, where the JSON has a `null`; false when there is none. */
function place(
  message: Record<string, unknown>,
  at: (string | number)[],
  text: string | Uint8Array,
): boolean {
  let node: unknown = message;
  for (let i = 0; i < at.length - 1 && node !== MISSING; i++) {
    node = step(node, at[i]!);
  }
  const last = at[at.length - 1]!;
  // A missing step gives MISSING all the way down, never null.
  if (step(node, last) !== null) return false;
  // An own "__proto__" key (JSON.parse makes one) is set as a plain property: its own one shadows the accessor.
  (node as Record<string | number, unknown>)[last] = text;
  return true;
}

/**
 * Reads a spill file with string segments (protocol §8): its JSON part is
 * parsed the plain way (long strings are not in it), and each segment is
 * decoded from the chunks as they are read; the strings are put in place
 * once the checksum matched.
 */
async function readSegmented(
  runtime: Runtime,
  real: string,
  path: string,
  ref: SpillRef,
  md5Threads: readonly ParallelMd5[],
  parse: (text: string) => unknown,
): Promise<Record<string, unknown>> {
  const size = ref.size;
  const jsonLength = ref.json!;
  const segments = [
    ...(ref.strings ?? []).map((s, index) => ({ ...s, index, kind: "string" })),
    ...(ref.bytes ?? []).map((s, index) => ({ ...s, index, kind: "bytes" })),
  ].sort((a, b) => a.offset - b.offset);
  let end = jsonLength;
  for (const s of segments) {
    if (s.offset < end || s.offset + s.length > size) {
      throw new SpillError(
        `Cannot read spill file ${path}: ${s.kind} segment ${s.index} (bytes ${s.offset}..${
          s.offset + s.length
        }) overlaps the JSON or another segment, or ends past the file`,
      );
    }
    end = s.offset + s.length;
  }
  const texts = segments.map((s) =>
    s.kind === "bytes" ? new SegmentBytes(s) : new SegmentText(s)
  );
  const json = new Uint8Array(jsonLength);
  // The next segment to fill, and the file offset of the chunk being routed.
  let k = 0;
  let position = 0;
  const route = (chunk: Uint8Array): void => {
    const start = position;
    const stop = start + chunk.length;
    position = stop;
    if (start < jsonLength) {
      json.set(chunk.subarray(0, Math.min(jsonLength, stop) - start), start);
    }
    while (k < texts.length) {
      const s = texts[k]!.segment;
      const from = Math.max(start, s.offset);
      const to = Math.min(stop, s.offset + s.length);
      if (from < to) texts[k]!.push(chunk.subarray(from - start, to - start));
      if (s.offset + s.length > stop) break; // continues in the next chunk
      k++;
    }
  };
  await readChecked(runtime, real, path, ref, md5Threads, route);
  let message: unknown;
  try {
    message = parse(
      new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(json),
    );
  } catch (err) {
    throw new SpillError(
      `Cannot read spill file ${path}: invalid JSON (${
        err instanceof Error ? err.message : err
      })`,
    );
  }
  if (
    typeof message !== "object" || message === null || Array.isArray(message)
  ) {
    throw new SpillError(`Cannot read spill file ${path}: not a JSON object`);
  }
  let whole: Uint8Array | undefined;
  for (const text of texts) {
    const { index, at, offset, length } = text.segment;
    if (text instanceof SegmentBytes) {
      if (!place(message as Record<string, unknown>, at, text.bytes)) {
        throw new SpillError(
          `Cannot read spill file ${path}: bytes segment ${index}: no null at ${
            JSON.stringify(at)
          }`,
        );
      }
      continue;
    }
    let value = text.text();
    if (value === undefined) {
      // U+FFFD: a real one, or invalid bytes replaced. Only a strict decode of the bytes tells.
      if (whole === undefined) {
        const hash = hashFor(ref, []);
        whole = await runtime.readFile(real, {
          onChunk: (chunk) => void hash.update(chunk),
        });
        // A second read of the file: checked again.
        if (!sameHashes(await hash.fields(), ref)) throw mismatch(path, ref);
      }
      try {
        value = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true })
          .decode(whole.subarray(offset, offset + length));
      } catch (err) {
        throw new SpillError(
          `Cannot read spill file ${path}: string segment ${index}: invalid UTF-8`,
          { cause: err },
        );
      }
    }
    if (!place(message as Record<string, unknown>, at, value)) {
      throw new SpillError(
        `Cannot read spill file ${path}: string segment ${index}: no null at ${
          JSON.stringify(at)
        }`,
      );
    }
  }
  return message as Record<string, unknown>;
}

/** An error of encoding the value (thrown as its cause, never as a `SpillError`). */
class Unencodable {
  constructor(readonly cause: unknown) {}
}

/**
 * Reading and writing spill files (protocol §8). Private to `spillover()`.
 *
 * @module
 */
import * as v from "valibot";
import { SpillError } from "../src/errors.ts";
import type { FileWriter, Runtime } from "../src/runtime/types.ts";
import { jsonPieces } from "./_json_pieces.ts";
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
}

// Smallest and largest `partSize` (protocol §8, as in the Python server): tiny parts would make huge references.
const MIN_PART_SIZE = 64 * 1024;
const MAX_PART_SIZE = 1024 * 1024 * 1024;

const Md5Schema = v.pipe(v.string(), v.regex(/^[0-9a-fA-F]{32}$/));

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
  }),
  v.check(
    (ref) =>
      ref.md5Parts === undefined
        ? ref.md5 !== undefined
        : ref.partSize !== undefined &&
          ref.md5Parts.length === partCount(ref.size, ref.partSize),
    "needs md5, or partSize and one md5Parts entry per part",
  ),
);

function partCount(size: number, partSize: number): number {
  return Math.max(1, Math.ceil(size / partSize));
}

/** Hashes the bytes given to `update`, whole or in parts ({@linkcode sameHashes} compares with a reference). */
interface FileHash {
  update(chunk: Uint8Array): Promise<void>;
  /** The md5 fields of a reference to these bytes. */
  fields(): Promise<Pick<SpillRef, "md5" | "partSize" | "md5Parts">>;
  drop(): void;
}

function fileHash(
  threads: readonly ParallelMd5[],
  partSize: number | undefined,
): FileHash {
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
function sameHashes(
  got: Pick<SpillRef, "md5" | "md5Parts">,
  ref: Pick<SpillRef, "md5" | "md5Parts">,
): boolean {
  if (ref.md5Parts !== undefined) {
    return got.md5Parts !== undefined &&
      got.md5Parts.length === ref.md5Parts.length &&
      got.md5Parts.every((hex, i) => hex === ref.md5Parts![i]!.toLowerCase());
  }
  return got.md5 === ref.md5!.toLowerCase();
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
  const job = fileHash(options.md5 ?? [], options.partSize);
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
  let hashes: Pick<SpillRef, "md5" | "partSize" | "md5Parts">;
  try {
    try {
      for (const piece of jsonPieces(value)) {
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
  return { path, size, ...hashes };
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
 * inside `dir` (a realpath), its size and md5, parses it, and deletes it in
 * every case (except a path outside `dir`: not ours to delete). Throws
 * `SpillError`.
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
): Promise<Record<string, unknown>> {
  const parsed = v.safeParse(SpillRefSchema, ref);
  if (!parsed.success) {
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
    // Hashed and parsed chunk by chunk, reading the next chunk meanwhile: no copy of the whole file
    // (nor of its text) is ever made for the usual shape, a few long strings in a small structure.
    const reader = new SpillJsonReader();
    const job = fileHash(md5Threads, parsed.output.partSize);
    let read: number;
    try {
      read = await readChunks(runtime, real, (chunk) => {
        const hashed = job.update(chunk);
        if (!reader.failed) reader.push(chunk);
        return hashed;
      });
    } catch (err) {
      job.drop();
      throw err;
    }
    if (read !== size) {
      throw new SpillError(
        `Cannot read spill file ${path}: size ${read}, expected ${size}`,
      );
    }
    if (!sameHashes(await job.fields(), parsed.output)) {
      throw new SpillError(`Cannot read spill file ${path}: md5 mismatch`);
    }
    let message = reader.finish();
    if (reader.failed) {
      message = await readWhole(runtime, real, path, parsed.output);
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
): Promise<unknown> {
  // On this thread, so each update is hashed at once.
  const hash = fileHash([], ref.partSize);
  let bytes: Uint8Array | undefined = await runtime.readFile(real, {
    onChunk: (chunk) => void hash.update(chunk),
  });
  // Checked again: this is a second read of the file.
  if (!sameHashes(await hash.fields(), ref)) {
    throw new SpillError(`Cannot read spill file ${path}: md5 mismatch`);
  }
  const text = new TextDecoder().decode(bytes);
  release(bytes);
  bytes = undefined;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new SpillError(
      `Cannot read spill file ${path}: invalid JSON (${
        err instanceof Error ? err.message : err
      })`,
    );
  }
}

/**
 * Reading and writing spill files (protocol §8). Private to `spillover()`.
 *
 * @module
 */
import { createHash } from "node:crypto";
import * as v from "valibot";
import { SpillError } from "../src/errors.ts";
import type { Runtime } from "../src/runtime/types.ts";

/** The `$spill` reference carried by a frame instead of a large message. */
export interface SpillRef {
  /** Absolute path of the file inside the spill directory. */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Lower-case hex MD5 of the file's bytes. */
  md5: string;
}

const SpillRefSchema = v.object({
  path: v.pipe(v.string(), v.minLength(1)),
  size: v.pipe(v.number(), v.integer(), v.minValue(0)),
  md5: v.pipe(v.string(), v.regex(/^[0-9a-fA-F]{32}$/)),
});

/**
 * Writes `bytes` (an encoded JSON message) to `path` (created 0600) and
 * returns its reference; removes a partly written file on failure.
 *
 * @example
 * ```ts ignore
 * const ref = await writeSpill(runtime, "/dev/shm/pyproxy-spill-x/w1/h-1.json", bytes);
 * ```
 */
export async function writeSpill(
  runtime: Runtime,
  path: string,
  bytes: Uint8Array,
): Promise<SpillRef> {
  const md5 = createHash("md5").update(bytes).digest("hex");
  try {
    await runtime.writeFile(path, bytes);
  } catch (err) {
    await runtime.remove(path).catch(() => {});
    throw new SpillError(
      `Cannot write spill file ${path}: ${
        err instanceof Error ? err.message : err
      }`,
      {
        cause: err,
      },
    );
  }
  return { path, size: bytes.length, md5 };
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
): Promise<Record<string, unknown>> {
  const parsed = v.safeParse(SpillRefSchema, ref);
  if (!parsed.success) {
    throw new SpillError(
      `Cannot read spill file: invalid $spill reference (${
        v.summarize(parsed.issues)
      })`,
    );
  }
  const { path, size, md5 } = parsed.output;
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
    let bytes: Uint8Array | undefined = await runtime.readFile(real);
    if (bytes.length !== size) {
      throw new SpillError(
        `Cannot read spill file ${path}: size ${bytes.length}, expected ${size}`,
      );
    }
    if (createHash("md5").update(bytes).digest("hex") !== md5.toLowerCase()) {
      throw new SpillError(`Cannot read spill file ${path}: md5 mismatch`);
    }
    // Drop the bytes before parsing: only the text and the parsed object coexist.
    const text = new TextDecoder().decode(bytes);
    bytes = undefined;
    let message: unknown;
    try {
      message = JSON.parse(text);
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

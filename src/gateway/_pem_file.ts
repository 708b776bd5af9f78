/**
 * A PEM file's text (a certificate, a key, a CA bundle), read as the
 * token files are: a FIFO or a device named by mistake (`/dev/zero`, a
 * pipe nobody writes) would hang the start, or read until memory ran out.
 *
 * @module
 */
import type { Runtime } from "../runtime/types.ts";

/**
 * The most a PEM file may hold: a CA bundle (the system's is about
 * 200 KiB) with room to spare.
 */
export const MAX_PEM_FILE_BYTES = 4 * 1024 * 1024;

/**
 * How long a PEM file's read may go without an answer (a hung network file
 * system) before it fails, as a token file's: a reload or a TLS files' poll
 * waiting on it would hold every later one.
 */
export const PEM_READ_TIMEOUT_MS = 2000;

/**
 * The text of the PEM file at `path`. Throws the runtime's error when it
 * cannot be read, and a {@linkcode PemFileError} when it is not a regular
 * file, is larger than {@linkcode MAX_PEM_FILE_BYTES}, or has no answer
 * within `timeoutMs` (its read is then left to end on its own). Without
 * `runtime.readRegularFile`, a plain read.
 */
export async function readPemFile(
  runtime: Runtime,
  path: string,
  timeoutMs: number = PEM_READ_TIMEOUT_MS,
): Promise<string> {
  const read = runtime.readRegularFile === undefined
    ? runtime.readFile(path)
    : runtime.readRegularFile(path, MAX_PEM_FILE_BYTES);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let bytes: Uint8Array | null;
  try {
    bytes = await Promise.race([
      read,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new PemFileError(
                `had no answer within ${timeoutMs} ms (a hung file system?)`,
              ),
            ),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    // A read that ends after the timeout: its result or error is dropped.
    read.catch(() => {});
  }
  if (bytes === null) {
    throw new PemFileError(
      "is not a regular file (a directory, a FIFO or a device: not a PEM file, and reading a FIFO or a device could wait or never end)",
    );
  }
  if (bytes.length > MAX_PEM_FILE_BYTES) {
    throw new PemFileError(
      `is larger than a PEM file holds (at most ${MAX_PEM_FILE_BYTES} bytes)`,
    );
  }
  return new TextDecoder().decode(bytes);
}

/** A file that is not one to read as PEM: its message says why. */
export class PemFileError extends Error {
  override name = "PemFileError";
}

/** A PEM block's label: a certificate's. */
export const CERTIFICATE: RegExp = /^CERTIFICATE$/;

/** A PEM block's label: a private key's (PKCS#8, PKCS#1, SEC 1). */
export const PRIVATE_KEY: RegExp = /^(?:RSA |EC |)PRIVATE KEY$/;

/**
 * The first PEM block of `text` whose label matches `label`, or
 * `undefined` when it has none.
 */
export function firstPemBlock(text: string, label: RegExp): string | undefined {
  for (
    const block of text.matchAll(
      /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g,
    )
  ) {
    if (label.test(block[1]!)) return block[0];
  }
  return undefined;
}

/** An encrypted PEM key: PKCS#8's, or the traditional form's header. */
export const ENCRYPTED_KEY: RegExp =
  /-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type:[ \t]*4,[ \t]*ENCRYPTED/m;

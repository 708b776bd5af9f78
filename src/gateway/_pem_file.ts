/**
 * A PEM file's text (a certificate, a key, a CA bundle), read as the
 * token files are: a FIFO or a device named by mistake (`/dev/zero`, a
 * pipe nobody writes) would hang the start, or read until memory ran out.
 *
 * @module
 */
import type { RegularFileRead, Runtime } from "../runtime/types.ts";
import type { OpenedFile } from "./_trusted_file_read.ts";

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
  return (await readPem(runtime, path, timeoutMs)).value;
}

/**
 * {@linkcode readPemFile}, with what the open file said of itself
 * (`file`: its owner, mode, device and inode; absent without
 * `runtime.readRegularFile`), for `readTrusted` to check a secret's file
 * (a key, a CA) as read.
 */
export async function readPem(
  runtime: Runtime,
  path: string,
  timeoutMs: number = PEM_READ_TIMEOUT_MS,
): Promise<{ value: string; file?: OpenedFile }> {
  const read = runtime.readRegularFile === undefined
    ? runtime.readFile(path)
    : runtime.readRegularFile(path, MAX_PEM_FILE_BYTES);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let got: Uint8Array | RegularFileRead | null;
  try {
    got = await Promise.race([
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
  if (got === null) {
    throw new PemFileError(
      "is not a regular file (a directory, a FIFO or a device: not a PEM file, and reading a FIFO or a device could wait or never end)",
    );
  }
  const bytes = got instanceof Uint8Array ? got : got.bytes;
  if (bytes.length > MAX_PEM_FILE_BYTES) {
    throw new PemFileError(
      `is larger than a PEM file holds (at most ${MAX_PEM_FILE_BYTES} bytes)`,
    );
  }
  const value = new TextDecoder().decode(bytes);
  return got instanceof Uint8Array ? { value } : { value, file: got };
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
  for (const block of pemBlocks(text, label)) return block;
  return undefined;
}

/** What a PEM block's label may hold (RFC 7468's labels, as OpenSSL writes them). */
const LABEL = /^[A-Z0-9 ]+$/;

/**
 * The PEM blocks of `text` whose labels match `label`, in order: from a
 * `-----BEGIN <label>-----` line to the `-----END <label>-----` that comes
 * before any other BEGIN (a block never holds another, as OpenSSL reads
 * them); a BEGIN without such an END is skipped. One pass over `text`
 * (whose markers are each searched for from where the last one was): a
 * lazy regular expression looked for each BEGIN's END up to the file's
 * end, minutes for a 4 MiB file of unclosed BEGIN lines.
 */
export function* pemBlocks(text: string, label: RegExp): Generator<string> {
  let at = 0;
  // The next "-----END " at or after `at`, found once per position.
  let end = -1;
  for (;;) {
    const begin = text.indexOf("-----BEGIN ", at);
    if (begin < 0) return;
    const from = begin + 11;
    const to = text.indexOf("-----", from);
    if (to < 0) return;
    const name = text.slice(from, to);
    if (!LABEL.test(name)) {
      // Not a BEGIN line: what follows it may be one.
      at = from;
      continue;
    }
    at = to + 5;
    if (end < at) {
      end = text.indexOf("-----END ", at);
      if (end < 0) return;
    }
    const next = text.indexOf("-----BEGIN ", at);
    // Another block begins before any END: this one has none of its own.
    if (next >= 0 && next < end) continue;
    const close = `-----END ${name}-----`;
    if (!text.startsWith(close, end)) {
      // Closed by another label's END: not a block.
      at = end + 9;
      continue;
    }
    at = end + close.length;
    if (label.test(name)) yield text.slice(begin, at);
  }
}

/** An encrypted PEM key: PKCS#8's, or the traditional form's header. */
export const ENCRYPTED_KEY: RegExp =
  /-----BEGIN ENCRYPTED PRIVATE KEY-----|^Proc-Type:[ \t]*4,[ \t]*ENCRYPTED/m;

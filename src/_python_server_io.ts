/**
 * Internals of `PythonServer`: reading the ready line, draining stdout and
 * keeping a bounded stderr tail, so a child never blocks on a full pipe.
 *
 * @module
 */
import type { ReadyLine } from "./python_server.ts";

/** The most stderr kept for diagnostics. */
const STDERR_TAIL_BYTES = 64 * 1024;

/** The buffer stderr is read into, where the stream takes one. */
const READ_BYTES = 16 * 1024;

/**
 * Reads stdout up to the first newline (the ready line may arrive in pieces),
 * then keeps draining it in the background so the child never blocks on a
 * full pipe. Resolves `undefined` when stdout ends first.
 */
export async function readReadyLine(
  stdout: ReadableStream<Uint8Array>,
): Promise<string | undefined> {
  const reader = stdout.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let line: string | undefined;
  try {
    while (line === undefined) {
      const { value, done } = await reader.read();
      if (done) {
        reader.releaseLock();
        return undefined;
      }
      text += decoder.decode(value, { stream: true });
      const nl = text.indexOf("\n");
      if (nl >= 0) line = text.slice(0, nl);
      else if (text.length > 65536) line = text; // no newline in sight: let the parser reject it
    }
  } catch {
    return undefined;
  }
  void drain(reader);
  return line;
}

async function drain(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<void> {
  try {
    while (!(await reader.read()).done) {
      // Nothing else may appear on stdout (protocol §5); discard it.
    }
  } catch {
    // the pipe broke: the process is gone
  }
}

export function parseReadyLine(line: string): ReadyLine {
  const value = JSON.parse(line) as Record<string, unknown>;
  if (typeof value !== "object" || value === null) {
    throw new TypeError("not a JSON object");
  }
  if (value.port !== null && typeof value.port !== "number") {
    throw new TypeError("port is not a number");
  }
  if (typeof value.pid !== "number") throw new TypeError("pid is not a number");
  return {
    port: value.port as number | null,
    pid: value.pid,
    id: String(value.id ?? ""),
    unix: typeof value.unix === "string" ? value.unix : null,
    version: typeof value.version === "number" ? value.version : 1,
    // Bounded: it is a label of `pyproxy_build_info`.
    ...(typeof value.python === "string"
      ? { python: value.python.slice(0, 64) }
      : {}),
  };
}

/**
 * Drains stderr forever, keeping the last {@linkcode STDERR_TAIL_BYTES}.
 *
 * The bytes are copied into a ring of that size, never kept as the chunks
 * read: Deno's chunk of a pipe is a view of a 64 KiB buffer, however few
 * bytes it holds, so 64 KiB of a flood read a line or two at a time kept a
 * thousand such buffers (the host's RSS grew by 100 MB per worker and stayed
 * there: a 50,000-line flood took it from 68 to 176 MB). And where the
 * stream takes a buffer of ours (a byte stream), it is read into one.
 */
export class StderrTail {
  /** Allocated at the first byte (most servers write little or nothing). */
  #ring: Uint8Array | undefined;
  /** Where the next byte goes in #ring. */
  #end = 0;
  #size = 0;
  #done: Promise<void>;
  #onText: ((text: string) => void) | undefined;
  #onEnd: (() => void) | undefined;
  #decoder = new TextDecoder();
  /** `<mark> ` of the server's records: left out of `text()`. */
  #hide: string | undefined;

  /** `mark`: what the server's records start with (`StderrLog`), kept out of {@linkcode StderrTail.text}. */
  constructor(
    stream: ReadableStream<Uint8Array>,
    onText: ((text: string) => void) | undefined,
    onEnd?: () => void,
    mark?: string,
  ) {
    this.#onText = onText;
    this.#onEnd = onEnd;
    this.#hide = mark === undefined ? undefined : `${mark} `;
    this.#done = this.#read(stream);
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      // Into one buffer of ours where the stream can (a byte stream: Deno's
      // pipes): a read of the default reader is a new 64 KiB buffer each, a
      // flood's garbage (the host's RSS rose by ~70 MB and stayed there).
      let byob: ReadableStreamBYOBReader | undefined;
      try {
        byob = stream.getReader({ mode: "byob" });
      } catch {
        // not a byte stream: chunks as they come
      }
      if (byob === undefined) {
        for await (const chunk of stream) this.#take(chunk);
      } else {
        let buffer = new Uint8Array(READ_BYTES);
        for (;;) {
          const { value, done } = await byob.read(buffer);
          if (done || value === undefined) break;
          this.#take(value);
          buffer = new Uint8Array(value.buffer); // the same memory, whole again
        }
      }
    } catch {
      // the pipe broke: the process is gone
    }
    try {
      this.#onEnd?.();
    } catch {
      // as for onText
    }
  }

  #take(chunk: Uint8Array): void {
    this.#push(chunk);
    if (this.#onText !== undefined) {
      try {
        this.#onText(this.#decoder.decode(chunk, { stream: true }));
      } catch {
        // a logging callback must not stop the drain
      }
    }
  }

  #push(chunk: Uint8Array): void {
    const ring = this.#ring ??= new Uint8Array(STDERR_TAIL_BYTES);
    const cap = ring.length;
    if (chunk.length >= cap) {
      ring.set(chunk.subarray(chunk.length - cap));
      this.#end = 0;
      this.#size = cap;
      return;
    }
    const first = Math.min(chunk.length, cap - this.#end);
    ring.set(chunk.subarray(0, first), this.#end);
    if (first < chunk.length) ring.set(chunk.subarray(first), 0);
    this.#end = (this.#end + chunk.length) % cap;
    this.#size = Math.min(cap, this.#size + chunk.length);
  }

  /** Waits (at most `ms`) for stderr to reach its end, so a dying process's last words are kept. */
  async settled(ms: number): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#done,
      new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    ]);
    clearTimeout(timer);
  }

  /**
   * The tail as text, without the mark of the server's records: it is in
   * crash reports and error messages (a model's last stderr line), and a
   * client that read it could make text pass for the server's records.
   */
  text(): string {
    const text = this.#decode();
    const hide = this.#hide;
    if (hide === undefined) return text;
    const whole = text.includes(hide) ? text.replaceAll(hide, "") : text;
    return this.#withoutCutMark(whole, hide);
  }

  /**
   * `text` without the piece of a mark its ends may hold: the ring's start,
   * once it has wrapped, falls anywhere, in a record's mark too (its end
   * kept, `"9c0d1e 2026-..."`), and its end may be a mark read in part. A
   * client that reads the tail (`--debug`'s `/v1/status`) and has a model
   * print text of chosen lengths could move the start along the mark and
   * read it whole but its first character (chaos48).
   */
  #withoutCutMark(text: string, hide: string): string {
    let start = 0;
    if (this.#size === this.#ring?.length) {
      for (let k = 1; k < hide.length; k++) {
        if (text.startsWith(hide.slice(k))) {
          start = hide.length - k;
          break;
        }
      }
    }
    let end = text.length;
    const nl = text.lastIndexOf("\n");
    if (nl + 1 < end && hide.startsWith(text.slice(nl + 1))) end = nl + 1;
    return start === 0 && end === text.length
      ? text
      : text.slice(start, Math.max(start, end));
  }

  #decode(): string {
    const ring = this.#ring;
    if (ring === undefined) return "";
    const start = (this.#end - this.#size + ring.length) % ring.length;
    const decoder = new TextDecoder();
    if (start + this.#size <= ring.length) {
      return decoder.decode(ring.subarray(start, start + this.#size));
    }
    const all = new Uint8Array(this.#size);
    all.set(ring.subarray(start));
    all.set(ring.subarray(0, this.#end), ring.length - start);
    return decoder.decode(all);
  }
}

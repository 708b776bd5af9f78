/**
 * Internals of `PythonServer`: reading the ready line, draining stdout and
 * keeping a bounded stderr tail, so a child never blocks on a full pipe.
 *
 * @module
 */
import type { ReadyLine } from "./python_server.ts";

/** The most stderr kept for diagnostics. */
const STDERR_TAIL_BYTES = 64 * 1024;

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
  };
}

/** Drains stderr forever, keeping the last {@linkcode STDERR_TAIL_BYTES}. */
export class StderrTail {
  #chunks: Uint8Array[] = [];
  #size = 0;
  #done: Promise<void>;
  #onText: ((text: string) => void) | undefined;
  #onEnd: (() => void) | undefined;
  #decoder = new TextDecoder();

  constructor(
    stream: ReadableStream<Uint8Array>,
    onText: ((text: string) => void) | undefined,
    onEnd?: () => void,
  ) {
    this.#onText = onText;
    this.#onEnd = onEnd;
    this.#done = this.#read(stream);
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of stream) {
        this.#push(chunk);
        if (this.#onText !== undefined) {
          try {
            this.#onText(this.#decoder.decode(chunk, { stream: true }));
          } catch {
            // a logging callback must not stop the drain
          }
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

  #push(chunk: Uint8Array): void {
    if (chunk.length >= STDERR_TAIL_BYTES) {
      this.#chunks = [chunk.slice(chunk.length - STDERR_TAIL_BYTES)];
      this.#size = STDERR_TAIL_BYTES;
      return;
    }
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    while (this.#size > STDERR_TAIL_BYTES) {
      const head = this.#chunks[0]!;
      const excess = this.#size - STDERR_TAIL_BYTES;
      if (head.length <= excess) {
        this.#chunks.shift();
        this.#size -= head.length;
      } else {
        this.#chunks[0] = head.subarray(excess);
        this.#size -= excess;
      }
    }
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

  text(): string {
    const all = new Uint8Array(this.#size);
    let pos = 0;
    for (const c of this.#chunks) {
      all.set(c, pos);
      pos += c.length;
    }
    return new TextDecoder().decode(all);
  }
}

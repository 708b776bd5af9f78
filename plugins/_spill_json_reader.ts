/**
 * Parses a spill file's JSON chunk by chunk, keeping long string values out
 * of the text that `JSON.parse` sees. Private to `spillover()`.
 *
 * @module
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;

/** Options of {@linkcode SpillJsonReader}. */
export interface SpillJsonReaderOptions {
  /** Object values whose literal is longer than this many bytes are decoded apart. @default {65536} */
  bigString?: number;
  /** The fast path gives up when everything else is more than this many bytes. @default {1048576} */
  maxSkeleton?: number;
  /** Parses the skeleton's text (the session's exact integers). @default {JSON.parse} */
  parse?: (text: string) => unknown;
}

/**
 * A JSON parser fed chunk by chunk, for messages made of a small structure
 * around a few long strings (`{"id":7,"ok":true,"result":{"data":"…100 MB…"}}`).
 *
 * A long string that is an object value and holds no escape is decoded
 * straight from the chunks into a string built piece by piece (no flat copy
 * of the file, of its text or of the string ever exists); everything else,
 * the skeleton, is kept as bytes and given to `JSON.parse` at the end, with
 * a placeholder where each long string was. Anything else (a long string
 * with escapes, in an array or as a key, a large skeleton, invalid JSON)
 * makes {@linkcode SpillJsonReader.failed} true: the caller then parses the
 * file the plain way, which also gives the exact error.
 *
 * Reading is linear in the input, escapes or not: each byte is looked at a
 * bounded number of times ({@linkcode SpillJsonReader.examined} counts them).
 *
 * The one leniency: a control character inside a long literal is accepted
 * (JSON.parse refuses it); spill files are checked against their md5 and
 * written by the peer's JSON encoder, which escapes them.
 *
 * @example
 * ```ts
 * import { SpillJsonReader } from "./_spill_json_reader.ts";
 * const reader = new SpillJsonReader({ bigString: 4 });
 * const bytes = new TextEncoder().encode('{"id":1,"data":"abcdefgh"}');
 * reader.push(bytes.subarray(0, 10));
 * reader.push(bytes.subarray(10));
 * console.log(reader.finish()); // { id: 1, data: "abcdefgh" }
 * ```
 */
export class SpillJsonReader {
  #big: number;
  #maxSkeleton: number;
  #parse: (text: string) => unknown;
  #failed = false;
  #state: "out" | "small" | "big" = "out";
  // Skeleton bytes (copies).
  #skeleton = new ByteBuilder();
  // The string literal being read while it may still be short, opening quote included.
  #literal = new ByteBuilder();
  #literalEscaped = false;
  #escapePending = false;
  // The last byte of the skeleton that is not whitespace (a colon makes the next literal an object value).
  #lastSignificant = 0;
  #decoder: TextDecoder | undefined;
  #rope = "";
  #strings: string[] = [];
  #prefix = `\u0000pyproxy-spill-${crypto.randomUUID()}-`;
  #examined = 0;

  /** Creates a reader; see {@linkcode SpillJsonReaderOptions}. */
  constructor(options: SpillJsonReaderOptions = {}) {
    this.#big = options.bigString ?? 64 * 1024;
    this.#maxSkeleton = options.maxSkeleton ?? 1024 * 1024;
    this.#parse = options.parse ?? JSON.parse;
  }

  /**
   * How many bytes (and decoded characters) the reader's scans looked at so
   * far: at most a few times what was pushed, whatever the text (tests check
   * that reading stays linear).
   */
  get examined(): number {
    return this.#examined;
  }

  /** True once the fast path gave up: parse the whole file instead. */
  get failed(): boolean {
    return this.#failed;
  }

  /** Feeds the next chunk. The chunk is not kept (its buffer may be reused). */
  push(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length && !this.#failed) {
      if (this.#state === "out") pos = this.#out(chunk, pos);
      else if (this.#state === "small") pos = this.#small(chunk, pos);
      else pos = this.#bigLiteral(chunk, pos);
    }
  }

  /**
   * The parsed value, or `undefined` with {@linkcode SpillJsonReader.failed}
   * set when the fast path cannot give it (the caller falls back).
   */
  finish(): unknown {
    if (this.#failed) return undefined;
    if (this.#state !== "out") return this.#fail();
    const text = new TextDecoder().decode(this.#skeleton.bytes());
    this.#skeleton = new ByteBuilder();
    let value: unknown;
    try {
      value = this.#parse(text);
    } catch {
      return this.#fail();
    }
    if (this.#strings.length === 0) return value;
    const strings = this.#strings;
    this.#strings = [];
    const replaced = this.#restore(value, strings);
    return replaced === strings.length ? value : this.#fail();
  }

  #fail(): undefined {
    this.#failed = true;
    this.#skeleton = new ByteBuilder();
    this.#literal = new ByteBuilder();
    this.#strings = [];
    this.#rope = "";
    return undefined;
  }

  #keep(bytes: Uint8Array): void {
    if (this.#skeleton.length + bytes.length > this.#maxSkeleton) {
      this.#fail();
      return;
    }
    this.#skeleton.append(bytes);
  }

  // Outside any string: everything up to the next quote is skeleton.
  #out(chunk: Uint8Array, pos: number): number {
    const quote = chunk.indexOf(QUOTE, pos);
    const end = quote < 0 ? chunk.length : quote;
    this.#examined += end - pos + (quote < 0 ? 0 : 1);
    if (end > pos) {
      this.#keep(chunk.subarray(pos, end));
      let i = end - 1;
      for (; i >= pos; i--) {
        const b = chunk[i]!;
        if (b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09) {
          this.#lastSignificant = b;
          break;
        }
      }
      this.#examined += end - Math.max(i, pos);
    }
    if (quote < 0) return chunk.length;
    this.#state = "small";
    this.#literal.clear();
    this.#literal.append(OPENING_QUOTE);
    this.#literalEscaped = false;
    this.#escapePending = false;
    return quote + 1;
  }

  // Inside a literal that may still end short: its bytes are held until it ends or turns long.
  // Its escapes are taken here one after the other, and each byte is scanned at most once for
  // the closing quote and once for a backslash: the quote found (or the stretch known to hold
  // none) is kept from one escape to the next. Scanning again for the quote after each
  // backslash was quadratic: a MB of "\n" blocked the event loop for seconds.
  #small(chunk: Uint8Array, pos: number): number {
    // The first quote at or after `pos` while it is >= pos; none is in [pos, scanned) else.
    let quote = -1;
    let scanned = pos;
    while (pos < chunk.length && !this.#failed) {
      if (this.#escapePending) {
        this.#escapePending = false;
        this.#hold(chunk.subarray(pos, pos + 1));
        pos++;
        continue;
      }
      const eligible = !this.#literalEscaped && this.#lastSignificant === COLON;
      // A literal that can turn long is only scanned up to the point where it does, and one
      // with escapes up to the point where it is too long to be kept (#hold gives up there).
      // The limit does not move while the escapes of a chunk are held (pos and the literal
      // grow together), so the quote found stays before it.
      const limit = eligible || this.#literalEscaped
        ? Math.min(chunk.length, pos + this.#big + 1 - this.#literal.length)
        : chunk.length;
      if (quote < pos) {
        // None found yet, or the one found was an escaped byte: go on after what was scanned.
        const from = Math.max(scanned, pos);
        quote = from < limit ? this.#find(chunk, QUOTE, from, limit) : -1;
        if (quote < 0) scanned = Math.max(from, limit);
      }
      const closed = quote >= 0 && quote < limit;
      // Only a backslash before the closing quote matters: never scan a whole chunk for a short key.
      const backslash = this.#find(
        chunk,
        BACKSLASH,
        pos,
        closed ? quote : limit,
      );
      if (backslash >= 0) {
        this.#hold(chunk.subarray(pos, backslash + 1));
        this.#literalEscaped = true;
        this.#escapePending = true;
        pos = backslash + 1;
        continue;
      }
      if (closed) {
        this.#hold(chunk.subarray(pos, quote + 1));
        this.#keep(this.#literal.bytes());
        this.#literal.clear();
        this.#state = "out";
        this.#lastSignificant = QUOTE;
        return quote + 1;
      }
      this.#hold(chunk.subarray(pos, limit));
      if (eligible && this.#literal.length > this.#big) {
        // Long: decode what was held (without its opening quote) and go on straight from the chunks.
        this.#decoder = new TextDecoder();
        this.#rope = this.#decoder.decode(this.#literal.bytes().subarray(1), {
          stream: true,
        });
        this.#literal.clear();
        this.#state = "big";
      }
      return limit;
    }
    return pos;
  }

  // The first `byte` in chunk[from, to), or -1; counts the bytes it looked at.
  #find(chunk: Uint8Array, byte: number, from: number, to: number): number {
    const at = chunk.subarray(from, to).indexOf(byte);
    this.#examined += at < 0 ? to - from : at + 1;
    return at < 0 ? at : from + at;
  }

  #hold(bytes: Uint8Array): void {
    // A literal that will not be decoded apart ends up in the skeleton: it counts now.
    // One with escapes gives up as soon as it is long: the plain parse is faster for it.
    const length = this.#literal.length + bytes.length;
    const bound = this.#literalEscaped || this.#lastSignificant !== COLON
      ? this.#maxSkeleton
      : this.#big + this.#maxSkeleton;
    if (
      this.#skeleton.length + length > bound ||
      (this.#literalEscaped && length > this.#big)
    ) {
      this.#fail();
      return;
    }
    this.#literal.append(bytes);
  }

  // Inside a long literal: decoded chunk by chunk until its closing quote.
  #bigLiteral(chunk: Uint8Array, pos: number): number {
    const piece = this.#decoder!.decode(chunk.subarray(pos), { stream: true });
    const quote = piece.indexOf('"');
    const backslash = piece.indexOf("\\");
    this.#examined += (quote < 0 ? piece.length : quote + 1) +
      (backslash < 0 ? piece.length : backslash + 1);
    if (backslash >= 0) {
      this.#fail();
      return chunk.length;
    }
    if (quote < 0) {
      this.#rope += piece;
      return chunk.length;
    }
    this.#rope += piece.slice(0, quote);
    // Every character before the quote took at least one byte of this chunk, except up to 3
    // replacement characters for bytes held from the previous chunk; no quote byte comes before it.
    const from = pos + Math.max(0, quote - 3);
    const at = chunk.indexOf(QUOTE, from);
    this.#examined += at + 1 - from;
    const placeholder = this.#prefix + this.#strings.length;
    this.#strings.push(this.#rope);
    this.#rope = "";
    this.#decoder = undefined;
    this.#keep(new TextEncoder().encode(JSON.stringify(placeholder)));
    this.#state = "out";
    this.#lastSignificant = QUOTE;
    return at + 1;
  }

  // Puts each long string back where its placeholder is; returns how many were.
  #restore(value: unknown, strings: string[]): number {
    if (typeof value !== "object" || value === null) return 0;
    let count = 0;
    if (Array.isArray(value)) {
      for (const item of value) count += this.#restore(item, strings);
      return count;
    }
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const item = record[key];
      if (typeof item === "string") {
        if (item.startsWith(this.#prefix)) {
          const index = Number(item.slice(this.#prefix.length));
          const string = strings[index];
          if (string === undefined) continue;
          record[key] = string;
          count++;
        }
      } else count += this.#restore(item, strings);
    }
    return count;
  }
}

const OPENING_QUOTE = Uint8Array.of(QUOTE);

/** Bytes appended into one buffer that doubles when full (no object per append). */
class ByteBuilder {
  #buffer = new Uint8Array(256);
  length = 0;

  append(bytes: Uint8Array): void {
    const need = this.length + bytes.length;
    if (need > this.#buffer.length) {
      const grown = new Uint8Array(Math.max(need, this.#buffer.length * 2));
      grown.set(this.#buffer.subarray(0, this.length));
      this.#buffer = grown;
    }
    this.#buffer.set(bytes, this.length);
    this.length = need;
  }

  /** A view of the bytes so far (valid until the next append or clear). */
  bytes(): Uint8Array {
    return this.#buffer.subarray(0, this.length);
  }

  clear(): void {
    this.length = 0;
  }
}

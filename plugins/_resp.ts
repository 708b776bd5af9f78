/**
 * RESP2 (the Redis protocol) encoding of commands and an incremental reply
 * parser. Private to {@linkcode RedisStore}.
 *
 * @module
 */
import { ProtocolError, RemoteError } from "../src/errors.ts";

/** A parsed RESP2 reply; `-ERR ...` replies are `RemoteError` values. */
export type RespValue = string | number | null | RemoteError | RespValue[];

const CR = 13;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Appends one command (`*<n>` array of bulk strings) to `parts`.
 *
 * @example
 * ```ts
 * import { encodeCommand } from "./_resp.ts";
 * const parts: Uint8Array[] = [];
 * encodeCommand(["PING"], parts);
 * console.log(new TextDecoder().decode(parts[0])); // "*1\r\n$4\r\nPING\r\n"
 * ```
 */
export function encodeCommand(
  args: readonly string[],
  parts: Uint8Array[],
): void {
  let head = `*${args.length}\r\n`;
  for (const arg of args) {
    // Short ASCII arguments (command names, keys, lengths) ride in one text chunk; values get their own.
    if (arg.length < 256 && !/[\u0080-\uffff]/.test(arg)) {
      head += `$${arg.length}\r\n${arg}\r\n`;
      continue;
    }
    const bytes = encoder.encode(arg);
    parts.push(encoder.encode(`${head}$${bytes.length}\r\n`), bytes);
    head = "\r\n";
  }
  parts.push(encoder.encode(head));
}

/**
 * Turns the byte stream from a Redis server into replies. Bytes are appended
 * to one growing buffer (amortised doubling); a reply whose length is known
 * from its header is not re-parsed until all its bytes are there.
 *
 * @example
 * ```ts
 * import { RespParser } from "./_resp.ts";
 * const parser = new RespParser();
 * console.log(parser.push(new TextEncoder().encode("+PONG\r\n$2\r\nhi\r\n:3\r\n"))); // ["PONG", "hi", 3]
 * ```
 */
export class RespParser {
  #buf = new Uint8Array(4096);
  #start = 0;
  #end = 0;
  #need = 0;

  /** Adds bytes; returns every reply completed by them, in order. */
  push(chunk: Uint8Array): RespValue[] {
    this.#append(chunk);
    const out: RespValue[] = [];
    while (
      this.#end - this.#start > 0 && this.#end - this.#start >= this.#need
    ) {
      const parsed = this.#parse(this.#start);
      if (parsed === undefined) break;
      out.push(parsed[0]);
      this.#start = parsed[1];
      this.#need = 0;
    }
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return out;
  }

  #append(chunk: Uint8Array): void {
    const used = this.#end - this.#start;
    if (this.#end + chunk.length > this.#buf.length) {
      if (used + chunk.length <= this.#buf.length / 2) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        let size = this.#buf.length * 2;
        while (size < used + chunk.length) size *= 2;
        const next = new Uint8Array(size);
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = next;
      }
      this.#start = 0;
      this.#end = used;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  // Returns [value, next position], or undefined (with #need set) when bytes are missing.
  #parse(pos: number): [RespValue, number] | undefined {
    const buf = this.#buf;
    const lineEnd = buf.subarray(pos, this.#end).indexOf(CR);
    if (lineEnd < 0 || pos + lineEnd + 1 >= this.#end) {
      this.#need = this.#end - this.#start + 1;
      return undefined;
    }
    const type = buf[pos]!;
    const line = decoder.decode(buf.subarray(pos + 1, pos + lineEnd));
    const next = pos + lineEnd + 2;
    switch (type) {
      case 0x2b: // +
        return [line, next];
      case 0x2d: // -
        return [new RemoteError("RedisError", line), next];
      case 0x3a: // :
        return [Number(line), next];
      case 0x24: { // $
        const len = Number(line);
        if (len < 0) return [null, next];
        if (this.#end < next + len + 2) {
          this.#need = next + len + 2 - this.#start;
          return undefined;
        }
        return [decoder.decode(buf.subarray(next, next + len)), next + len + 2];
      }
      case 0x2a: { // *
        const count = Number(line);
        if (count < 0) return [null, next];
        const items: RespValue[] = [];
        let at = next;
        for (let i = 0; i < count; i++) {
          const item = this.#parse(at);
          if (item === undefined) return undefined;
          items.push(item[0]);
          at = item[1];
        }
        return [items, at];
      }
      default:
        throw new ProtocolError(
          `Cannot parse redis reply: unexpected type byte ${type}`,
        );
    }
  }
}

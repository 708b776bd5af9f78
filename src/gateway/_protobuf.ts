/**
 * Protocol Buffers wire format, the little the gateway's gRPC transport
 * needs: a reader that checks every length against the bytes it has (a
 * truncated or lying message is a `ProtobufError`, never a read past the
 * end) and skips unknown fields, and a writer. No reflection: the messages
 * (`_grpc_inference_messages.ts`) read their fields with a switch.
 *
 * @module
 */

/** Bytes that are not a valid message (truncated, a bad varint, a group). */
export class ProtobufError extends SyntaxError {
  /** Stable code. */
  readonly code = "PROTOBUF_INVALID";
  constructor(message: string) {
    super(`Cannot decode protobuf: ${message}`);
    this.name = "ProtobufError";
  }
}

/** Wire types. */
export const VARINT = 0;
export const FIXED64 = 1;
export const LEN = 2;
export const FIXED32 = 5;

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const ENCODER = new TextEncoder();

/** A reader of one message's bytes, field by field. */
export class ProtoReader {
  readonly bytes: Uint8Array;
  pos: number;
  readonly end: number;
  #view: DataView | undefined;

  constructor(bytes: Uint8Array, pos = 0, end = bytes.byteLength) {
    this.bytes = bytes;
    this.pos = pos;
    this.end = end;
  }

  /** Whether bytes are left. */
  more(): boolean {
    return this.pos < this.end;
  }

  /** A field's tag: `field << 3 | wireType`. */
  tag(): number {
    const tag = this.varint();
    if (tag < 8 || tag > 0xffffffff) {
      throw new ProtobufError(`a tag of ${tag} (field numbers are 1 to 2^29)`);
    }
    return tag;
  }

  /** A varint up to 2^53 (lengths, tags, bools, int32 and uint32). */
  varint(): number {
    const b = this.bytes;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new ProtobufError("truncated varint");
      const byte = b[this.pos++]!;
      // Past 2^53 it rounds: lengths that large fail their check anyway.
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 128;
    }
    throw new ProtobufError("varint longer than 10 bytes");
  }

  /** An int32 (negative ones are sign-extended to 10 bytes). */
  int32(): number {
    const start = this.pos;
    const n = this.varint();
    if (n <= 0x7fffffff) return n;
    // Sign-extended: its low 32 bits, read again exactly.
    this.pos = start;
    return Number(BigInt.asIntN(32, this.varint64()));
  }

  /** A 64-bit varint, unsigned (int64 fields: `BigInt.asIntN(64, ...)`). */
  varint64(): bigint {
    const b = this.bytes;
    let lo = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new ProtobufError("truncated varint");
      const byte = b[this.pos++]!;
      lo |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return BigInt.asUintN(64, lo);
      shift += 7n;
    }
    throw new ProtobufError("varint longer than 10 bytes");
  }

  /** An int64: a number when safe, else a BigInt. */
  int64(): number | bigint {
    const start = this.pos;
    // Small ones (most: shapes, parameters) without a BigInt.
    const b = this.bytes;
    if (this.pos < this.end && b[this.pos]! < 0x80) return b[this.pos++]!;
    this.pos = start;
    const v = BigInt.asIntN(64, this.varint64());
    return v >= -9007199254740991n && v <= 9007199254740991n ? Number(v) : v;
  }

  /** A length-delimited field's bounds, checked. */
  span(): [number, number] {
    const length = this.varint();
    const from = this.pos;
    if (length > this.end - from) {
      throw new ProtobufError(
        `a field of ${length} bytes, and ${this.end - from} are left`,
      );
    }
    this.pos = from + length;
    return [from, from + length];
  }

  /** A `bytes` field: a view, not a copy. */
  bytesField(): Uint8Array {
    const [from, to] = this.span();
    return this.bytes.subarray(from, to);
  }

  /** A `string` field (UTF-8, checked). */
  string(): string {
    const [from, to] = this.span();
    try {
      return UTF8.decode(this.bytes.subarray(from, to));
    } catch {
      throw new ProtobufError("a string field that is not UTF-8");
    }
  }

  /** A reader of an embedded message. */
  message(): ProtoReader {
    const [from, to] = this.span();
    return new ProtoReader(this.bytes, from, to);
  }

  /** Four little-endian bytes. */
  fixed32(): DataView {
    if (this.end - this.pos < 4) throw new ProtobufError("truncated fixed32");
    this.pos += 4;
    return this.#dataView();
  }

  /** Eight little-endian bytes. */
  fixed64(): DataView {
    if (this.end - this.pos < 8) throw new ProtobufError("truncated fixed64");
    this.pos += 8;
    return this.#dataView();
  }

  #dataView(): DataView {
    return this.#view ??= new DataView(
      this.bytes.buffer,
      this.bytes.byteOffset,
      this.bytes.byteLength,
    );
  }

  /** Skips a field of an unknown number (groups are refused). */
  skip(tag: number): void {
    switch (tag & 7) {
      case VARINT:
        this.varint64();
        return;
      case FIXED64:
        this.fixed64();
        return;
      case LEN:
        this.span();
        return;
      case FIXED32:
        this.fixed32();
        return;
      default:
        throw new ProtobufError(`wire type ${tag & 7} (groups are not read)`);
    }
  }
}

/** A writer of one message, field by field. */
export class ProtoWriter {
  #buf: Uint8Array;
  #view: DataView;
  #pos = 0;

  constructor(size = 256) {
    this.#buf = new Uint8Array(size);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes written. */
  get length(): number {
    return this.#pos;
  }

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.byteLength) return;
    let size = this.#buf.byteLength * 2;
    while (size < this.#pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(0, this.#pos));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
  }

  /** A non-negative varint up to 2^53. */
  varint(n: number): this {
    this.#room(10);
    while (n >= 0x80) {
      this.#buf[this.#pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.#buf[this.#pos++] = n;
    return this;
  }

  /** A 64-bit varint (negative: two's complement, 10 bytes). */
  varint64(n: bigint | number): this {
    if (typeof n === "number" && n >= 0 && Number.isSafeInteger(n)) {
      return this.varint(n);
    }
    let v = BigInt.asUintN(64, BigInt(n));
    this.#room(10);
    while (v >= 0x80n) {
      this.#buf[this.#pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.#buf[this.#pos++] = Number(v);
    return this;
  }

  /** A field's tag. */
  tag(field: number, wire: number): this {
    return this.varint(field * 8 + wire);
  }

  /** Raw bytes. */
  raw(bytes: Uint8Array): this {
    this.#room(bytes.byteLength);
    this.#buf.set(bytes, this.#pos);
    this.#pos += bytes.byteLength;
    return this;
  }

  /** A length-delimited field. */
  bytesField(field: number, bytes: Uint8Array): this {
    return this.tag(field, LEN).varint(bytes.byteLength).raw(bytes);
  }

  /** A string field (left out when empty, as proto3 does). */
  string(field: number, text: string): this {
    if (text === "") return this;
    return this.bytesField(field, ENCODER.encode(text));
  }

  /** A bool field (left out when false). */
  bool(field: number, value: boolean): this {
    return value ? this.tag(field, VARINT).varint(1) : this;
  }

  /** An embedded message (written whole, then copied in). */
  message(field: number, inner: ProtoWriter): this {
    return this.bytesField(field, inner.finish());
  }

  /** A float64, little-endian. */
  double(n: number): this {
    this.#room(8);
    this.#view.setFloat64(this.#pos, n, true);
    this.#pos += 8;
    return this;
  }

  /** The bytes written (a view of the writer's buffer). */
  finish(): Uint8Array {
    return this.#buf.subarray(0, this.#pos);
  }
}

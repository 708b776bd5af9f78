/**
 * Bytes on the wire (docs/protocol.md §3, "Bytes"): a message holding
 * `Uint8Array`s (any `ArrayBuffer` view, or an `ArrayBuffer`) travels with
 * each as a base64 string at its place and `"$bytes"` naming those places;
 * a message read with `$bytes` gets `Uint8Array`s back there.
 *
 * Finding them costs a plain message nothing but one native scan of its
 * JSON text: `JSON.stringify` writes a typed array as `{"0":…}` (or `{}`
 * when empty; an `ArrayBuffer` or `DataView` as `{}`, a Node `Buffer`
 * through its `toJSON` as `{"type":"Buffer","data":[…]}`), so only a text
 * with one of those shapes is walked to see whether it came from bytes.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { ProtocolError, SerializationError } from "./errors.ts";
import { MAX_JSON_DEPTH } from "./_json_check.ts";

/** A step of a path: an object key or an array index. */
export type Step = string | number;

/** What `JSON.stringify` writes for bytes; a text without it holds none. */
const MAY_HOLD_BYTES = /\{\}|\{"0":|\{"type":"Buffer","data":\[/;

/** Whether the JSON text `text` may come from a value holding bytes (a cheap, native test). */
export function mayHoldBytes(text: string): boolean {
  return MAY_HOLD_BYTES.test(text);
}

/** Bytes as a value: an `ArrayBuffer` view or an `ArrayBuffer` (shared or not). */
export type Bytes = ArrayBufferView | ArrayBufferLike;

const Shared: typeof SharedArrayBuffer | undefined =
  typeof SharedArrayBuffer === "function" ? SharedArrayBuffer : undefined;

/**
 * Whether `value` is bytes: an `ArrayBuffer` view (`Uint8Array`, `Buffer`,
 * `DataView`...), an `ArrayBuffer` or a `SharedArrayBuffer` (which
 * `JSON.stringify` would write as `{}`).
 */
export function isBytes(value: unknown): value is Bytes {
  return typeof value === "object" && value !== null &&
    (ArrayBuffer.isView(value) || value instanceof ArrayBuffer ||
      (Shared !== undefined && value instanceof Shared));
}

/**
 * The bytes of `value` as a `Uint8Array` over the same memory (no copy).
 * Throws a `TypeError` for bytes whose `ArrayBuffer` is detached (transferred
 * to a worker or by `structuredClone`, or `transfer()`ed): `JSON.stringify`
 * writes them as `{}`, and sending them as empty bytes would hide the bug.
 */
export function bytesOf(value: Bytes): Uint8Array {
  const buffer = ArrayBuffer.isView(value) ? value.buffer : value;
  if ((buffer as { detached?: boolean }).detached === true) {
    throw new TypeError(
      "Cannot read bytes: their ArrayBuffer is detached (transferred)",
    );
  }
  return ArrayBuffer.isView(value)
    ? new Uint8Array(value.buffer, value.byteOffset, value.byteLength)
    : new Uint8Array(value);
}

type Native = {
  toBase64?: (this: Uint8Array) => string;
};
type NativeFrom = { fromBase64?: (text: string) => Uint8Array };

/** Base64 (standard alphabet, padded) of `bytes`. */
export function toBase64(bytes: Uint8Array): string {
  const native = (bytes as unknown as Native).toBase64;
  return typeof native === "function"
    ? native.call(bytes)
    : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(
      "base64",
    );
}

// A character outside the alphabet and its padding. Checked with a search,
// not a pattern of the whole text: a `^(?:[A-Za-z0-9+/]{4})*...$` pattern
// overflows V8's regexp stack on a few MB of text (a 5 MB streamed item
// closed its connection).
const NOT_BASE64 = /[^A-Za-z0-9+/=]/;

/** The bytes of the padded base64 `text`, or undefined when it is not that. */
export function fromBase64(text: string): Uint8Array | undefined {
  const length = text.length;
  if (length % 4 !== 0 || NOT_BASE64.test(text)) return undefined;
  // Padding: at most two "=", only at the end.
  const pad = text.indexOf("=");
  if (
    pad !== -1 &&
    (pad < length - 2 || (pad === length - 2 && text[length - 1] !== "="))
  ) {
    return undefined;
  }
  const native = (Uint8Array as unknown as NativeFrom).fromBase64;
  if (typeof native === "function") {
    try {
      return native(text);
    } catch {
      return undefined;
    }
  }
  const buf = Buffer.from(text, "base64");
  // Not a view of Buffer's shared pool: its other bytes are not the caller's.
  return new Uint8Array(buf);
}

/** Fields of a call's message {@linkcode fieldsHoldBytes} looks at, at most. */
const BYTES_FIELDS = 16;

/**
 * Whether `payload` (a call's message, `pool.execute(name, payload)`) is
 * bytes or has bytes among its first `BYTES_FIELDS` own fields, as
 * `JSON.stringify` sees them (`{ image: png }`): the outbox then writes them
 * as base64 at once, without first stringifying the message as it is, which
 * writes them index by index (`{"0":…}`, ~0.4 s per MB on Bun, ~0.1 on Deno)
 * only for {@linkcode mayHoldBytes} to find them. `false` says nothing about
 * bytes deeper in. No allocation: a few checks per field.
 *
 * @example
 * ```ts
 * import { fieldsHoldBytes } from "./_binary.ts";
 * console.log(fieldsHoldBytes({ image: new Uint8Array(3) })); // true
 * console.log(fieldsHoldBytes({ x: [1, 2] })); // false
 * ```
 */
export function fieldsHoldBytes(payload: unknown): boolean {
  if (typeof payload !== "object" || payload === null) return false;
  if (isBytes(payload)) return true;
  if (
    Array.isArray(payload) ||
    typeof (payload as { toJSON?: unknown }).toJSON === "function"
  ) return false;
  let left = BYTES_FIELDS;
  for (const key in payload) {
    if (--left < 0) return false;
    const value = (payload as Record<string, unknown>)[key];
    if (
      typeof value === "object" && value !== null && isBytes(value) &&
      Object.hasOwn(payload, key)
    ) return true;
  }
  return false;
}

/**
 * Whether one of `msgs` (a batch's messages, `executeBatch`) is bytes or
 * has bytes among its first fields, as {@linkcode fieldsHoldBytes} says.
 *
 * @example
 * ```ts
 * import { itemsHoldBytes } from "./_binary.ts";
 * console.log(itemsHoldBytes([{ x: 1 }, { image: new Uint8Array(3) }])); // true
 * ```
 */
export function itemsHoldBytes(msgs: readonly unknown[]): boolean {
  for (let i = 0; i < msgs.length; i++) {
    if (fieldsHoldBytes(msgs[i])) return true;
  }
  return false;
}

/**
 * Whether `value` holds bytes anywhere (objects' own enumerable values and
 * array items, as `JSON.stringify` sees them; a value with `toJSON` other
 * than bytes is not looked into). Walked only after {@linkcode mayHoldBytes}.
 */
export function holdsBytes(value: unknown, depth = 0): boolean {
  if (typeof value !== "object" || value === null) return false;
  if (isBytes(value)) return true;
  if (depth > MAX_JSON_DEPTH) return false; // JSON.stringify's own error comes first
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (holdsBytes(value[i], depth + 1)) return true;
    }
    return false;
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
    return false;
  }
  for (const key in value) {
    if (
      Object.hasOwn(value, key) &&
      holdsBytes((value as Record<string, unknown>)[key], depth + 1)
    ) return true;
  }
  return false;
}

/**
 * A copy of `msg` with its bytes replaced by base64 strings and `$bytes`
 * naming their places (only the objects and arrays on the way to bytes are
 * copied). Throws a `SerializationError` when `msg` already has a `$bytes`
 * key (a field of the protocol, not of a command).
 */
export function withBase64(
  msg: Record<string, unknown>,
): Record<string, unknown> {
  const what = typeof msg.cmd === "string" ? msg.cmd : "message";
  if (Object.hasOwn(msg, "$bytes")) {
    throw new SerializationError(
      `Cannot send ${what}: '$bytes' is a field of the protocol`,
    );
  }
  const paths: Step[][] = [];
  const out = replace(msg, [], paths, 0, what) as Record<string, unknown>;
  return { ...out, $bytes: paths };
}

function replace(
  value: unknown,
  path: Step[],
  paths: Step[][],
  depth: number,
  what: string,
): unknown {
  if (typeof value !== "object" || value === null) return value;
  if (isBytes(value)) {
    let bytes: Uint8Array;
    try {
      bytes = bytesOf(value);
    } catch (err) {
      const type = value.constructor.name;
      throw new SerializationError(
        `Cannot send ${what}: ${pathText(path)} is ${
          /^[aeio]/i.test(type) ? "an" : "a"
        } ${type} whose ArrayBuffer is detached (transferred)`,
        { cause: err },
      );
    }
    paths.push(path.slice());
    return toBase64(bytes);
  }
  if (depth > MAX_JSON_DEPTH) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (typeof item !== "object" || item === null) continue;
      path.push(i);
      const next = replace(item, path, paths, depth + 1, what);
      path.pop();
      if (next !== item) (copy ??= value.slice())[i] = next;
    }
    return copy ?? value;
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
    return value;
  }
  let copy: Record<string, unknown> | undefined;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const item = (value as Record<string, unknown>)[key];
    if (typeof item !== "object" || item === null) continue;
    path.push(key);
    const next = replace(item, path, paths, depth + 1, what);
    path.pop();
    if (next !== item) {
      (copy ??= { ...(value as Record<string, unknown>) })[key] = next;
    }
  }
  return copy ?? value;
}

/** `msg.image[0]`-like text of a path from the message (for errors). */
function pathText(path: Step[]): string {
  return path.map((step, i) =>
    typeof step === "number"
      ? `[${step}]`
      : /^[A-Za-z_$][\w$]*$/.test(step)
      ? i === 0 ? step : `.${step}`
      : `[${JSON.stringify(step)}]`
  ).join("").slice(0, 200);
}

/**
 * Gives `bytes` a `toJSON` (not enumerable) that writes it as its base64
 * string: a result with bytes written as JSON (a gateway response, an SSE
 * item, a channel message) carries base64 text instead of `{"0":…}`. On the
 * wire ({@linkcode stringifyForWire}) it writes `{}`, so the same bytes
 * passed back into a call are sent as bytes.
 */
export function jsonAsBase64(bytes: Uint8Array): Uint8Array {
  Object.defineProperty(bytes, "toJSON", {
    value: base64Json,
    enumerable: false,
    configurable: true,
    writable: true,
  });
  return bytes;
}

/**
 * Containers {@linkcode bytesAsBase64Json} looks into at most: a JSON-only
 * result pays at most ~10 µs (~50 ns a container), a small one ~150 ns.
 */
const BYTES_JSON_NODES = 256;

/**
 * `value` with its bytes replaced by views of the same memory (no copy)
 * that {@linkcode jsonAsBase64} gives a `toJSON`: written for the wire they
 * write `{}`, so `JSON.stringify` never writes a large `Uint8Array` index by
 * index (`{"0":…}`, ~0.2 s per MB, and past ~40 MB more text than a string
 * holds) before it is sent as bytes. Only the containers on the way to bytes
 * are copied (the caller's value is never changed), at most
 * `BYTES_JSON_NODES` of them are looked into (bytes past them are still sent
 * as bytes, the slow way), and bytes over a detached `ArrayBuffer` are left
 * as they are (the outbox names them). For values a host handler returns;
 * `nodes: Infinity` for a value known to hold bytes that has no slow way
 * (a channel message: bytes left out would reach subscribers as `{"0":…}`).
 */
export function bytesAsBase64Json(
  value: unknown,
  nodes: number = BYTES_JSON_NODES,
): unknown {
  if (typeof value !== "object" || value === null) return value;
  return asBase64Json(value, { left: nodes }, 0);
}

function asBase64Json(
  value: object,
  budget: { left: number },
  depth: number,
): unknown {
  if (isBytes(value)) {
    try {
      const bytes = bytesOf(value);
      // A view of its own: the toJSON goes on it, not on the caller's array.
      return jsonAsBase64(
        new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      );
    } catch {
      return value; // detached: the outbox fails the message naming its place
    }
  }
  if (--budget.left < 0 || depth > MAX_JSON_DEPTH) return value;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    for (let i = 0; i < value.length && budget.left > 0; i++) {
      const item = value[i];
      if (typeof item !== "object" || item === null) continue;
      const next = asBase64Json(item, budget, depth + 1);
      if (next !== item) (copy ??= value.slice())[i] = next;
    }
    return copy ?? value;
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
    return value;
  }
  let copy: Record<string, unknown> | undefined;
  for (const key in value) {
    if (budget.left <= 0) break;
    if (!Object.hasOwn(value, key)) continue;
    const item = (value as Record<string, unknown>)[key];
    if (typeof item !== "object" || item === null) continue;
    const next = asBase64Json(item, budget, depth + 1);
    if (next !== item) {
      (copy ??= { ...(value as Record<string, unknown>) })[key] = next;
    }
  }
  return copy ?? value;
}

function base64Json(this: Uint8Array): string | Record<string, never> {
  // On the wire, `{}`: a shape `mayHoldBytes` finds, so bytes a result gave
  // go as bytes when passed back into a call, not as their base64 text (a
  // string to Python).
  return writingWire ? {} : toBase64(this);
}

// True only while a message is written for the wire (synchronously, so no
// other code sees it): what `base64Json` writes depends on it.
let writingWire = false;

/**
 * `JSON.stringify(msg)` for the wire: the `Uint8Array`s of
 * {@linkcode jsonAsBase64} write `{}` instead of their base64 text, so
 * {@linkcode mayHoldBytes} finds them and they are sent as bytes.
 */
export function stringifyForWire(msg: unknown): string | undefined {
  const was = writingWire; // a getter or toJSON may send a message itself
  writingWire = true;
  try {
    return JSON.stringify(msg);
  } finally {
    writingWire = was;
  }
}

/** `write()` (another way of writing a message as JSON) as {@linkcode stringifyForWire} runs it. */
export function writeForWire<T>(write: () => T): T {
  const was = writingWire;
  writingWire = true;
  try {
    return write();
  } finally {
    writingWire = was;
  }
}

/**
 * Decodes, in place, the base64 strings `msg.$bytes` names into
 * `Uint8Array`s and removes the field; returns an error (not thrown) for a
 * `$bytes` that is not a list of paths to base64 strings (each step an own
 * key of an object or an index inside an array). On an error the message
 * may be partly decoded: the caller fails it as a whole.
 */
export function decodeBytes(
  msg: Record<string, unknown>,
): ProtocolError | undefined {
  const paths = msg.$bytes;
  delete msg.$bytes;
  if (!Array.isArray(paths)) {
    return new ProtocolError(
      "Cannot read message: '$bytes' must be a list of paths",
    );
  }
  for (let index = 0; index < paths.length; index++) {
    const at = paths[index];
    const problem = decodeAt(msg, at);
    if (problem !== undefined) {
      return new ProtocolError(
        `Cannot read message: '$bytes' path ${index} ${
          JSON.stringify(at)?.slice(0, 200)
        }: ${problem}`,
      );
    }
  }
  return undefined;
}

function validStep(step: unknown): step is Step {
  return typeof step === "string" ||
    (typeof step === "number" && Number.isInteger(step) && step >= 0);
}

function decodeAt(
  msg: Record<string, unknown>,
  at: unknown,
): string | undefined {
  if (!Array.isArray(at) || at.length === 0 || !at.every(validStep)) {
    return "is not a non-empty list of keys (strings) and indexes (integers >= 0)";
  }
  let parent: unknown = msg;
  for (let i = 0; i < at.length; i++) {
    const step = at[i] as Step;
    const here = typeof step === "string"
      ? typeof parent === "object" && parent !== null &&
        !Array.isArray(parent) &&
        Object.hasOwn(parent, step)
      : Array.isArray(parent) && step < parent.length;
    if (!here) return "does not exist";
    if (i === at.length - 1) {
      const text = (parent as Record<Step, unknown>)[step];
      if (typeof text !== "string") return "is not a base64 string";
      const bytes = fromBase64(text);
      if (bytes === undefined) return "is not base64";
      (parent as Record<Step, unknown>)[step] = jsonAsBase64(bytes);
      return undefined;
    }
    parent = (parent as Record<Step, unknown>)[step];
  }
  return undefined;
}

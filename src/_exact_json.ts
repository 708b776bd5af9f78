/**
 * Integers beyond ±(2^53 − 1) in JSON text: found cheaply, parsed exactly
 * as `BigInt`, and written back exactly (the `integers` option of sessions
 * and pools, docs/models.md "Large integers").
 *
 * JSON carries integers of any size; `JSON.parse` rounds those past 2^53 to
 * the nearest double (`Infinity` past ~1.8e308). Only text that may hold one
 * is parsed again, with a reviver that reads each number's source text
 * (`context.source`, Deno 2 and Bun 1.x): the rest pays one regular
 * expression scan.
 *
 * @module
 */
import { InvalidRequestError, UnsafeIntegerError } from "./errors.ts";
import { depthOver, stringEnd } from "./_json_depth.ts";

/** How integers outside ±(2^53 − 1) are received: see `SessionConnectOptions.integers`. */
export type IntegersMode = "number" | "bigint";

/**
 * A JSON integer literal of 16 digits or more (the shortest that can be
 * unsafe: 2^53 has 16 digits), after the `:`, `,` or `[` that starts a value.
 * The digits of a float's fraction follow a `.` and never match; a 16-digit
 * integer part (`1234567890123456.5`) or digits in a string (`"a:1234…"`)
 * do, and cost a second parse that finds nothing.
 */
const MAYBE_UNSAFE = /[:,[]\s*-?\d{16}/;
/**
 * The same as the whole text (a bare number: a request body, never a
 * session's message). Apart: `(?:^|[:,[])` in one expression scans a long
 * text ~3.5 times slower.
 */
const BARE_UNSAFE = /^\s*-?\d{16}/;
const INTEGER = /^-?\d+$/;

/**
 * The deepest text read with a reviver (levels of arrays and objects, the
 * whole value being 1). `JSON.parse` itself reads any depth, but its walk
 * for a reviver recurses: it overflowed the stack from a few thousand
 * levels. Deeper text is read without one, and its integers beyond ±2^53
 * cannot be exact (see {@linkcode ExactJson.inexact}). The walks over
 * revived values ({@linkcode findBigInt}, {@linkcode roundBigInts},
 * {@linkcode withRawIntegers}) go this deep too.
 */
export const EXACT_JSON_DEPTH = 1000;

/** A `BigInt` for an unsafe integer literal, else `value` (a reviver's logic). */
function revive(value: unknown, context?: { source?: string }): unknown {
  if (typeof value !== "number" || Number.isSafeInteger(value)) return value;
  const source = context?.source;
  if (source === undefined) {
    throw new TypeError(
      "Cannot parse integers exactly: this runtime's JSON.parse gives revivers no source text",
    );
  }
  return INTEGER.test(source) ? BigInt(source) : value;
}

const reviver = (_key: string, value: unknown, context?: { source?: string }) =>
  revive(value, context);

/**
 * {@linkcode revive}, refusing first an integer literal of more than
 * `maxDigits` digits: making a `BigInt` of one (and writing it back) costs
 * time quadratic in its length (~0.3 s of the thread for a million digits).
 */
function reviverWithin(maxDigits: number) {
  return (_key: string, value: unknown, context?: { source?: string }) => {
    if (typeof value !== "number" || Number.isSafeInteger(value)) return value;
    const source = context?.source;
    if (source !== undefined && INTEGER.test(source)) {
      const digits = source.length - (source.startsWith("-") ? 1 : 0);
      if (digits > maxDigits) {
        throw new InvalidRequestError(
          `Cannot parse JSON: an integer of ${digits} digits is over the limit of ${maxDigits}`,
          { details: { digits, limit: maxDigits } },
        );
      }
    }
    return revive(value, context);
  };
}

/** Options of {@linkcode parseJson}. */
export interface ParseJsonOptions {
  /**
   * Refuse an integer literal of more digits (sign not counted) with an
   * `InvalidRequestError` (`details: {digits, limit}`) before it is made a
   * `BigInt`. At least 16: shorter literals may be safe integers, which
   * `JSON.parse` reads alone and which are not looked at.
   *
   * @default {Infinity}
   */
  maxIntegerDigits?: number;
}

/**
 * `JSON.parse(text)` with integers beyond ±(2^53 − 1) as exact `BigInt`s
 * (parsed twice only when the text may hold one). For the host's own JSON
 * stores and the gateway's request bodies (with `maxIntegerDigits`). Text
 * that may hold such an integer nested deeper than
 * {@linkcode EXACT_JSON_DEPTH} is refused with an `InvalidRequestError`
 * (`details: {depth, limit}`): the reviver's walk recurses.
 *
 * @example
 * ```ts ignore
 * parseJson('{"id":12345678901234567891}'); // { id: 12345678901234567891n }
 * parseJson(`[${"9".repeat(5000)}]`, { maxIntegerDigits: 4300 }); // throws InvalidRequestError
 * ```
 */
export function parseJson(
  text: string,
  options: ParseJsonOptions = {},
): unknown {
  if (!MAYBE_UNSAFE.test(text) && !BARE_UNSAFE.test(text)) {
    return JSON.parse(text);
  }
  const depth = depthOver(text, EXACT_JSON_DEPTH);
  if (depth !== undefined) {
    throw new InvalidRequestError(
      `Cannot parse JSON exactly: it is nested ${depth} levels deep and may hold an integer beyond ±2^53, which is read exactly only within ${EXACT_JSON_DEPTH} levels`,
      { details: { depth, limit: EXACT_JSON_DEPTH } },
    );
  }
  const max = options.maxIntegerDigits;
  return JSON.parse(
    text,
    (max === undefined || max === Infinity ? reviver : reviverWithin(max)) as (
      k: string,
      v: unknown,
    ) => unknown,
  );
}

/**
 * `JSON.stringify(value)`, except that a value holding a `BigInt` (which it
 * refuses) is written with exact integer literals: only such a value pays
 * for a second pass. Throws what `JSON.stringify` throws for anything else.
 */
export function stringifyJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch (err) {
    if (findBigInt(value) === undefined) throw err;
    return stringifyExact(value);
  }
}

/**
 * Parses JSON text, reviving integer literals outside ±(2^53 − 1) as
 * `BigInt` and counting what it did. One per session (no shared state).
 */
export class ExactJson {
  /** Texts parsed a second time (the cheap test matched). */
  reparsed = 0;
  /** `BigInt`s made. */
  revived = 0;
  /**
   * Texts that may hold an integer beyond ±2^53 but were nested too deep to
   * read with the reviver (past {@linkcode EXACT_JSON_DEPTH}): read as
   * `JSON.parse` alone reads them, numbers rounded. A batch frame counts
   * its deep messages only (its others are read exactly). Check with
   * {@linkcode ExactJson.inexactDepthOf} which messages were read so, and
   * with {@linkcode holdsUnsafeNumber} which of them hold such a number.
   */
  inexact = 0;
  /** The depth of the last such text (or batch frame's message). */
  inexactDepth = 0;
  // The messages read so, with their depth: a whole text, or the message
  // of a batch frame that is itself that deep (see {@linkcode inexactDepthOf}).
  #inexactValues = new WeakMap<object, number>();

  #reviver = (_key: string, value: unknown, context?: { source?: string }) => {
    const out = revive(value, context);
    if (out !== value) this.revived++;
    return out;
  };

  /**
   * `JSON.parse(text)`, except that where `text` may hold an unsafe integer
   * it is parsed again with a reviver that makes `BigInt`s of them (check
   * {@linkcode ExactJson.revived}). Throws what `JSON.parse` throws.
   */
  parse(text: string): unknown {
    if (!MAYBE_UNSAFE.test(text)) return JSON.parse(text);
    const depth = depthOver(text, EXACT_JSON_DEPTH);
    if (depth === undefined) return this.#exactParse(text);
    // A batch frame (protocol §4) is read message by message: one deep
    // message must not make its shallow neighbours (other calls' replies,
    // a stream's next items) inexact too.
    const items = batchItems(text);
    if (items !== undefined) {
      return { batch: items.map((item) => this.#parseItem(item)) };
    }
    return this.#inexactParse(text, depth);
  }

  /**
   * The depth of `value` (a message this parsed) when it was read without
   * the reviver, nested past {@linkcode EXACT_JSON_DEPTH}, else `undefined`:
   * its numbers beyond ±2^53 (see {@linkcode holdsUnsafeNumber}) are rounded.
   */
  inexactDepthOf(value: unknown): number | undefined {
    return typeof value === "object" && value !== null
      ? this.#inexactValues.get(value)
      : undefined;
  }

  #parseItem(text: string): unknown {
    if (!MAYBE_UNSAFE.test(text)) return JSON.parse(text);
    const depth = depthOver(text, EXACT_JSON_DEPTH);
    return depth === undefined
      ? this.#exactParse(text)
      : this.#inexactParse(text, depth);
  }

  #exactParse(text: string): unknown {
    this.reparsed++;
    return JSON.parse(
      text,
      this.#reviver as (k: string, v: unknown) => unknown,
    );
  }

  #inexactParse(text: string, depth: number): unknown {
    this.inexact++;
    this.inexactDepth = depth;
    const value: unknown = JSON.parse(text);
    this.#markInexact(value, depth);
    return value;
  }

  #markInexact(value: unknown, depth: number): void {
    if (typeof value !== "object" || value === null) return;
    this.#inexactValues.set(value, depth);
    // A batch frame that batchItems did not split: each message as deep.
    const batch = (value as { batch?: unknown }).batch;
    if (Array.isArray(batch)) {
      for (const msg of batch) {
        if (typeof msg === "object" && msg !== null) {
          this.#inexactValues.set(msg, depth);
        }
      }
    }
  }
}

const BATCH_START = /^\s*\{\s*"batch"\s*:\s*\[/;
const BATCH_END = /^\s*\}\s*$/;

/**
 * The texts of the messages of a batch frame, `{"batch":[m1,m2,...]}` and
 * nothing else (as Python writes it), or `undefined` for any other text.
 * Iterative: any depth. Each text is checked when it is parsed, so the
 * frame is valid JSON exactly when each of them is.
 */
function batchItems(text: string): string[] | undefined {
  const start = BATCH_START.exec(text);
  if (start === null) return undefined;
  const items: string[] = [];
  let from = start[0].length;
  let depth = 0;
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) { // "
      i = stringEnd(text, i);
    } else if (c === 0x5b || c === 0x7b) { // [ {
      depth++;
    } else if (c === 0x5d || c === 0x7d) { // ] }
      if (depth > 0) {
        depth--;
        continue;
      }
      if (c !== 0x5d || !BATCH_END.test(text.slice(i + 1))) return undefined;
      const last = text.slice(from, i);
      // `[]`: no message (an empty last item is an error for JSON.parse).
      if (items.length > 0 || last.trim() !== "") items.push(last);
      return items;
    } else if (c === 0x2c && depth === 0) { // ,
      items.push(text.slice(from, i));
      from = i + 1;
    }
  }
  return undefined;
}

/**
 * Whether `value` holds a number that is an integer beyond ±(2^53 − 1) (or
 * infinite): what `JSON.parse` makes of such an integer literal (or of a
 * float literal that large, which it cannot tell apart). Iterative: any
 * depth.
 */
export function holdsUnsafeNumber(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === "number") {
      // Infinity too: Math.trunc(Infinity) is Infinity.
      if (!Number.isSafeInteger(v) && Math.trunc(v) === v) return true;
    } else if (typeof v === "object" && v !== null) {
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) stack.push(v[i]);
      } else {
        for (const key in v) {
          if (Object.hasOwn(v, key)) {
            stack.push((v as Record<string, unknown>)[key]);
          }
        }
      }
    }
  }
  return false;
}

/** Where {@linkcode findBigInt} found a `BigInt`: its path and value. */
export interface FoundBigInt {
  /** `result.ids[3]`, relative to the value searched. */
  path: string;
  /** The integer. */
  value: bigint;
}

/**
 * The first `BigInt` in `value` (depth first), with its path, or
 * `undefined`. Only runs on messages {@linkcode ExactJson} revived some in.
 */
export function findBigInt(
  value: unknown,
  path = "",
  depth = 0,
): FoundBigInt | undefined {
  if (typeof value === "bigint") return { path, value };
  // Deeper than a revived message can be (and a cycle ends here).
  if (typeof value !== "object" || value === null || depth > EXACT_JSON_DEPTH) {
    return undefined;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findBigInt(value[i], `${path}[${i}]`, depth + 1);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const found = findBigInt(
      (value as Record<string, unknown>)[key],
      path === "" ? key : `${path}.${key}`,
      depth + 1,
    );
    if (found !== undefined) return found;
  }
  return undefined;
}

/**
 * Replaces, in place, each `BigInt` in `value`'s objects and arrays with the
 * nearest `number` (what `JSON.parse` alone would have given), for the
 * messages of `integers: "number"` that are passed on rather than refused.
 */
export function roundBigInts(value: unknown, depth = 0): void {
  if (typeof value !== "object" || value === null || depth > EXACT_JSON_DEPTH) {
    return;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v = value[i];
      if (typeof v === "bigint") value[i] = Number(v);
      else roundBigInts(v, depth + 1);
    }
    return;
  }
  const record = value as Record<string, unknown>;
  for (const key in record) {
    if (!Object.hasOwn(record, key)) continue;
    const v = record[key];
    if (typeof v === "bigint") record[key] = Number(v);
    else roundBigInts(v, depth + 1);
  }
}

/**
 * The {@linkcode UnsafeIntegerError} of `integers: "number"` for the first
 * `BigInt` in `msg`, or `undefined` when it holds none. `action` starts the
 * message ("Cannot complete executeModel").
 */
export function unsafeIntegerError(
  action: string,
  msg: unknown,
): UnsafeIntegerError | undefined {
  const found = findBigInt(msg);
  if (found === undefined) return undefined;
  const digits = found.value.toString();
  const value = digits.length <= 40
    ? digits
    : `${digits.slice(0, 20)}…(${digits.replace("-", "").length} digits)`;
  return new UnsafeIntegerError(
    `${action}: ${
      found.path || "the value"
    } is ${value}, beyond ±2^53 where numbers are exact (send it as a string, or use integers: "bigint")`,
    { details: { path: found.path, value } },
  );
}

/**
 * `JSON.stringify(value)` with each `BigInt` written as its exact integer
 * literal (`JSON.rawJSON`), for `integers: "bigint"`. Throws what
 * `JSON.stringify` throws for everything else.
 */
export function stringifyExact(value: unknown): string | undefined {
  const raw = (JSON as { rawJSON?: (text: string) => unknown }).rawJSON;
  if (typeof raw !== "function") {
    throw new TypeError(
      "Cannot write a BigInt exactly: this runtime has no JSON.rawJSON",
    );
  }
  return JSON.stringify(
    value,
    (_key, v) =>
      typeof v === "bigint" &&
        typeof (v as { toJSON?: unknown }).toJSON !== "function"
        ? raw(v.toString())
        : v,
  );
}

/**
 * `value` with each `BigInt` replaced by `JSON.rawJSON` of its digits (a copy
 * of the objects and arrays on the way to one; the rest is shared), for
 * encoders that take values rather than a replacer. Same errors as
 * {@linkcode stringifyExact}.
 */
export function withRawIntegers(value: unknown, depth = 0): unknown {
  if (typeof value === "bigint") {
    if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
      return value;
    }
    const raw = (JSON as { rawJSON?: (text: string) => unknown }).rawJSON;
    if (typeof raw !== "function") {
      throw new TypeError(
        "Cannot write a BigInt exactly: this runtime has no JSON.rawJSON",
      );
    }
    return raw(value.toString());
  }
  if (typeof value !== "object" || value === null || depth > EXACT_JSON_DEPTH) {
    return value;
  }
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") {
    return value;
  }
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v = withRawIntegers(value[i], depth + 1);
      if (v !== value[i]) (out ??= value.slice())[i] = v;
    }
    return out ?? value;
  }
  let out: Record<string, unknown> | undefined;
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const old = (value as Record<string, unknown>)[key];
    const v = withRawIntegers(old, depth + 1);
    if (v !== old) {
      out ??= { ...(value as Record<string, unknown>) };
      out[key] = v;
    }
  }
  return out ?? value;
}

/**
 * How deeply JSON text nests, read from the text without parsing it: for
 * refusing a request body nested deeper than the gateway takes before
 * anything recursive (a `JSON.parse` reviver, the host's walks, Python's
 * `json`) gets to it.
 *
 * @module
 */

/**
 * The gateway's default `limits.maxJsonDepth`. Measured on Python 3.11 (a
 * real worker, no host check): a model's input decodes up to 982 levels and
 * a result encodes up to 982 (3.9–3.11 alike; 3.12 and 3.13 go deeper). The
 * host's spill-over walk refuses messages past 900 levels (`MAX_JSON_DEPTH`),
 * i.e. an execute body past 898 (the message and its `args` wrap it). 800
 * stays under both and leaves a model room to return its input nested a few
 * levels deeper than it came.
 */
export const DEFAULT_MAX_JSON_DEPTH = 800;

const QUOTE = 0x22; // "
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b; // [
const OPEN_OBJECT = 0x7b; // {
const CLOSE_ARRAY = 0x5d; // ]
const CLOSE_OBJECT = 0x7d; // }

/**
 * The depth of `text` (as {@linkcode jsonDepth}) when it is over `limit`,
 * else `undefined`; cheap for nearly every text. Each level takes an opening
 * and a closing bracket, so a text of at most `2 * limit` characters cannot
 * be deeper; nor can one holding at most `limit` of `[` and `{`, counted
 * with `indexOf` (native search; it stops past `limit`). Only a text with
 * more containers than that is walked character by character (~3 ns per
 * character: about half a `JSON.parse` of the same text).
 */
export function depthOver(text: string, limit: number): number | undefined {
  if (text.length <= 2 * limit) return undefined;
  if (!moreThan(text, limit)) return undefined;
  const depth = jsonDepth(text);
  return depth > limit ? depth : undefined;
}

/** Whether `text` holds more than `limit` of `[` and `{` together (strings included). */
function moreThan(text: string, limit: number): boolean {
  let count = 0;
  for (let i = text.indexOf("["); i >= 0; i = text.indexOf("[", i + 1)) {
    if (++count > limit) return true;
  }
  for (let i = text.indexOf("{"); i >= 0; i = text.indexOf("{", i + 1)) {
    if (++count > limit) return true;
  }
  return false;
}

/**
 * The deepest nesting of arrays and objects in `text` (a top-level array or
 * object is level 1; a scalar is 0), brackets inside strings not counted.
 * Iterative: any depth, no stack. Strings are skipped with `indexOf`, so a
 * body of long strings costs little more than one pass over its quotes.
 * For text that is not JSON the answer is some count of its brackets (the
 * parser refuses such text anyway).
 */
export function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i = stringEnd(text, i);
    } else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > max) max = depth;
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) {
      depth--;
    }
  }
  return max;
}

/** The index of the quote that closes the string opened at `start` (or the text's end). */
export function stringEnd(text: string, start: number): number {
  let i = start;
  for (;;) {
    i = text.indexOf('"', i + 1);
    if (i < 0) return text.length;
    // Escaped when an odd number of backslashes precede it.
    let slashes = 0;
    for (let j = i - 1; text.charCodeAt(j) === BACKSLASH; j--) slashes++;
    if (slashes % 2 === 0) return i;
  }
}

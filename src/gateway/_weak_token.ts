/**
 * Clearly weak tokens, refused where a configuration's tokens are checked
 * (`pyproxy.json`, the flags, the environment, token files, at start, on a
 * reload and at each token file poll): a token of 16 characters such as
 * `aaaaaaaaaaaaaaaa` or `password12345678` was accepted, and a token's id
 * (`tokenId`, shown to plugins, models and in `/metrics` labels) is an
 * unsalted SHA-256 prefix that a guess is tested against offline. Not a
 * strength meter: only what a guesser tries first is counted down (one
 * character repeated, runs such as `12345678` or `abcdef`, a pattern
 * repeated, the commonest password words), so that a random token of any
 * alphabet, and the docs' and tests' examples, pass.
 *
 * @module
 */

/** Fewer estimated bits than this: refused. A random token has 96 or more. */
export const WEAK_TOKEN_BITS = 40;

/**
 * Words guessers try first, lower case (a match costs the guesser about 10
 * bits: a list of a thousand).
 */
const COMMON_WORDS = [
  "password",
  "passw0rd",
  "p@ssw0rd",
  "letmein",
  "qwerty",
  "azerty",
  "asdfgh",
  "iloveyou",
  "welcome",
  "changeme",
  "default",
  "admin",
  "secret",
  "monkey",
  "dragon",
  "master",
  "login",
];

/** What a word of {@linkcode COMMON_WORDS} is worth to a guesser, in bits. */
const WORD_BITS = 10;

/** The size of the alphabet a token's characters seem drawn from. */
function alphabetSize(token: string): number {
  let lower = false, upper = false, digit = false, symbol = false, high = false;
  for (const ch of token) {
    if (ch >= "a" && ch <= "z") lower = true;
    else if (ch >= "A" && ch <= "Z") upper = true;
    else if (ch >= "0" && ch <= "9") digit = true;
    else if (ch.charCodeAt(0) < 0x80) symbol = true;
    else high = true;
  }
  return (lower ? 26 : 0) + (upper ? 26 : 0) + (digit ? 10 : 0) +
    (symbol ? 33 : 0) + (high ? 96 : 0);
}

/**
 * How a guesser's first tries would find `token`: about how many bits they
 * must guess, and what they would use.
 *
 * @example
 * ```ts
 * import { tokenStrength } from "./_weak_token.ts";
 * console.log(tokenStrength("aaaaaaaaaaaaaaaa").bits < 10); // true
 * console.log(tokenStrength("d6f41502211c66ec6238ef3a970604bf").bits > 100); // true
 * ```
 */
export function tokenStrength(
  token: string,
): { bits: number; patterns: string[] } {
  const perChar = Math.log2(Math.max(2, alphabetSize(token)));
  const lower = token.toLowerCase();
  const patterns = new Set<string>();
  // Computed once: asked at each character, the search for a period was
  // quadratic there, cubic in all (a token of 4096 characters such as
  // `abab...abX` took 37 s of the event loop, at start and at each poll).
  const periods = suffixPeriods(token);
  let bits = 0;
  let i = 0;
  while (i < token.length) {
    const word = COMMON_WORDS.find((w) => lower.startsWith(w, i));
    if (word !== undefined) {
      patterns.add("a common password word");
      bits += WORD_BITS;
      i += word.length;
      continue;
    }
    // One character repeated, or a run of consecutive ones (up or down).
    let same = 1;
    while (token[i + same] === token[i]) same++;
    let run = 1;
    const step = token.charCodeAt(i + 1) - token.charCodeAt(i);
    if (step === 1 || step === -1) {
      while (
        i + run < token.length &&
        token.charCodeAt(i + run) - token.charCodeAt(i + run - 1) === step
      ) run++;
    }
    // A short pattern repeated three times or more, then something else
    // (`abab...ab1`, `xyzxyzxyz1234`): its first copy, and how many times,
    // when it goes further than a repeated character or a run. Only one
    // repeated to the end was seen: `ab` 19 times and `1` passed at ~200
    // bits (chaos51).
    const local = localRepeat(token, i);
    if (local !== undefined && local.length > Math.max(same, run)) {
      patterns.add("a pattern repeated");
      bits += tokenStrength(token.slice(i, i + local.period)).bits +
        Math.log2(local.length / local.period);
      i += local.length;
      continue;
    }
    if (same >= 3 && same >= run) {
      patterns.add("a character repeated");
      bits += perChar + Math.log2(same);
      i += same;
      continue;
    }
    if (run >= 3) {
      patterns.add("a run of consecutive characters");
      bits += perChar + Math.log2(run) + 1;
      i += run;
      continue;
    }
    // A pattern repeated to the end (`abcabcabc`, `1212...`): its first
    // copy, and how many times.
    const period = repeatedPeriod(periods, token.length, i);
    if (period !== undefined) {
      patterns.add("a pattern repeated");
      bits += tokenStrength(token.slice(i, i + period)).bits +
        Math.log2((token.length - i) / period);
      break;
    }
    bits += perChar;
    i++;
  }
  return { bits, patterns: [...patterns] };
}

/** The longest period {@linkcode localRepeat} looks for. */
const LOCAL_PERIODS = 16;

/**
 * A pattern of 2 to {@linkcode LOCAL_PERIODS} code units repeated from
 * `from` at least three times (the last copy may be cut short), whatever
 * follows: its period (the smallest) and the length of the repetition. At
 * most `2p` units compared for each period `p` that does not repeat, and
 * a repetition found is skipped by the caller: linear in the token.
 */
function localRepeat(
  token: string,
  from: number,
): { period: number; length: number } | undefined {
  const n = token.length;
  for (let p = 2; p <= LOCAL_PERIODS && from + 3 * p <= n; p++) {
    let j = from + p;
    while (
      j < from + 3 * p && token.charCodeAt(j) === token.charCodeAt(j - p)
    ) {
      j++;
    }
    if (j < from + 3 * p) continue;
    while (j < n && token.charCodeAt(j) === token.charCodeAt(j - p)) j++;
    return { period: p, length: j - from };
  }
  return undefined;
}

/**
 * The smallest period of each suffix of `token` (by its length: `[m]` is
 * that of the last `m` code units), in linear time: the failure function
 * of the reversed token (a string's periods are its reverse's, and its
 * suffixes are the reverse's prefixes).
 */
function suffixPeriods(token: string): Uint32Array {
  const n = token.length;
  const at = (j: number): number => token.charCodeAt(n - 1 - j);
  // border[m]: the longest proper border of the reverse's first m units.
  const border = new Uint32Array(n + 1);
  let k = 0;
  for (let j = 1; j < n; j++) {
    while (k > 0 && at(j) !== at(k)) k = border[k]!;
    if (at(j) === at(k)) k++;
    border[j + 1] = k;
  }
  const periods = new Uint32Array(n + 1);
  for (let m = 1; m <= n; m++) periods[m] = m - border[m]!;
  return periods;
}

/**
 * The period of the token from `from` to its end when it is a pattern of
 * 2 to a third of that length repeated (the last copy may be cut short),
 * from {@linkcode suffixPeriods}: the smallest period of 2 or more (one
 * character repeated has period 2 as well).
 */
function repeatedPeriod(
  periods: Uint32Array,
  length: number,
  from: number,
): number | undefined {
  const rest = length - from;
  const p = Math.max(2, periods[rest]!);
  return p * 3 <= rest ? p : undefined;
}

/**
 * Why `token` is clearly weak (fewer than {@linkcode WEAK_TOKEN_BITS}
 * estimated bits), or `undefined`: never the token itself.
 *
 * @example
 * ```ts
 * import { weakTokenProblem } from "./_weak_token.ts";
 * console.log(weakTokenProblem("password12345678")?.startsWith("a weak token")); // true
 * console.log(weakTokenProblem("4a8e2c7f1b9d3e6a0c5f8b2d7e1a4c9f")); // undefined
 * ```
 */
export function weakTokenProblem(token: string): string | undefined {
  const { bits, patterns } = tokenStrength(token);
  if (bits >= WEAK_TOKEN_BITS) return undefined;
  return `a weak token (about ${
    Math.floor(bits)
  } bits, where a random one has 128 or more${
    patterns.length === 0 ? "" : `: ${patterns.join(", ")}`
  }): make one with 'openssl rand -base64 32' (or 'openssl rand -hex 32')`;
}

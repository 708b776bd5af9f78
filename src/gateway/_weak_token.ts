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
    const period = repeatedPeriod(token, i);
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

/**
 * The period of `token` from `from` to its end when it is a pattern of 2
 * to a third of that length repeated (the last copy may be cut short).
 */
function repeatedPeriod(token: string, from: number): number | undefined {
  const length = token.length - from;
  for (let p = 2; p * 3 <= length; p++) {
    let repeats = true;
    for (let k = from + p; k < token.length; k++) {
      if (token[k] !== token[k - p]) {
        repeats = false;
        break;
      }
    }
    if (repeats) return p;
  }
  return undefined;
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

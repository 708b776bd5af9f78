/**
 * The `pattern` of a declared string input: a small regular expression
 * subset, matched in linear time.
 *
 * A pattern is the model author's, the string the client's: run by a
 * backtracking engine (V8's, Python's `re`), `(a+)+$` or `a*a*a*b` makes a
 * few thousand characters cost seconds of the gateway's only thread. Here a
 * pattern compiles to a Thompson automaton, simulated one character at a
 * time: a check costs at most the string's length × the automaton's size
 * ({@linkcode MAX_PATTERN_STATES}), whatever the pattern.
 *
 * The subset (the Python server's `pyproxy_server/declared.py` accepts the
 * same, refusing anything else when the model loads): literal characters;
 * `.` (any character but a line terminator); `[...]` and `[^...]` with
 * ranges; `\d`, `\w`, `\s` and their negations (ASCII digits and word
 * characters, JavaScript's white space); `\n`, `\r`, `\t`, `\f`, `\v`,
 * `\uXXXX`, `\xXX` and escaped syntax characters; groups `(...)` and
 * `(?:...)`; `|`; quantifiers `*`, `+`, `?`, `{n}`, `{n,}`, `{n,m}` (n, m at
 * most 1000), lazy or not (the same match or no match); anchors `^` and `$`
 * (the string's start and end). A pattern matches anywhere in the string
 * (JSON Schema's rule): anchor it to match all of it. Backreferences,
 * lookaround, word boundaries, named groups, flags and Unicode property
 * escapes are refused.
 *
 * @module
 */

/** The longest pattern, in characters. */
export const MAX_PATTERN_LENGTH = 1000;
/** The largest automaton a pattern may compile to (counted repeats copied). */
export const MAX_PATTERN_STATES = 2000;
/** The largest `n` or `m` of `{n,m}`. */
const MAX_REPEAT = 1000;
/** Groups inside groups, at most (as the Python server, whose stack is smaller). */
const MAX_GROUP_DEPTH = 100;

/** A set of code points: inclusive ranges, maybe negated. */
interface CharSet {
  ranges: Array<[number, number]>;
  negated: boolean;
}

type Node =
  | { kind: "set"; set: CharSet }
  | { kind: "start" }
  | { kind: "end" }
  | { kind: "seq"; items: Node[] }
  | { kind: "alt"; options: Node[] }
  | { kind: "repeat"; node: Node; min: number; max: number }; // max -1: no limit

const DIGIT: Array<[number, number]> = [[0x30, 0x39]];
const WORD: Array<[number, number]> = [
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x5f, 0x5f],
  [0x61, 0x7a],
];
// JavaScript's \s: WhiteSpace and LineTerminator.
const SPACE: Array<[number, number]> = [
  [0x09, 0x0d],
  [0x20, 0x20],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
  [0xfeff, 0xfeff],
];
const LINE_TERMINATORS: Array<[number, number]> = [
  [0x0a, 0x0a],
  [0x0d, 0x0d],
  [0x2028, 0x2029],
];
const SYNTAX = "^$\\.*+?()[]{}|/-";
const CONTROL: Record<string, number> = {
  n: 0x0a,
  r: 0x0d,
  t: 0x09,
  f: 0x0c,
  v: 0x0b,
};
const CLASS_ESCAPES: Record<string, CharSet> = {
  d: { ranges: DIGIT, negated: false },
  D: { ranges: DIGIT, negated: true },
  w: { ranges: WORD, negated: false },
  W: { ranges: WORD, negated: true },
  s: { ranges: SPACE, negated: false },
  S: { ranges: SPACE, negated: true },
};

/** A pattern outside the subset; the message says what and where. */
export class PatternSyntaxError extends SyntaxError {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "PatternSyntaxError";
  }
}

class Parser {
  #chars: string[];
  #i = 0;
  #depth = 0;
  constructor(source: string) {
    this.#chars = [...source];
  }
  #fail(what: string): never {
    throw new PatternSyntaxError(`${what} at character ${this.#i + 1}`);
  }
  #peek(): string | undefined {
    return this.#chars[this.#i];
  }
  parse(): Node {
    const node = this.#alt();
    if (this.#i < this.#chars.length) this.#fail("unmatched ')'");
    return node;
  }
  #alt(): Node {
    const options = [this.#seq()];
    while (this.#peek() === "|") {
      this.#i++;
      options.push(this.#seq());
    }
    return options.length === 1 ? options[0]! : { kind: "alt", options };
  }
  #seq(): Node {
    const items: Node[] = [];
    for (;;) {
      const c = this.#peek();
      if (c === undefined || c === "|" || c === ")") break;
      // A bare anchor cannot be repeated; a group of one can (`(^)*`, as
      // the Python server and RegExp read it).
      const anchor = c === "^" || c === "$";
      let atom = this.#atom();
      const q = this.#quantifier();
      if (q !== null) {
        if (anchor) {
          this.#fail("a quantifier after an anchor");
        }
        atom = { kind: "repeat", node: atom, min: q[0], max: q[1] };
      }
      items.push(atom);
    }
    return items.length === 1 ? items[0]! : { kind: "seq", items };
  }
  #number(): number | null {
    let digits = "";
    while (/[0-9]/.test(this.#peek() ?? "")) digits += this.#chars[this.#i++];
    if (digits === "") return null;
    const n = Number(digits);
    if (n > MAX_REPEAT) this.#fail(`a repeat count above ${MAX_REPEAT}`);
    return n;
  }
  #quantifier(): [number, number] | null {
    const c = this.#peek();
    let q: [number, number];
    if (c === "*") q = [0, -1];
    else if (c === "+") q = [1, -1];
    else if (c === "?") q = [0, 1];
    else if (c === "{") {
      this.#i++;
      const min = this.#number();
      if (min === null) this.#fail("'{' that starts no {n,m} quantifier");
      let max = min;
      if (this.#peek() === ",") {
        this.#i++;
        max = this.#number() ?? -1;
      }
      if (this.#peek() !== "}") this.#fail("an unclosed {n,m} quantifier");
      if (max !== -1 && max < min) this.#fail("a {n,m} quantifier with m < n");
      q = [min, max];
    } else return null;
    this.#i++;
    if (this.#peek() === "?") this.#i++; // lazy: the same match or no match
    const next = this.#peek();
    if (next === "*" || next === "+" || next === "?" || next === "{") {
      this.#fail("a quantifier after a quantifier");
    }
    return q;
  }
  #atom(): Node {
    const c = this.#chars[this.#i]!;
    if (c === "(") {
      this.#i++;
      if (this.#peek() === "?") {
        if (this.#chars[this.#i + 1] !== ":") {
          this.#fail(
            "lookaround, named groups and flags are not supported: '(?'",
          );
        }
        this.#i += 2;
      }
      if (++this.#depth > MAX_GROUP_DEPTH) {
        this.#fail(`groups nested deeper than ${MAX_GROUP_DEPTH}`);
      }
      const inner = this.#alt();
      this.#depth--;
      if (this.#peek() !== ")") this.#fail("an unclosed group");
      this.#i++;
      return inner;
    }
    if (c === "[") return { kind: "set", set: this.#class() };
    this.#i++;
    if (c === ".") {
      return { kind: "set", set: { ranges: LINE_TERMINATORS, negated: true } };
    }
    if (c === "^") return { kind: "start" };
    if (c === "$") return { kind: "end" };
    if (c === "\\") {
      const e = this.#escape(false);
      return { kind: "set", set: e };
    }
    if ("*+?{".includes(c)) {
      this.#i--;
      this.#fail(`a quantifier '${c}' with nothing to repeat`);
    }
    if (c === "]" || c === "}") {
      this.#i--;
      this.#fail(`an unescaped '${c}'`);
    }
    const cp = c.codePointAt(0)!;
    return { kind: "set", set: { ranges: [[cp, cp]], negated: false } };
  }
  /** After a backslash: a class escape's set, or one character's. */
  #escape(inClass: boolean): CharSet {
    const c = this.#peek();
    if (c === undefined) this.#fail("a pattern that ends with '\\'");
    this.#i++;
    const cls = CLASS_ESCAPES[c];
    if (cls !== undefined) return cls;
    const one = (cp: number): CharSet => ({
      ranges: [[cp, cp]],
      negated: false,
    });
    if (Object.hasOwn(CONTROL, c)) return one(CONTROL[c]!);
    if (SYNTAX.includes(c)) return one(c.codePointAt(0)!);
    if (c === "u" || c === "x") {
      const n = c === "u" ? 4 : 2;
      const hex = this.#chars.slice(this.#i, this.#i + n).join("");
      if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) {
        this.#fail(`'\\${c}' without ${n} hex digits`);
      }
      this.#i += n;
      const cp = parseInt(hex, 16);
      // \uD83D\uDE00 is one character, as RegExp's u flag reads it.
      const low = this.#chars.slice(this.#i + 2, this.#i + 6).join("");
      if (
        cp >= 0xd800 && cp <= 0xdbff && this.#chars[this.#i] === "\\" &&
        this.#chars[this.#i + 1] === "u" &&
        /^[dD][c-fC-F][0-9a-fA-F]{2}$/.test(low)
      ) {
        this.#i += 6;
        return one(
          0x10000 + ((cp - 0xd800) << 10) + (parseInt(low, 16) - 0xdc00),
        );
      }
      return one(cp);
    }
    this.#i--;
    this.#fail(
      `an unsupported escape '\\${c}'${
        inClass ? "" : " (backreferences, \\b and \\p are not supported)"
      }`,
    );
  }
  #class(): CharSet {
    const start = this.#i;
    this.#i++; // [
    const negated = this.#peek() === "^";
    if (negated) this.#i++;
    const ranges: Array<[number, number]> = [];
    let complement: CharSet[] = [];
    let first = true;
    for (;;) {
      const c = this.#peek();
      if (c === undefined) {
        this.#i = start;
        this.#fail("an unclosed '['");
      }
      if (c === "]") {
        if (first) this.#fail("an empty class '[]'");
        this.#i++;
        break;
      }
      first = false;
      const lo = this.#classAtom();
      if (
        this.#peek() === "-" && this.#chars[this.#i + 1] !== "]" &&
        this.#chars[this.#i + 1] !== undefined
      ) {
        this.#i++;
        const hi = this.#classAtom();
        if (typeof lo !== "number" || typeof hi !== "number") {
          this.#fail("a range with a class escape as an end");
        }
        if (hi < lo) this.#fail("a range out of order");
        ranges.push([lo, hi]);
      } else if (typeof lo === "number") ranges.push([lo, lo]);
      else if (lo.negated) complement = [...complement, lo];
      else ranges.push(...lo.ranges);
    }
    if (complement.length === 0) return { ranges, negated };
    // [\D\s]: what is in a range, or outside a negated escape's ranges.
    // Written as the complement of "not in any range and in every negated
    // escape's ranges": computed once here, at compile time.
    return unionWithComplements(ranges, complement, negated);
  }
  #classAtom(): number | CharSet {
    const c = this.#chars[this.#i++]!;
    if (c === "\\") {
      const e = this.#escape(true);
      if (
        e.negated || e.ranges.length !== 1 ||
        e.ranges[0]![0] !== e.ranges[0]![1]
      ) {
        return e;
      }
      return e.ranges[0]![0];
    }
    if (c === "[") this.#fail("an unescaped '[' in a class");
    return c.codePointAt(0)!;
  }
}

/** Sorted, merged copy of `ranges`. */
function normalize(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && lo <= last[1] + 1) {
      last[1] = Math.max(last[1], hi);
    } else out.push([lo, hi]);
  }
  return out;
}

/** `ranges` ∪ the complement of each of `negatedSets`, itself maybe negated. */
function unionWithComplements(
  ranges: Array<[number, number]>,
  negatedSets: CharSet[],
  negated: boolean,
): CharSet {
  const all: Array<[number, number]> = [...ranges];
  for (const set of negatedSets) {
    let next = 0;
    for (const [lo, hi] of normalize(set.ranges)) {
      if (lo > next) all.push([next, lo - 1]);
      next = hi + 1;
    }
    if (next <= 0x10ffff) all.push([next, 0x10ffff]);
  }
  return { ranges: normalize(all), negated };
}

function inSet(set: CharSet, cp: number): boolean {
  let found = false;
  for (const [lo, hi] of set.ranges) {
    if (cp >= lo && cp <= hi) {
      found = true;
      break;
    }
  }
  return found !== set.negated;
}

/** States `node` compiles to, without compiling it. */
function size(node: Node): number {
  switch (node.kind) {
    case "set":
    case "start":
    case "end":
      return 1;
    case "seq":
      return node.items.reduce((n, item) => n + size(item), 0);
    case "alt":
      // A fork and a jump for each option but the last.
      return node.options.reduce((n, o) => n + size(o) + 2, -2);
    case "repeat": {
      const one = size(node.node);
      // The required copies; then a loop (fork, copy, jump) or a fork and
      // a copy for each optional one.
      return node.min * one +
        (node.max === -1 ? one + 2 : (node.max - node.min) * (one + 1));
    }
  }
}

// Instructions: a character test, a fork, a jump, an anchor, the match.
const SET = 0, SPLIT = 1, JMP = 2, START = 3, END = 4, MATCH = 5;

interface Program {
  op: number[];
  x: number[];
  y: number[];
  sets: Array<CharSet | undefined>;
  /** Per state, 4 words: which ASCII characters its set holds (most tests). */
  ascii: Uint32Array;
  /** The simulation's buffers, made at the first test. */
  buffers?: {
    a: Int32Array;
    b: Int32Array;
    seen: Int32Array;
    stack: Int32Array;
  };
}

function emit(p: Program, op: number, set?: CharSet): number {
  p.op.push(op);
  p.x.push(-1);
  p.y.push(-1);
  p.sets.push(set);
  return p.op.length - 1;
}

function compile(p: Program, node: Node): void {
  switch (node.kind) {
    case "set":
      emit(p, SET, node.set);
      return;
    case "start":
      emit(p, START);
      return;
    case "end":
      emit(p, END);
      return;
    case "seq":
      for (const item of node.items) compile(p, item);
      return;
    case "alt": {
      const jumps: number[] = [];
      node.options.forEach((option, i) => {
        if (i < node.options.length - 1) {
          const split = emit(p, SPLIT);
          p.x[split] = split + 1;
          compile(p, option);
          jumps.push(emit(p, JMP));
          p.y[split] = p.op.length;
        } else compile(p, option);
      });
      for (const j of jumps) p.x[j] = p.op.length;
      return;
    }
    case "repeat": {
      for (let i = 0; i < node.min; i++) compile(p, node.node);
      if (node.max === -1) {
        // L: split body, out; body; jmp L
        const split = emit(p, SPLIT);
        p.x[split] = split + 1;
        compile(p, node.node);
        const jmp = emit(p, JMP);
        p.x[jmp] = split;
        p.y[split] = p.op.length;
      } else {
        // Each optional copy may stop the repeat: split copy, out.
        const splits: number[] = [];
        for (let i = node.min; i < node.max; i++) {
          const split = emit(p, SPLIT);
          p.x[split] = split + 1;
          splits.push(split);
          compile(p, node.node);
        }
        for (const s of splits) p.y[s] = p.op.length;
      }
      return;
    }
  }
}

/** What {@linkcode CompiledPattern.testWithin} may still spend. */
export interface Budget {
  /** Automaton steps left. */
  steps: number;
}

/**
 * A compiled pattern: {@linkcode CompiledPattern.test} tells whether it
 * matches somewhere in a string, in time linear in the string's length.
 *
 * @example
 * ```ts
 * import { compilePattern } from "./_pattern.ts";
 * const p = compilePattern("^[a-z]+(-[a-z]+)*$");
 * console.log(p.test("red-green"), p.test("Red")); // true false
 * ```
 */
export interface CompiledPattern {
  /** Whether the pattern matches somewhere in `s`. */
  test(s: string): boolean;
  /**
   * The automaton's size: a test costs at most this many steps a
   * character.
   */
  readonly states: number;
  /**
   * {@linkcode CompiledPattern.test} within `budget.steps` automaton steps
   * (a thread on a character, or a move without one), which it lowers by
   * the steps taken: `undefined` when they ran out first.
   */
  testWithin(s: string, budget: Budget): boolean | undefined;
  /**
   * A string the pattern matches, for examples: the first option of each
   * `|`, each repeat `extra` more times than its least (within its most);
   * cut short past 10,000 characters (longer ones fail a pattern anyway).
   */
  sample(extra?: number): string;
}

// Characters tried first for a set's sample, before any other.
const SAMPLE_CHARS = [..."axA0_ -."].map((c) => c.codePointAt(0)!);

function sampleChar(set: CharSet): string {
  for (const cp of SAMPLE_CHARS) {
    if (inSet(set, cp)) return String.fromCodePoint(cp);
  }
  if (!set.negated && set.ranges[0] !== undefined) {
    return String.fromCodePoint(set.ranges[0][0]);
  }
  for (let cp = 0x21; cp <= 0xffff; cp++) {
    if (inSet(set, cp)) return String.fromCodePoint(cp);
  }
  return "";
}

/**
 * The longest a sample grows (about): the gateway checks patterns on
 * strings of at most 10,000 characters, and `((a+)+)+...` repeated twice
 * at each level would double at each.
 */
const SAMPLE_MAX = 10_001;

function sample(node: Node, extra: number): string {
  switch (node.kind) {
    case "set":
      return sampleChar(node.set);
    case "start":
    case "end":
      return "";
    case "seq": {
      let out = "";
      for (const item of node.items) {
        out += sample(item, extra);
        if (out.length >= SAMPLE_MAX) break;
      }
      return out;
    }
    case "alt":
      return sample(node.options[0]!, extra);
    case "repeat": {
      const copies = node.max === -1
        ? node.min + extra
        : Math.min(node.max, node.min + extra);
      const one = sample(node.node, extra);
      if (one.length === 0) return "";
      return one.repeat(Math.min(copies, Math.ceil(SAMPLE_MAX / one.length)));
    }
  }
}

/**
 * Compiles `source` (the subset this module describes) or throws
 * {@linkcode PatternSyntaxError} saying what is outside it.
 */
export function compilePattern(source: string): CompiledPattern {
  if ([...source].length > MAX_PATTERN_LENGTH) {
    throw new PatternSyntaxError(
      `a pattern longer than ${MAX_PATTERN_LENGTH} characters`,
    );
  }
  const tree = new Parser(source).parse();
  if (size(tree) > MAX_PATTERN_STATES) {
    throw new PatternSyntaxError(
      `a pattern of more than ${MAX_PATTERN_STATES} states (counted repeats are copied)`,
    );
  }
  const p: Program = {
    op: [],
    x: [],
    y: [],
    sets: [],
    ascii: new Uint32Array(0),
  };
  compile(p, tree);
  emit(p, MATCH);
  p.ascii = new Uint32Array(p.op.length * 4);
  p.sets.forEach((set, pc) => {
    if (set === undefined) return;
    for (let cp = 0; cp < 128; cp++) {
      if (inSet(set, cp)) p.ascii[pc * 4 + (cp >> 5)]! |= 1 << (cp & 31);
    }
  });
  return {
    states: p.op.length,
    test: (s) => run(p, s, { steps: Infinity })!,
    testWithin: (s, budget) => run(p, s, budget),
    sample: (extra = 0) => sample(tree, extra),
  };
}

/**
 * Pike's simulation: every thread advances together, one step a character.
 * The buffers are the program's, reused: a test runs to its end without
 * yielding, so two never share them.
 */
function run(p: Program, s: string, budget: Budget): boolean | undefined {
  const op = p.op, x = p.x, y = p.y, ascii = p.ascii, sets = p.sets;
  const n = op.length;
  if (p.buffers === undefined) {
    p.buffers = {
      a: new Int32Array(n),
      b: new Int32Array(n),
      seen: new Int32Array(n),
      stack: new Int32Array(n * 2 + 2),
    };
  }
  const { stack, seen } = p.buffers;
  let current = p.buffers.a;
  let next = p.buffers.b;
  seen.fill(-1);
  let count = 0;
  let nextCount = 0;
  let generation = 0;
  const len = s.length;
  let left = budget.steps;
  // Adds the states reached from `pc0` without a character to `next`.
  // Inlined below as a loop on `stack`; `atStart`/`atEnd` decide anchors.
  let top = 0;
  let atStart = true;
  let atEnd = len === 0;
  stack[top++] = 0;
  for (let i = 0;;) {
    // The closure of the stack's states, into `next`.
    while (top > 0) {
      const pc = stack[--top]!;
      left--;
      if (seen[pc] === generation) continue;
      seen[pc] = generation;
      switch (op[pc]) {
        case SET:
          next[nextCount++] = pc;
          break;
        case SPLIT:
          stack[top++] = y[pc]!;
          stack[top++] = x[pc]!;
          break;
        case JMP:
          stack[top++] = x[pc]!;
          break;
        case START:
          if (atStart) stack[top++] = pc + 1;
          break;
        case END:
          if (atEnd) stack[top++] = pc + 1;
          break;
        case MATCH:
          budget.steps = left;
          return true;
      }
    }
    if (left < 0 || (left -= count) < 0) {
      budget.steps = 0;
      return undefined;
    }
    if (i >= len) {
      budget.steps = left;
      return false;
    }
    [current, next] = [next, current];
    count = nextCount;
    nextCount = 0;
    const cp = s.codePointAt(i)!;
    i += cp > 0xffff ? 2 : 1;
    generation++;
    atStart = false;
    atEnd = i >= len;
    for (let t = 0; t < count; t++) {
      const pc = current[t]!;
      const hit = cp < 128
        ? (ascii[pc * 4 + (cp >> 5)]! & (1 << (cp & 31))) !== 0
        : inSet(sets[pc]!, cp);
      if (hit) {
        stack[top++] = pc + 1;
        // Closed one at a time: each state's closure in thread order.
        while (top > 0) {
          const q = stack[--top]!;
          left--;
          if (seen[q] === generation) continue;
          seen[q] = generation;
          switch (op[q]) {
            case SET:
              next[nextCount++] = q;
              break;
            case SPLIT:
              stack[top++] = y[q]!;
              stack[top++] = x[q]!;
              break;
            case JMP:
              stack[top++] = x[q]!;
              break;
            case END:
              if (atEnd) stack[top++] = q + 1;
              break;
            case MATCH:
              budget.steps = left;
              return true;
          }
        }
      }
    }
    // A match may start at any position (JSON Schema's rule).
    stack[top++] = 0;
  }
}

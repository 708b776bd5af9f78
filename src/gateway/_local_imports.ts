/**
 * The local files a plugin module imports, found before it is imported, so
 * that each is checked as the module is: a relative import from a
 * directory another user can write ran their code with the gateway's
 * permissions, though the module itself passed. Found statically, in the
 * text: string-literal specifiers, string-literal URLs of the module's own
 * location (`new URL("./w.ts", import.meta.url)`), the `package.json`
 * of an imported directory with the files it names, and the local files
 * that bare names resolve to (an import map's `"@lib/": "./lib/"`, a
 * `package.json`'s `imports`; packages' caches left out); a specifier or
 * URL computed at run time is not seen (docs/security.md).
 *
 * @module
 */
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Runtime } from "../runtime/types.ts";
import { untrustedThroughLinks } from "./_untrusted_path.ts";

/**
 * What may stand between two parts of an import or a URL as a formatter or
 * an author writes them: whitespace and comments (a block comment of up to
 * 1024 characters, as `import(/* @vite-ignore *\/ "./x.ts")`; a line
 * comment), taken as a whole (an atomic group: a lookahead's capture, named
 * `name`), so that a long run of spaces is not tried split every way. Only
 * whitespace was: `import(/* ... *\/ "./lib/x.ts")` loaded that file
 * unchecked (chaos51).
 */
function gap(name: string): string {
  return String
    .raw`(?=(?<${name}>(?:\s|/\*(?:[^*]|\*(?!/)){0,1024}\*/|//[^\n]{0,1024}\n)*))\k<${name}>`;
}

/**
 * The end of a call's arguments: `)`, after a trailing comma too, as deno
 * fmt (and Prettier) write a call over several lines. Without it, `new
 * URL(\n  "./lib/w.ts",\n  import.meta.url,\n)` (deno fmt's form of a long
 * one) was not seen, and a file it imported from a directory every user
 * could write ran their code unchecked (chaos51).
 */
function end(name: string): string {
  return String.raw`${gap(`${name}a`)}(?:,${gap(`${name}b`)})?\)`;
}

/**
 * A specifier in an `import`/`export ... from`, a side-effect `import`, an
 * `import()` or a `require()` of a string literal (a template literal
 * without a substitution too: `` import(`./lib/x.ts`) `` loads that file
 * as `import("./lib/x.ts")` does). Read from the text as it
 * is, comments and strings included: one in a comment is checked too
 * (more, never less), and a specifier computed at run time is not seen.
 * `import type` statements are left out (erased).
 */
const SPECIFIER = new RegExp(
  String.raw`\b(?:from|import|require)${gap("g1")}\(?${
    gap("g2")
  }(?<quote>['"\x60])(?<specifier>[^'"\x60\n\r]{1,4096})\k<quote>`,
  "g",
);

/**
 * A URL a module makes of its own location from a string literal: `new
 * URL("./worker.ts", import.meta.url)` (a worker's, a dynamic import's, a
 * file it reads: `Deno.readTextFile(new URL("./conf.json",
 * import.meta.url))`) or `import.meta.resolve("./x.ts")`. Any literal, not
 * only `./`: `new URL("conf.json", import.meta.url)` is the file beside it
 * too. A computed first argument is not seen.
 */
const OWN_URL = new RegExp(
  String.raw`\b(?:new\s+URL${gap("u1")}\(${
    gap("u2")
  }(?<urlQuote>['"\x60])(?<url>[^'"\x60\n\r]{1,4096})\k<urlQuote>${gap("u3")},${
    gap("u4")
  }import\.meta\.url${end("u5")}|import\.meta\.resolve${gap("r1")}\(${
    gap("r2")
  }(?<resolveQuote>['"\x60])(?<resolved>[^'"\x60\n\r]{1,4096})\k<resolveQuote>${
    end("r3")
  })`,
  "g",
);

/** A specifier of a local file: relative, absolute, or a `file:` URL. */
const LOCAL = /^(?:\.{1,2}\/|\/|file:)/i;

/**
 * A bare name (`@lib/x.ts`, `#lib/x`, `hono/cors`): no scheme (`npm:`,
 * `jsr:`, `node:`), no space; not the prose of a comment's `from "..."`.
 */
const BARE = /^[@#\w][\w@#./+~-]*$/;

/**
 * A path in a package cache: a `node_modules` directory, or Deno's npm
 * cache (`<DENO_DIR>/npm/<registry host>/`). A bare name resolved there is
 * a package's, as `npm:` specifiers are: not followed.
 */
const PACKAGE_CACHE = /\/node_modules\/|\/npm\/[^/]+\.[^/]+\//;

/** The files whose imports are read: JavaScript and TypeScript. */
const CODE = /\.(?:[cm]?[jt]s|[jt]sx)$/i;

/**
 * The most files followed from one module (a deep tree of its own); past
 * it the module is refused, not taken unchecked (it was, chaos48: a
 * 10 000-file graph passed with its last import in a directory every user
 * could write).
 */
const MAX_FILES = 10_000;

/** The largest file whose imports are read (a bundle with room to spare); a larger one is refused. */
const MAX_BYTES = 16 * 1024 * 1024;

/** Limits of {@linkcode untrustedImport} (tests). */
export interface UntrustedImportLimits {
  /** Files followed at most. @default {10000} */
  maxFiles?: number;
  /** The largest file whose imports are read, in bytes. @default {16 MiB} */
  maxBytes?: number;
}

/**
 * Thrown by {@linkcode untrustedImport} when a module's local imports
 * could not all be checked (more than 10 000 files, or one larger than
 * 16 MiB): refused rather than loaded unchecked.
 */
export class ImportsNotCheckedError extends Error {
  override name = "ImportsNotCheckedError";
  /** Stable, for programs. */
  readonly code = "IMPORTS_NOT_CHECKED";
}

/**
 * The local specifiers of `text` (a module's source), resolved against
 * `url` (its `file:` URL), as file paths; those that are not file paths
 * once resolved are left out. Bare names too, with `resolveBare` (the
 * runtime's `resolveImport`), when they resolve to a file outside a
 * package cache. With the string-literal URLs it makes of its
 * own location ({@linkcode OWN_URL}: a worker, a dynamic import, a file it
 * reads).
 *
 * @example
 * ```ts ignore
 * localImports('import { x } from "./lib/x.ts";', "file:///srv/plugin.ts");
 * // ["/srv/lib/x.ts"]
 * ```
 */
export function localImports(
  text: string,
  url: string,
  resolveBare?: (specifier: string, referrer: string) => string | undefined,
): string[] {
  const out = new Set<string>();
  const add = (specifier: string) => {
    try {
      const resolved = new URL(specifier, url);
      if (resolved.protocol === "file:") out.add(fileURLToPath(resolved));
    } catch {
      // Not a URL once resolved: the import's own error says so.
    }
  };
  for (const match of text.matchAll(SPECIFIER)) {
    const specifier = match.groups!.specifier!;
    if (
      typeOnly(text, match.index) ||
      (match.groups!.quote === "`" && specifier.includes("${"))
    ) continue;
    if (LOCAL.test(specifier)) add(specifier);
    else if (resolveBare !== undefined && BARE.test(specifier)) {
      // A bare name that an import map (`"@lib/": "./lib/"`) or a
      // package.json's `imports` (`"#lib/*": "./lib/*"`) maps to local
      // files loads one of them: such an import from a directory every
      // user could write was loaded unchecked (chaos49).
      const resolved = resolveBare(specifier, url);
      if (resolved !== undefined && !PACKAGE_CACHE.test(resolved)) {
        add(resolved);
      }
    }
  }
  // URLs of its own location (security27): a worker, a dynamic import of
  // one, a file it reads. `new URL`'s bare names too (relative there).
  for (const match of text.matchAll(OWN_URL)) {
    const { urlQuote, url, resolveQuote, resolved } = match.groups!;
    const quote = urlQuote ?? resolveQuote!;
    const specifier = url ?? resolved!;
    if (quote === "`" && specifier.includes("${")) continue;
    // `import.meta.resolve` of a bare name is an import map's.
    if (resolved !== undefined && !LOCAL.test(specifier)) continue;
    add(specifier);
  }
  return [...out];
}

/** What Bun (and Deno's sloppy imports) add to a specifier without its file's extension. */
const EXTENSIONS = [
  ".tsx",
  ".ts",
  ".jsx",
  ".js",
  ".mjs",
  ".cjs",
  ".mts",
  ".cts",
];

/** A `.js`-family specifier that Bun resolves to its TypeScript file when that is where it is. */
const JS_TO_TS: Record<string, string[]> = {
  ".js": [".ts", ".tsx"],
  ".jsx": [".tsx"],
  ".mjs": [".mts"],
  ".cjs": [".cts"],
};

/**
 * The files an import of `path` may load, beyond `path` itself: Bun
 * resolves `./lib/helper` to `./lib/helper.ts` (or `.tsx`, `.js`...),
 * `./lib` to `./lib/index.ts` and `./h.js` to `./h.ts` when that is what
 * is there; the check looked at `path` only (not found: passed over), so
 * such an import from a directory every user could write was loaded
 * unchecked on Bun (chaos48). Each one there is checked (more, never
 * less).
 */
function alternatives(path: string): string[] {
  const out = EXTENSIONS.map((ext) => path + ext);
  const dot = path.lastIndexOf(".");
  const ext = dot > path.lastIndexOf("/") ? path.slice(dot).toLowerCase() : "";
  for (const ts of JS_TO_TS[ext] ?? []) out.push(path.slice(0, dot) + ts);
  for (const ext of EXTENSIONS) out.push(`${path}/index${ext}`);
  return out;
}

/**
 * The `package.json` of `dir` (a directory a module imports) and the files
 * it names for Bun to load, each with {@linkcode alternatives}: Bun loads
 * `import "./pkg"` from the file its `main` names (`./impl` as
 * `./impl.ts`...), before `index.ts`; that file, and the `package.json`
 * that picks it, were not checked (security27). Its `module` and every
 * `./` path of `exports` are taken too (more, never less: a runtime or a
 * version that reads them). `[]` without a `package.json`; the
 * `package.json` alone when it is not JSON (Bun's import fails). Throws an
 * {@linkcode ImportsNotCheckedError} when it is larger than `maxBytes`.
 */
async function packageEntries(
  runtime: Runtime,
  dir: string,
  maxBytes: number,
): Promise<string[]> {
  const manifest = `${dir}/package.json`;
  const info = await runtime.stat(manifest).catch(() => null);
  if (info === null || !info.isFile) return [];
  if (info.size > maxBytes) {
    throw new ImportsNotCheckedError(
      `${manifest} is larger than ${maxBytes} bytes: the files it names are not read, so not checked`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(
      new TextDecoder().decode(await runtime.readFile(manifest)),
    );
  } catch {
    return [manifest];
  }
  const named = new Set<string>();
  const take = (value: unknown, depth: number): void => {
    if (typeof value === "string") {
      if (/^\.{1,2}\//.test(value) && !value.includes("*")) named.add(value);
    } else if (typeof value === "object" && value !== null && depth < 8) {
      for (const v of Object.values(value)) take(v, depth + 1);
    }
  };
  if (typeof json === "object" && json !== null) {
    const { main, module, exports } = json as Record<string, unknown>;
    // `main` without `./` is relative too (`"main": "index.js"`).
    for (const entry of [main, module]) {
      if (typeof entry === "string" && entry !== "") {
        named.add(/^\.{1,2}\//.test(entry) ? entry : `./${entry}`);
      }
    }
    take(exports, 0);
  }
  const out = [manifest];
  for (const entry of named) {
    const path = fileURLToPath(new URL(entry, pathToFileURL(`${dir}/`)));
    out.push(path, ...alternatives(path));
  }
  return out;
}

/**
 * Whether the `from` at `at` ends an `import type`/`export type`
 * statement, which the runtime erases (no code of it runs: a plugin's
 * `import type { Plugin } from "../src/plugin.ts"` loads nothing).
 */
function typeOnly(text: string, at: number): boolean {
  if (!text.startsWith("from", at)) return false;
  const start = Math.max(
    text.lastIndexOf("import", at),
    text.lastIndexOf("export", at),
  );
  return start >= 0 && /^(?:import|export)\s+type\s/.test(text.slice(start));
}

/**
 * Why a local file that the module at `real` (a real path, checked
 * already) imports, directly or through others, could be written or
 * replaced by another user (`untrustedThroughLinks`), naming it; or
 * `undefined`. A file that is not there is passed over (the import says
 * so); `npm:`, `jsr:` and bare names resolved into a package cache are
 * the runtime's cache's, not followed; a bare name the runtime resolves
 * to a local file (an import map's, a `package.json`'s `imports`) is. Throws an {@linkcode ImportsNotCheckedError} when
 * they cannot all be checked.
 *
 * @example
 * ```ts ignore
 * const why = await untrustedImport(runtime, "/srv/pyproxy/audit.ts");
 * if (why !== undefined) throw new ConfigError(`Cannot load it: ${why}`);
 * ```
 */
export async function untrustedImport(
  runtime: Runtime,
  real: string,
  { maxFiles = MAX_FILES, maxBytes = MAX_BYTES }: UntrustedImportLimits = {},
): Promise<string | undefined> {
  const seen = new Set([real]);
  const todo = [real];
  for (let file = todo.pop(); file !== undefined; file = todo.pop()) {
    if (!CODE.test(file)) continue;
    const info = await runtime.stat(file);
    if (info === null || !info.isFile) continue;
    if (info.size > maxBytes) {
      throw new ImportsNotCheckedError(
        `${file} is larger than ${
          maxBytes % (1 << 20) === 0
            ? `${maxBytes >> 20} MiB`
            : `${maxBytes} bytes`
        }: its imports are not read, so not checked`,
      );
    }
    const text = new TextDecoder().decode(await runtime.readFile(file));
    const imports = localImports(
      text,
      pathToFileURL(file).href,
      runtime.resolveImport?.bind(runtime),
    );
    for (const imported of imports) {
      // The path as written, and when it names no file (missing, or a
      // directory), those Bun would load for it.
      const info = await runtime.stat(imported).catch(() => null);
      const paths = info?.isFile ? [imported] : [
        ...(info === null ? [] : [imported]),
        ...(info?.isDirectory
          ? await packageEntries(runtime, imported, maxBytes)
          : []),
        ...alternatives(imported),
      ];
      for (const path of paths) {
        const target = await runtime.realPath(path).catch(() => null);
        if (target === null || seen.has(target)) continue;
        const why = await untrustedThroughLinks(runtime, path, target);
        if (why !== undefined) {
          // A file it reads (a `new URL`'s JSON, a package.json) is used.
          return `it ${
            CODE.test(path) ? "imports" : "uses"
          } ${path} (from ${file}): ${
            why.replace(
              /\bits directory\b|\bit\b/,
              (w) => w === "it" ? "that file" : "that file's directory",
            )
          }`;
        }
        if (seen.size >= maxFiles) {
          throw new ImportsNotCheckedError(
            `it imports more than ${maxFiles} local files (directly or through others): they are not all checked`,
          );
        }
        seen.add(target);
        todo.push(target);
      }
    }
  }
  return undefined;
}

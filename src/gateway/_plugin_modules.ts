/**
 * Plugins of one's own loaded by `serve` from modules that `pyproxy.json`
 * (`plugins.<name>.module`) or the command line (`--plugin <module>`)
 * names: the module read, its default export made into a plugin and
 * checked, every failure a `ConfigError` that names the module, where it
 * was given and what to do (docs/plugins.md, "Loading your plugin in
 * serve").
 *
 * @module
 */
import { dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { ConfigError } from "../errors.ts";
import type { Plugin } from "../plugin.ts";
import type { Runtime } from "../runtime/types.ts";
import { pluginProblem } from "../_plugin_problem.ts";
import { untrustedThroughLinks } from "./_untrusted_path.ts";
import { ImportsNotCheckedError, untrustedImport } from "./_local_imports.ts";

/**
 * `import(url)` of the user's module, through a function made at run time:
 * `deno publish` warns of every `import()` whose specifier it cannot read
 * (denoland/deno#22594 asks for a way to say it is meant), and this one is
 * an absolute `file:` URL known only at run time, which needs no rewriting.
 */
const importModule = new Function("url", "return import(url)") as (
  url: string,
) => Promise<unknown>;

/** A plugin module to load, as the configuration gives it. */
export interface PluginModuleSpec {
  /** Absolute path, or a `file:` URL. */
  module: string;
  /** Given to its factory. */
  options?: Record<string, unknown>;
  /** The name its plugin must have (the key of `plugins`), if any. */
  name?: string;
  /** Where it was given, for messages: `/etc/pyproxy.json: plugins.audit`, `command line: --plugin ./audit.ts`. */
  where: string;
  /** The configuration path of the setting (`plugins.audit`, `--plugin`). */
  path: string;
}

/** Options of {@linkcode loadPluginModule}. */
export interface LoadPluginModuleOptions {
  /** Where a factory still running after `slowMs` is said (nothing without). */
  logger?: { warn(message: string, props?: Record<string, unknown>): void };
  /** @default {5000} */
  slowMs?: number;
  /**
   * How long the module's import (its top-level `await`s) and then its
   * factory may take each before the load fails with a `ConfigError`: a
   * promise that never settles would hold `serve`'s start for good.
   * @default {60000}
   */
  timeoutMs?: number;
}

/** A factory still running after this long at start is announced in the log. */
const SLOW_FACTORY_MS = 5_000;

/** The longest a module's import, then its factory, may take at start. */
const LOAD_TIMEOUT_MS = 60_000;

/**
 * `promise`, or `onTimeout()`'s error once `ms` have passed (the promise
 * itself cannot be stopped: it is left to settle unheard).
 */
async function within<T>(
  promise: Promise<T>,
  ms: number,
  onTimeout: () => Error,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  promise.catch(() => {}); // a rejection after the timeout goes unheard
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Why `specifier` is not loaded by a configuration, or `undefined`: a file
 * path or a `file:` URL is (a bare name, `quota.ts`, is a relative path);
 * any other scheme (`https:`, `npm:`, `jsr:`, `data:`) is not, so that no
 * configuration runs code from elsewhere with the gateway's permissions by
 * surprise.
 */
export function pluginSpecifierProblem(specifier: string): string | undefined {
  if (specifier === "") return "expected a module path";
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):/.exec(specifier)?.[1];
  // A Windows drive letter (C:\...) is a path.
  if (scheme === undefined || scheme.length === 1) {
    return undefined;
  }
  if (scheme.toLowerCase() === "file") return undefined;
  return `${scheme}: modules are not loaded from a configuration (plugin code runs with the gateway's permissions): name a local file; to use a published plugin, write a file that imports it (export { default } from "${specifier}"), so that your own code, its lock file and Deno's permissions decide what runs`;
}

/**
 * Loads the module, makes its plugin and checks it. Throws a
 * {@linkcode ConfigError} naming the module and where it was given.
 */
export async function loadPluginModule(
  spec: PluginModuleSpec,
  runtime: Runtime,
  options: LoadPluginModuleOptions = {},
): Promise<Plugin> {
  const fail = (why: string, cause?: unknown): ConfigError =>
    new ConfigError(
      `${spec.path}: Cannot load plugin module ${spec.module}: ${why} (at ${spec.where})`,
      {
        ...(cause === undefined ? {} : { cause }),
        details: { path: spec.path, module: spec.module },
      },
    );
  let path: string;
  let url: string;
  try {
    path = /^file:/i.test(spec.module)
      ? fileURLToPath(spec.module)
      : spec.module;
    url = pathToFileURL(path).href;
  } catch (err) {
    throw fail(`not a file path or file: URL (${firstLine(err)})`, err);
  }
  let stat: Awaited<ReturnType<Runtime["stat"]>>;
  try {
    stat = await runtime.stat(path);
  } catch (err) {
    throw fail(importProblem(err, path, runtime, dirname(path)), err);
  }
  if (stat === null) {
    throw fail(
      `no such file (a relative path is read from ${
        spec.path === "--plugin"
          ? "the working directory"
          : "the config file's directory"
      })`,
    );
  }
  if (!stat.isFile) {
    throw fail("not a file: name the module's .ts or .js file");
  }
  // Through links, the file itself is checked and imported: the link's own
  // mode (0777) refused every linked module (a deploy's current -> release),
  // and a link checked but not followed could name another file at import.
  let real = path;
  // What Deno's --allow-read must list: the module, and the directories
  // whose owners the check reads (the file alone failed the check).
  const readable = () => [...new Set([dirname(path), dirname(real)])].join(",");
  let untrusted: string | undefined;
  try {
    real = await runtime.realPath(path);
    // What it imports too (its relative imports): a file of another user's
    // beside it, or in a directory they can write, ran their code though
    // the module itself passed (security25).
    untrusted = await untrustedThroughLinks(runtime, path, real) ??
      await untrustedImport(runtime, real);
  } catch (err) {
    throw fail(importProblem(err, real, runtime, readable()), err);
  }
  if (untrusted !== undefined) {
    throw fail(
      `${untrusted}, and its code would run with the gateway's permissions: make it this user's (or root's), writable by no one else`,
    );
  }
  const timeoutMs = options.timeoutMs ?? LOAD_TIMEOUT_MS;
  let late: ConfigError | undefined;
  let mod: Record<string, unknown>;
  try {
    mod = await within(
      importModule(real === path ? url : pathToFileURL(real).href),
      timeoutMs,
      () =>
        late = fail(
          `its import did not finish within ${timeoutMs} ms (a top-level await that never settles?): start connections in the plugin's onPoolStart hook, not at import`,
        ),
    ) as Record<string, unknown>;
  } catch (err) {
    if (err === late) throw err;
    throw fail(importProblem(err, real, runtime, readable()), err);
  }
  const exported = mod.default;
  if (exported === undefined) {
    const named = Object.keys(mod).filter((k) => k !== "default");
    // A function first: a factory is what the default should be.
    named.sort((a, b) =>
      Number(typeof mod[b] === "function") -
      Number(typeof mod[a] === "function")
    );
    throw fail(
      `it has no default export${
        named.length === 0 ? "" : ` (it exports ${named.join(", ")})`
      }: export default a factory (options) => Plugin, or a plugin object${
        named.length === 0 ? "" : ` (export { ${named[0]} as default })`
      }`,
    );
  }
  let plugin: unknown;
  if (typeof exported === "function") {
    // A factory that waits (a connection to open) and never settles
    // would hold the start up without a word: said once, after a while.
    const slowMs = options.slowMs ?? SLOW_FACTORY_MS;
    const slow = options.logger === undefined ? undefined : setTimeout(
      () =>
        options.logger!.warn(
          "Still waiting for the factory of plugin module {module} ({where}) after {ms} ms",
          { module: spec.module, where: spec.where, ms: slowMs },
        ),
      slowMs,
    );
    try {
      plugin = await within(
        Promise.resolve(exported(spec.options)),
        timeoutMs,
        () =>
          late = fail(
            `its factory did not settle within ${timeoutMs} ms: return the plugin once it is made, and wait for connections in its onPoolStart hook`,
          ),
      );
    } catch (err) {
      if (err === late) throw err;
      throw fail(`its factory threw: ${firstLine(err)}`, err);
    } finally {
      clearTimeout(slow);
    }
  } else {
    if (spec.options !== undefined) {
      throw fail(
        `it exports a plugin object, which takes no options: export a factory (options) => Plugin to take ${spec.path}.options`,
      );
    }
    plugin = exported;
  }
  const problem = pluginProblem(plugin);
  if (problem !== undefined) {
    throw fail(
      `${
        typeof exported === "function"
          ? "its factory did not return a plugin"
          : "its default export is not a plugin"
      }: ${problem}`,
    );
  }
  const name = (plugin as Plugin).name;
  if (spec.name !== undefined && name !== spec.name) {
    throw fail(
      `its plugin is named '${name}', not '${spec.name}': name the entry of plugins as the plugin ("${name}": {"module": ...})`,
    );
  }
  return plugin as Plugin;
}

/** An import's (or a stat's) failure in words, with what to do. */
function importProblem(
  err: unknown,
  path: string,
  runtime: Runtime,
  allow = path,
): string {
  if (err instanceof ImportsNotCheckedError) return err.message;
  const message = plain(err instanceof Error ? err.message : String(err));
  const name = err instanceof Error ? err.name : "";
  if (
    /Requires \w+ access to/.test(message) || name === "NotCapable" ||
    name === "PermissionDenied"
  ) {
    const access = /Requires (\w+) access/.exec(message)?.[1] ?? "read";
    return `Deno's permissions refuse it (${
      firstLine(message)
    }): allow ${access} access to it, e.g. --allow-${access}=${allow}, or run with -A`;
  }
  if (
    /^SyntaxError\b/.test(message) || name === "SyntaxError" ||
    name === "BuildMessage"
  ) {
    const at = /at (file:\/\/\S+:\d+:\d+)/.exec(message)?.[1];
    return `it does not parse: ${
      firstLine(message.replace(/^SyntaxError:\s*/, ""))
    }${at === undefined ? "" : ` (${at})`}`;
  }
  const missing = /Module not found "([^"]+)"/.exec(message)?.[1] ??
    /Cannot find module '([^']+)'/.exec(message)?.[1];
  if (missing !== undefined) {
    const self = missing === path || missing === pathToFileURL(path).href;
    if (self && runtime.standalone === true) {
      return `this program is a binary of deno compile, which loads only the modules built into it: compile it again with --include ${path} (and the files it imports)`;
    }
    return self
      ? `the runtime cannot find it (${firstLine(message)})`
      : `it imports ${missing}, which is not found`;
  }
  return `its top-level code threw: ${firstLine(message)}`;
}

/** Without terminal colours (Deno's messages carry them). */
function plain(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\u001b\[[0-9;]*m/g, "");
}

function firstLine(err: unknown): string {
  const text = plain(err instanceof Error ? err.message : String(err));
  return text.split("\n")[0]!.trim();
}

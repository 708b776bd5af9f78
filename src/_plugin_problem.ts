/**
 * What is wrong with a value given as a plugin: the shape `Pool.start`
 * takes, and the keys that look like hooks but are none (a typo such as
 * `onRequst`, which the pool would otherwise ignore). Internal: the
 * gateway's plugin modules are refused for it, a pool's own plugins warned
 * about.
 *
 * @module
 */
import type { Plugin } from "./plugin.ts";
import { closestName } from "./_closest_name.ts";

/** The hooks and members a plugin may have; `on...` keys beyond them are typos. */
const PLUGIN_HOOKS = [
  "onPoolStart",
  "onPoolClose",
  "onPoolClosed",
  "onWorkerStart",
  "onWorkerExit",
  "onSessionOpen",
  "onSessionClose",
  "onTimeout",
  "onCall",
  "onSettle",
  "onRequest",
  "onReply",
  "status",
  "metrics",
  "setBounds",
] as const satisfies readonly (keyof Plugin)[];

/**
 * What is wrong with `value` as a plugin, or `undefined`: an object with a
 * non-empty `name`, its hooks functions, no `on...` key that is no hook (a
 * typo such as `onRequst` would never run), `handlers` an object of
 * functions and `requires` a list of names.
 */
export function pluginProblem(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `expected an object with a name and hooks, got ${
      Array.isArray(value) ? "an array" : value === null ? "null" : typeof value
    }`;
  }
  const p = value as Record<string, unknown>;
  if (typeof p.name !== "string" || p.name === "") {
    return "its name is missing (a non-empty string)";
  }
  for (const key of PLUGIN_HOOKS) {
    const v = p[key];
    if (v !== undefined && typeof v !== "function") {
      return `${key} is not a function (${typeof v})`;
    }
  }
  const typo = misspelledHook(p);
  if (typo !== undefined) return typo;
  if (p.handlers !== undefined) {
    if (typeof p.handlers !== "object" || p.handlers === null) {
      return "handlers is not an object of host commands";
    }
    for (const [cmd, fn] of Object.entries(p.handlers)) {
      if (typeof fn !== "function") {
        return `handlers["${cmd}"] is not a function`;
      }
    }
  }
  if (
    p.requires !== undefined &&
    (!Array.isArray(p.requires) ||
      !p.requires.every((r) => typeof r === "string"))
  ) {
    return "requires is not a list of plugin names";
  }
  return undefined;
}

/** Own keys and its prototypes' (but Object.prototype's). */
function allKeys(value: object): Set<string> {
  const keys = new Set<string>();
  for (
    let o: object | null = value;
    o !== null && o !== Object.prototype;
    o = Object.getPrototypeOf(o)
  ) {
    for (const k of Object.getOwnPropertyNames(o)) {
      if (k !== "constructor") keys.add(k);
    }
  }
  return keys;
}

/**
 * The first key of `plugin` (its own, or its class's: a plugin written as
 * a class instance) that looks like a hook (`on` and a capital,
 * a function) but is none, in words with the closest hook, or `undefined`.
 */
export function misspelledHook(plugin: object): string | undefined {
  const hooks = new Set<string>(PLUGIN_HOOKS);
  for (const key of allKeys(plugin)) {
    if (
      !hooks.has(key) && /^on[A-Z]/.test(key) &&
      typeof (plugin as Record<string, unknown>)[key] === "function"
    ) {
      const near = closestName(key, PLUGIN_HOOKS);
      return `${key} is no hook, so it would never run${
        near === undefined ? "" : ` (did you mean ${near}?)`
      }; hooks: ${PLUGIN_HOOKS.filter((h) => h.startsWith("on")).join(", ")}`;
    }
  }
  return undefined;
}

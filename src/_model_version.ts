/**
 * Internals: version labels of a model served in several versions at once
 * (docs/models.md, "Versions"). Each version is a model of its own in the
 * pool, the workers and the registry, under the internal name
 * `name@label`: `@` is in no gateway model name, so no name can take it.
 *
 * @module
 */
import * as v from "valibot";

/** What a version label must be, for messages ("expected ..."). */
export const VERSION_LABEL_SHAPE =
  "1-64 characters of letters, digits, _ . - (starting with a letter or digit)";

/**
 * A version label: `"1"`, `"2"`, `"2026-12"`, `"v2.1"`. No `/`, `@`,
 * spaces, `..` at the start: it goes in a URL path segment, a metric label
 * and the internal name as it is.
 */
export const VersionLabel = v.pipe(
  v.string(`expected ${VERSION_LABEL_SHAPE}`),
  v.regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/,
    `expected ${VERSION_LABEL_SHAPE}`,
  ),
);

/** Why `label` cannot be a version label, or `undefined` when it can. */
export function versionLabelProblem(label: unknown): string | undefined {
  const r = v.safeParse(VersionLabel, label);
  return r.success ? undefined : r.issues[0].message;
}

/** The internal name of version `label` of model `name`. */
export function versionKey(name: string, label: string): string {
  return `${name}@${label}`;
}

/** A label or name as a message shows it: at most 64 characters of it. */
export function quoteLabel(text: unknown): string {
  const s = typeof text === "string" ? text : String(text);
  return s.length <= 64
    ? JSON.stringify(s)
    : `${JSON.stringify(s.slice(0, 64))}... (${s.length} characters)`;
}

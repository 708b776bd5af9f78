/**
 * The gateway's rule for model names, in one place: the config file's
 * `models`, the models loaded from every `*.py` of `modelsDir`, and
 * `PUT /v1/models/{name}` all apply it.
 *
 * @module
 */
import { RESERVED_MODEL_NAMES } from "./metrics.ts";

/** 1-128 letters, digits, `_ . -`, not starting with a digit, `.` or `-`. */
const MODEL_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Why `name` cannot be a model name of the gateway (it must be 1-128
 * letters, digits, `_ . -`, not starting with a digit, `.` or `-`, and not one
 * of {@link RESERVED_MODEL_NAMES}), or `undefined` when it can. The text
 * completes "expected ...".
 *
 * @example
 * ```ts
 * import { modelNameProblem } from "./model_name_problem.ts";
 * console.log(modelNameProblem("scorer")); // undefined
 * console.log(modelNameProblem("my model")); // "1-128 characters of ..."
 * ```
 */
export function modelNameProblem(name: string): string | undefined {
  if (!MODEL_NAME_PATTERN.test(name)) {
    return "1-128 characters of letters, digits, _ . - (not starting with a digit, . or -)";
  }
  if (RESERVED_MODEL_NAMES.includes(name)) {
    return `a name other than ${
      RESERVED_MODEL_NAMES.join(" and ")
    } (reserved for the metrics of calls of no single model)`;
  }
  return undefined;
}

/**
 * What HTTP clients see of a model description.
 *
 * @module
 */
import type { GatewayModelInfo } from "./model_catalog.ts";

/** A model description as the gateway's routes show it. */
export type ModelView = Omit<GatewayModelInfo, "options"> & {
  /** The names of the options the model was loaded with. */
  optionKeys?: string[];
  /** The options themselves: with `debug` only. */
  options?: Record<string, unknown>;
};

/**
 * The description without its options' values unless `debug`: options can
 * hold credentials (a database URL, an API key) that every client of
 * `/v1/models` and `/v1/status` would read. Their names stay visible. The
 * timeout shown is the one a call gets: the model's own, else
 * `defaultTimeout` (the gateway's `requestTimeout`, source `"default"`).
 */
export function modelView(
  info: GatewayModelInfo,
  debug: boolean,
  defaultTimeout: number,
): ModelView {
  const { options, ...rest } = info;
  if (rest.timeout === undefined) {
    rest.timeout = defaultTimeout;
    rest.timeoutSource = "default";
  }
  if (options === undefined) return rest;
  const view: ModelView = { ...rest, optionKeys: Object.keys(options) };
  if (debug) view.options = options;
  return view;
}

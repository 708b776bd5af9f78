/**
 * The HTTP gateway: `serve()` for the complete server, `createGateway()` for
 * the Hono app alone, and its parts (channels, metrics, config, security).
 *
 * @module
 */
export * from "./app.ts";
export * from "./serve.ts";
export * from "./config.ts";
export * from "./config_schema.ts";
export * from "./channels.ts";
export * from "./channels_plugin.ts";
export * from "./metrics.ts";
export * from "./input_schema.ts";
export * from "./model_catalog.ts";
export * from "./security.ts";
export * from "./dashboard.ts";
export * from "./sse.ts";
export * from "./error_response.ts";
export type * from "./gateway_pool.ts";

/**
 * The HTTP gateway: `serve()` for the complete server, `createGateway()` for
 * the app alone, and its parts (channels, metrics, config).
 *
 * Route groups, middleware and response helpers stay internal: they are
 * built on Hono, which is not part of pyproxy's public API.
 *
 * @module
 */
export { createGateway } from "./app.ts";
export type { GatewayApp, GatewayOptions } from "./app.ts";
export { serve } from "./serve.ts";
export type {
  GatewayServer,
  GatewayShutdownOptions,
  ReloadResult,
  ServeOptions,
} from "./serve.ts";
export { loadConfig, parseConfig, resolveConfig } from "./config.ts";
export type {
  LoadConfigOptions,
  ResolveConfigOptions,
  ResolvedConfig,
} from "./config.ts";
export type {
  GatewayConfig,
  LogFormat,
  LogLevel,
  ModelEntry,
} from "./config_schema.ts";
export { ChannelHub, Subscription } from "./channels.ts";
export type {
  ChannelEvent,
  ChannelHubOptions,
  ChannelInfo,
  ChannelMessage,
  PublishOptions,
  SubscribeOptions,
} from "./channels.ts";
export { channelsPlugin } from "./channels_plugin.ts";
export type { ChannelsPluginOptions } from "./channels_plugin.ts";
export { GatewayMetrics } from "./metrics.ts";
export type {
  BuildInfo,
  GatewayMetricsOptions,
  MetricsLimits,
  MetricsSnapshot,
  ModelMetrics,
  ModelTotals,
} from "./metrics.ts";
export {
  readProcessResources,
  readWorkerResources,
} from "./process_resources.ts";
export type { ProcessResources, WorkerResources } from "./process_resources.ts";
export { InputValidator } from "./input_validator.ts";
export { ModelCatalog } from "./model_catalog.ts";
export type { GatewayModelInfo } from "./model_catalog.ts";
export type { CorsConfig } from "./security.ts";
export type { TracingOptions } from "./tracing_options.ts";
export {
  tokenId,
  WS_BEARER64_PREFIX,
  WS_BEARER_PREFIX,
  WS_PROTOCOL,
} from "./security.ts";
export { webSocketProtocols } from "./web_socket_protocols.ts";
export { errorResponse } from "./error_response.ts";
export type { ErrorBody } from "./error_response.ts";
export type * from "./gateway_pool.ts";

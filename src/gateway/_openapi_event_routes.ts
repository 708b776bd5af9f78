/**
 * The gateway's routes that answer with event streams, eval's and the
 * channels', as OpenAPI path items (for `openapi.ts`, through
 * `_openapi_routes.ts`).
 *
 * @module
 */
import type { JsonSchema } from "./_declared_schema.ts";
import {
  bodyErrors,
  CHANNEL_NAME,
  errorResponse,
  type GatewayRouteOptions,
  jsonBody,
  jsonResponse,
  lastEventIdParams,
  type OpenApiObject,
  pathParam,
  queryParam,
  REQUEST_ID_RESPONSE,
  REQUEST_ID_SCHEMA,
  sseResponse,
  withGuards,
} from "./_openapi_parts.ts";

const CHANNEL_MESSAGE_FRAME: JsonSchema = {
  type: "object",
  properties: {
    type: { type: "string", enum: ["message", "restart", "dropped"] },
    channel: { type: "string" },
    seq: { type: "integer" },
    epoch: { type: "string" },
    time: { type: "number" },
    data: {},
    reason: { type: "string" },
  },
};

/** `POST /v1/eval` and `GET /v1/eval/{id}/events` (eval only). */
export function evalPaths(
  o: GatewayRouteOptions,
): Record<string, OpenApiObject> {
  if (!o.allowEval) return {};
  const atomHeader = {
    "X-Atom-Id": {
      description: "The eval's id (for `/v1/eval/{id}/events`).",
      schema: { type: "string" },
    },
  };
  const events = sseResponse(
    "The eval's events: `atom`, then `output` (id: its sequence number), then `result` or `error`.",
    {
      atom: {
        type: "object",
        required: ["id"],
        properties: { id: { type: "string" } },
      },
      output: {
        type: "object",
        required: ["fd", "data"],
        properties: {
          fd: { type: "integer", enum: [1, 2] },
          data: { type: "string" },
          truncated: { type: "integer" },
        },
      },
      result: { type: "object", properties: { value: {} } },
      error: {
        type: "object",
        required: ["status", "type", "message"],
        properties: {
          status: { type: "integer" },
          type: { type: "string" },
          message: { type: "string" },
          exception: { type: "string" },
          traceback: { type: "string" },
          requestId: {
            type: "string",
            description:
              "The eval's request id (its `POST`'s `X-Request-Id`), else this request's, else a new UUID.",
          },
        },
      },
    },
    atomHeader,
  );
  const requestIdParam = {
    name: "X-Request-Id",
    in: "header",
    required: false,
    description:
      "A request id: sent to the code (`host.request_id()`), echoed on the response, named by an `error` event. Any other value is ignored.",
    schema: REQUEST_ID_SCHEMA,
  };
  // Every error response of the eval routes carries a request id.
  const evalError = (description: string) =>
    errorResponse(description, REQUEST_ID_RESPONSE);
  return {
    "/v1/eval": {
      post: {
        operationId: "eval",
        tags: ["eval"],
        summary: "Run Python code on a worker",
        parameters: [requestIdParam],
        requestBody: jsonBody(
          {
            type: "object",
            required: ["code"],
            properties: {
              code: { type: "string" },
              locals: { type: "object" },
              args: { type: ["array", "object"] },
              timeout: {
                type: "integer",
                minimum: 1,
                description: "In ms; at most `limits.requestTimeout`.",
              },
            },
            additionalProperties: false,
          },
          true,
          { code: "x * 2", locals: { x: 21 } },
        ),
        responses: withGuards({
          "200": events,
          "400": evalError(
            "`ValidationError` (the body), `InvalidRequestError` (an integer of more than `limits.maxIntegerDigits` digits, or a body nested deeper than `limits.maxJsonDepth`), `InvalidJson` or `IncompleteBody`.",
          ),
          ...bodyErrors(o.bodyLimit),
        }, o.token),
      },
    },
    "/v1/eval/{id}/events": {
      get: {
        operationId: "evalEvents",
        tags: ["eval"],
        summary: "Resume an eval's events",
        parameters: [
          pathParam("id", "The eval's id (`X-Atom-Id`).", { type: "string" }),
          ...lastEventIdParams("output sequence number (`-1`: from the start)")
            .map((p) => ({
              ...p,
              schema: { type: "string", pattern: "^(-1|\\d{1,15})$" },
            })),
          requestIdParam,
        ],
        responses: withGuards({
          "200": events,
          "400": evalError(
            "`InvalidRequestError`: `Last-Event-ID` is not a sequence number.",
          ),
          "404": evalError("`NotFound`: unknown or expired eval."),
        }, o.token),
      },
    },
  };
}

/** The channel routes. */
export function channelPaths(
  o: GatewayRouteOptions,
): Record<string, OpenApiObject> {
  const guarded = (r: Record<string, OpenApiObject>) => withGuards(r, o.token);
  return {
    "/v1/channels": {
      get: {
        operationId: "listChannels",
        tags: ["channels"],
        summary: "Channels with subscriber counts and recent history",
        parameters: [
          queryParam("history", "Messages of history per channel.", {
            type: "string",
            pattern: "^\\d{1,15}$",
            default: "10",
          }),
        ],
        responses: guarded({
          "200": jsonResponse("The channels.", {
            type: "object",
            required: ["channels"],
            properties: {
              channels: { type: "array", items: { type: "object" } },
            },
          }),
          "400": errorResponse(
            "`InvalidRequestError`: `history` is not an integer >= 0.",
          ),
        }),
      },
    },
    "/v1/channels/{name}": {
      parameters: [pathParam("name", "The channel.", CHANNEL_NAME)],
      post: {
        operationId: "publish",
        tags: ["channels"],
        summary: "Publish a JSON message",
        requestBody: jsonBody({}, true, { hello: "subscribers" }),
        responses: guarded({
          "200": jsonResponse("Published.", {
            type: "object",
            required: ["channel", "seq", "epoch", "delivered"],
            properties: {
              channel: { type: "string" },
              seq: { type: "integer" },
              epoch: {
                type: "string",
                description:
                  "The channel's numbering: a new one after a restart of the gateway (or an idle channel forgotten).",
              },
              delivered: { type: "integer" },
            },
          }),
          "400": errorResponse(
            "`InvalidRequestError` (the name, no body, an integer of more than `limits.maxIntegerDigits` digits, or a body nested deeper than `limits.maxJsonDepth`), `SerializationError` (a message that cannot be written back: an integer beyond ±2^53 nested deeper than 1000 levels), `InvalidJson` or `IncompleteBody`.",
          ),
          ...bodyErrors(o.bodyLimit),
        }),
      },
      get: {
        operationId: "subscribe",
        tags: ["channels"],
        summary: "Subscribe (Server-Sent Events, or a WebSocket upgrade)",
        parameters: [
          ...lastEventIdParams(
            "message sequence number, or `<epoch>:<seq>` (a resume point of another epoch replays the whole history after a `restart` event)",
            "^([A-Za-z0-9_-]{1,32}:)?\\d{1,15}$",
          ),
          queryParam(
            "epoch",
            "The epoch of the resume point (`lastEventId`'s own wins), or empty: none known yet. Given (or in the resume point), SSE ids are `<epoch>:<seq>` and a resume across a restart starts with a `restart` event (WebSocket: frame).",
            { type: "string", pattern: "^[A-Za-z0-9_-]{0,32}$" },
          ),
        ],
        responses: guarded({
          "101": {
            description:
              'A WebSocket (for an upgrade request): JSON frames `{type: "message", channel, seq, epoch, time, data}` (first `{type: "restart", channel, epoch, seq: 0}` when a resume point with an epoch is of another numbering), then `{type: "dropped", reason}` when dropped. A handshake that offers the subprotocol `pyproxy.v1` is answered it' +
              (o.token
                ? "; a browser, which cannot send `Authorization`, offers the token beside it as the subprotocol `pyproxy.bearer.<token>` (or `pyproxy.bearer64.<base64url of the token>`), accepted on this handshake only."
                : "."),
            "x-websocket-frame": CHANNEL_MESSAGE_FRAME,
          },
          "200": sseResponse(
            "`message` events (id: the sequence number, or `<epoch>:<seq>` when the request gave an epoch), `dropped` when the subscriber is dropped; first `restart` (id `<epoch>:0`, the new numbering's start) when a resume point with an epoch is of another numbering.",
            {
              message: {},
              restart: {
                type: "object",
                properties: {
                  channel: { type: "string" },
                  epoch: { type: "string" },
                },
              },
              dropped: {
                type: "object",
                properties: { reason: { type: "string" } },
              },
            },
          ),
          "400": errorResponse(
            `\`InvalidRequestError\`: not a channel name${
              o.token ? ", " : ", or "
            }\`Last-Event-ID\` is not a sequence number${
              o.token
                ? ", or a token subprotocol offered without `pyproxy.v1` (or two of them)"
                : ""
            }.`,
          ),
          "501": errorResponse(
            "`NotImplemented`: WebSocket upgrades are not available on this runtime.",
          ),
        }),
      },
    },
  };
}

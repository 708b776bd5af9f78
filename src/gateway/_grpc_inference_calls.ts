/**
 * The unary methods of `inference.GRPCInferenceService` (KServe V2's and
 * Triton's extensions), each the `/v2` REST request that means the same.
 * docs/gateway.md, "gRPC" (the method table).
 *
 * @module
 */
import type { Answer } from "./_grpc_framing.ts";
import {
  decodeModelInferRequest,
  encodeModelInferResponse,
  type GrpcInferCall,
} from "./_grpc_infer_messages.ts";
import {
  decodeModelRef,
  encodeFlag,
  encodeModelMetadata,
  encodeServerMetadata,
} from "./_grpc_metadata_messages.ts";
import { encodeModelStatistics } from "./_grpc_statistics_messages.ts";
import { encodeModelConfig } from "./_grpc_model_config_messages.ts";
import {
  decodeRepositoryIndexRequest,
  decodeRepositoryModelRequest,
  encodeRepositoryIndex,
} from "./_grpc_repository_messages.ts";
import { failure, modelPath, ok, type RestCall } from "./_grpc_rest.ts";

/** The service's path prefix. */
export const INFERENCE_SERVICE = "/inference.GRPCInferenceService/";

/** The unary methods answered (`ModelStreamInfer` is the stream's). */
export const UNARY_METHODS: ReadonlySet<string> = new Set([
  "ServerLive",
  "ServerReady",
  "ModelReady",
  "ServerMetadata",
  "ModelMetadata",
  "ModelInfer",
  "ModelStatistics",
  "ModelConfig",
  "RepositoryIndex",
  "RepositoryModelLoad",
  "RepositoryModelUnload",
]);

const JSON_HEADERS = { "content-type": "application/json" };

/** One unary method's call through the gateway's REST route. */
export async function inferenceCall(
  method: string,
  message: Uint8Array,
  rest: RestCall,
): Promise<Answer> {
  switch (method) {
    case "ServerLive":
      return await flag(await rest("/v2/health/live"), "live");
    case "ServerReady":
      return await flag(await rest("/v2/health/ready"), "ready");
    case "ModelReady": {
      const { name, version } = decodeModelRef(message);
      return await flag(
        await rest(`${modelPath(name, version)}/ready`),
        "ready",
      );
    }
    case "ServerMetadata":
      return await json(await rest("/v2"), encodeServerMetadata);
    case "ModelMetadata": {
      const { name, version } = decodeModelRef(message);
      return await json(
        await rest(modelPath(name, version)),
        encodeModelMetadata,
      );
    }
    case "ModelStatistics": {
      // Name 1, version 2, as a ModelReadyRequest's. No name: every model's.
      const { name, version } = decodeModelRef(message);
      const path = name === ""
        ? "/v2/models/stats"
        : `${modelPath(name, version)}/stats`;
      return await json(await rest(path), encodeModelStatistics);
    }
    case "ModelConfig": {
      const { name, version } = decodeModelRef(message);
      return await json(
        await rest(`${modelPath(name, version)}/config`),
        encodeModelConfig,
      );
    }
    case "RepositoryIndex": {
      // One repository here: its name, if any, is not looked at.
      const { ready } = decodeRepositoryIndexRequest(message);
      return await json(
        await rest("/v2/repository/index", {
          method: "POST",
          body: new TextEncoder().encode(JSON.stringify({ ready })),
          headers: JSON_HEADERS,
        }),
        encodeRepositoryIndex,
      );
    }
    case "RepositoryModelLoad":
    case "RepositoryModelUnload": {
      const { name, body } = decodeRepositoryModelRequest(message);
      const action = method === "RepositoryModelLoad" ? "load" : "unload";
      const res = await rest(
        `/v2/repository/models/${encodeURIComponent(name)}/${action}`,
        { method: "POST", body, headers: JSON_HEADERS },
      );
      if (!res.ok) return await failure(res);
      await res.body?.cancel();
      return ok(res, new Uint8Array(0));
    }
    default: {
      const infer = decodeModelInferRequest(message);
      const res = await inferRest(infer, rest);
      if (!res.ok) return await failure(res);
      return ok(res, await inferResponse(res, infer));
    }
  }
}

/** A `ModelInferRequest`'s REST call: `POST .../infer`, binary tensor data. */
export async function inferRest(
  infer: GrpcInferCall,
  rest: RestCall,
  accept?: string,
): Promise<Response> {
  let size = infer.header.byteLength;
  for (const b of infer.binary) size += b.byteLength;
  const body = new Uint8Array(size);
  body.set(infer.header, 0);
  let at = infer.header.byteLength;
  for (const b of infer.binary) {
    body.set(b, at);
    at += b.byteLength;
  }
  // A stream's bound on its first item, as the route takes it (the stream
  // route's query parameter): checked there, and refused on a unary call.
  const query = infer.firstItemTimeout === undefined
    ? ""
    : `?firstItemTimeout=${encodeURIComponent(infer.firstItemTimeout)}`;
  return await rest(`${modelPath(infer.name, infer.version)}/infer${query}`, {
    method: "POST",
    body,
    headers: {
      "content-type": "application/octet-stream",
      "inference-header-content-length": String(infer.header.byteLength),
      ...(accept === undefined ? {} : { accept }),
    },
  });
}

/** A successful REST infer answer as a `ModelInferResponse`. */
export async function inferResponse(
  res: Response,
  infer: GrpcInferCall,
  parameters?: Record<string, boolean>,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(await res.arrayBuffer());
  const length = res.headers.get("inference-header-content-length");
  const split = length === null ? bytes.byteLength : Number(length);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, split)));
  return encodeModelInferResponse(
    header,
    bytes.subarray(split),
    infer.raw,
    parameters,
  );
}

/** A REST answer's JSON as a message, or its error. */
async function json(
  res: Response,
  encode: (body: never) => Uint8Array,
): Promise<Answer> {
  if (!res.ok) return await failure(res);
  return ok(res, encode(await res.json() as never));
}

/**
 * A readiness answer: `{live}`/`{ready}` whatever the status (a 503 is
 * "not ready", not an error), else the error.
 */
async function flag(res: Response, key: string): Promise<Answer> {
  if (res.ok || res.status === 503) {
    const body = await res.clone().json().catch(() => undefined) as
      | Record<string, unknown>
      | undefined;
    if (typeof body?.[key] === "boolean") {
      return ok(res, encodeFlag(body[key] as boolean));
    }
  }
  return await failure(res);
}

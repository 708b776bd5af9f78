// The codecs of Triton's gRPC extension messages and of gRPC's health check
// against protobufjs (an independent implementation, reading
// tests/fixtures/grpc/triton_extensions.proto): what the gateway writes,
// protobufjs reads back as the same fields; what protobufjs writes, the
// gateway reads as the same request.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import protobuf from "protobufjs";
import { encodeModelStatistics } from "../src/gateway/_grpc_statistics_messages.ts";
import {
  DATA_TYPES,
  encodeModelConfig,
} from "../src/gateway/_grpc_model_config_messages.ts";
import {
  decodeRepositoryIndexRequest,
  decodeRepositoryModelRequest,
  encodeRepositoryIndex,
} from "../src/gateway/_grpc_repository_messages.ts";
import { decodeHealthCheckRequest } from "../src/gateway/_grpc_health.ts";
import { encodeModelInferResponse } from "../src/gateway/_grpc_infer_messages.ts";

const root = new protobuf.Root();
root.resolvePath = (_origin, target) =>
  fileURLToPath(new URL(`./fixtures/grpc/${target}`, import.meta.url));
root.loadSync("triton_extensions.proto", { keepCase: true });
const type = (name: string) => root.lookupType(name);
const OBJECT = { longs: Number, enums: String, defaults: true };
const read = (t: protobuf.Type, bytes: Uint8Array) =>
  t.toObject(t.decode(bytes), OBJECT);

/** A plain copy (fast-check's records have no prototype). */
const plain = <T>(value: T): T => JSON.parse(JSON.stringify(value));

const u64 = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const duration = fc.record({ count: u64, ns: u64 });
const name = fc.string({ maxLength: 12 });

Deno.test("encodeModelStatistics writes what protobufjs reads as the same statistics", () => {
  const Stats = type("triton.ModelStatisticsResponse");
  const phases = [
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
  ] as const;
  const stat = fc.record({
    name,
    version: name,
    last_inference: u64,
    inference_count: u64,
    execution_count: u64,
    inference_stats: fc.record(
      Object.fromEntries(phases.map((p) => [p, duration])) as Record<
        (typeof phases)[number],
        typeof duration
      >,
    ),
    batch_stats: fc.array(
      fc.record({
        batch_size: u64,
        compute_input: duration,
        compute_infer: duration,
        compute_output: duration,
      }),
      { maxLength: 3 },
    ),
  });
  fc.assert(
    fc.property(fc.array(stat, { maxLength: 3 }), (stats) => {
      const got = read(Stats, encodeModelStatistics({ model_stats: stats }));
      assert.deepEqual(got, plain({ model_stats: stats }));
    }),
  );
});

Deno.test("encodeModelConfig writes what protobufjs reads as the same configuration", () => {
  const Config = type("triton.ModelConfigResponse");
  const dataType = fc.constantFrom(...Object.keys(DATA_TYPES));
  const dims = fc.array(fc.integer({ min: -1, max: 1 << 20 }), {
    maxLength: 4,
  });
  const config = fc.record({
    name,
    platform: fc.constant("pyproxy"),
    backend: fc.constant("pyproxy"),
    max_batch_size: fc.constant(0),
    input: fc.array(
      fc.record({ name, data_type: dataType, dims, optional: fc.boolean() }),
      { maxLength: 3 },
    ),
    output: fc.array(fc.record({ name, data_type: dataType, dims }), {
      maxLength: 3,
    }),
    instance_group: fc.array(
      fc.record({
        name,
        kind: fc.constant("KIND_CPU"),
        count: fc.integer({ min: 0, max: 64 }),
      }),
      { maxLength: 2 },
    ),
    version_policy: fc.constantFrom(
      { latest: { num_versions: 1 } },
      { all: {} },
    ),
    dynamic_batching: fc.option(
      fc.record({
        preferred_batch_size: fc.array(fc.integer({ min: 1, max: 1024 }), {
          minLength: 1,
          maxLength: 2,
        }),
        max_queue_delay_microseconds: u64,
      }),
      { nil: undefined },
    ),
    model_transaction_policy: fc.option(fc.constant({ decoupled: true }), {
      nil: undefined,
    }),
  });
  fc.assert(
    fc.property(config, (c) => {
      const { config: got } = read(Config, encodeModelConfig(c)) as {
        config: Record<string, unknown>;
      };
      // protobufjs' default of an absent message field: null.
      assert.deepEqual(got, {
        ...plain(c),
        model_transaction_policy: c.model_transaction_policy ?? null,
      });
    }),
  );
});

Deno.test("the repository messages: protobufjs' requests read as REST's bodies, the index written as protobufjs reads it", () => {
  const IndexRequest = type("triton.RepositoryIndexRequest");
  const Index = type("triton.RepositoryIndexResponse");
  const Load = type("triton.RepositoryModelLoadRequest");
  fc.assert(
    fc.property(name, fc.boolean(), (repository, ready) => {
      const bytes = IndexRequest.encode({ repository_name: repository, ready })
        .finish();
      assert.deepEqual(decodeRepositoryIndexRequest(bytes), {
        repository,
        ready,
      });
    }),
  );
  const parameter = fc.oneof(
    fc.boolean().map((v) => [{ bool_param: v }, v] as const),
    fc.integer().map((v) => [{ int64_param: v }, v] as const),
    fc.string().map((v) => [{ string_param: v }, v] as const),
  );
  fc.assert(
    fc.property(
      name,
      fc.dictionary(fc.string({ maxLength: 8 }), parameter, { maxKeys: 3 }),
      (model, parameters) => {
        const bytes = Load.encode(Load.fromObject({
          model_name: model,
          parameters: Object.fromEntries(
            Object.entries(parameters).map(([k, [p]]) => [k, p]),
          ),
        })).finish();
        const got = decodeRepositoryModelRequest(bytes);
        assert.equal(got.name, model);
        assert.deepEqual(
          JSON.parse(new TextDecoder().decode(got.body)),
          {
            parameters: Object.fromEntries(
              Object.entries(parameters).map(([k, [, v]]) => [k, v]),
            ),
          },
        );
      },
    ),
  );
  const entry = fc.record({
    name,
    version: name,
    state: fc.constantFrom("READY", "UNAVAILABLE", "LOADING"),
    reason: name,
  });
  fc.assert(
    fc.property(fc.array(entry, { maxLength: 4 }), (entries) => {
      assert.deepEqual(
        read(Index, encodeRepositoryIndex(entries)),
        plain({ models: entries }),
      );
    }),
  );
});

Deno.test("decodeHealthCheckRequest reads protobufjs' service; a ModelInferResponse's parameters read back", () => {
  const Health = type("triton.HealthCheckRequest");
  fc.assert(
    fc.property(fc.string(), (service) => {
      assert.equal(
        decodeHealthCheckRequest(Health.encode({ service }).finish()),
        service,
      );
    }),
  );
  const Response = type("inference.ModelInferResponse");
  const bytes = encodeModelInferResponse(
    { model_name: "m", outputs: [] },
    new Uint8Array(0),
    true,
    { triton_final_response: true },
  );
  const got = read(Response, bytes) as {
    parameters: Record<string, { bool_param: boolean }>;
  };
  assert.equal(got.parameters.triton_final_response?.bool_param, true);
});

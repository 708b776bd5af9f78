// The gRPC transport's own protobuf codec against protobufjs (an independent
// implementation, with KServe's .proto): what protobufjs writes, the codec
// reads as the same tensors; what the codec writes, protobufjs reads back.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import protobuf from "protobufjs";
import {
  decodeModelInferRequest,
  encodeModelInferResponse,
} from "../src/gateway/_grpc_infer_messages.ts";
import { GrpcMessageError } from "../src/gateway/_grpc_message_error.ts";
import { ProtobufError } from "../src/gateway/_protobuf.ts";
import { decodeBinaryTensor } from "../src/gateway/_inference_binary.ts";
import type { Datatype } from "../src/gateway/_inference_tensors.ts";

const root = new protobuf.Root().loadSync(
  fileURLToPath(
    new URL("./fixtures/grpc/grpc_predict_v2.proto", import.meta.url),
  ),
  { keepCase: true },
);
const Request = root.lookupType("inference.ModelInferRequest");
const Response = root.lookupType("inference.ModelInferResponse");

/** Each datatype's typed field and an arbitrary of its elements. */
const TYPES: Record<
  string,
  { field: string; element: fc.Arbitrary<unknown>; size: number }
> = {
  BOOL: { field: "bool_contents", element: fc.boolean(), size: 1 },
  INT8: {
    field: "int_contents",
    element: fc.integer({ min: -128, max: 127 }),
    size: 1,
  },
  INT32: { field: "int_contents", element: fc.integer(), size: 4 },
  UINT16: {
    field: "uint_contents",
    element: fc.integer({ min: 0, max: 65535 }),
    size: 2,
  },
  UINT32: {
    field: "uint_contents",
    element: fc.integer({ min: 0, max: 4294967295 }),
    size: 4,
  },
  INT64: {
    field: "int64_contents",
    element: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
    size: 8,
  },
  UINT64: {
    field: "uint64_contents",
    element: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    size: 8,
  },
  FP32: {
    field: "fp32_contents",
    element: fc.float({ noNaN: true, noDefaultInfinity: true }),
    size: 4,
  },
  FP64: {
    field: "fp64_contents",
    element: fc.double({ noNaN: true, noDefaultInfinity: true }),
    size: 8,
  },
  BYTES: {
    field: "bytes_contents",
    element: fc.string({ maxLength: 6 }),
    size: 0,
  },
};

const tensor = fc.constantFrom(...Object.keys(TYPES)).chain((datatype) =>
  fc.record({
    datatype: fc.constant(datatype),
    values: fc.array(TYPES[datatype]!.element, { maxLength: 6 }),
  })
);

/** The value protobufjs takes for an element (int64s as strings). */
function pbValue(v: unknown, datatype: string): unknown {
  if (typeof v === "bigint") return String(v);
  if (datatype === "BYTES") return new TextEncoder().encode(v as string);
  return v;
}

/** What the core reads back: numbers (or BigInts past 2^53), booleans, strings. */
function expected(v: unknown, datatype: string): unknown {
  if (typeof v === "bigint") {
    return v >= -(2n ** 53n) + 1n && v <= 2n ** 53n - 1n ? Number(v) : v;
  }
  if (datatype === "FP32") return Math.fround(v as number);
  if (datatype === "BOOL") return v;
  return v;
}

function littleEndian(values: unknown[], datatype: string): Uint8Array {
  if (datatype === "BYTES") {
    const parts = values.map((s) => new TextEncoder().encode(s as string));
    const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
    const view = new DataView(out.buffer);
    let at = 0;
    for (const p of parts) {
      view.setUint32(at, p.length, true);
      out.set(p, at + 4);
      at += 4 + p.length;
    }
    return out;
  }
  const size = TYPES[datatype]!.size;
  const out = new Uint8Array(size * values.length);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => {
    const at = i * size;
    switch (datatype) {
      case "BOOL":
        view.setUint8(at, v ? 1 : 0);
        break;
      case "INT8":
        view.setInt8(at, v as number);
        break;
      case "INT32":
        view.setInt32(at, v as number, true);
        break;
      case "UINT16":
        view.setUint16(at, v as number, true);
        break;
      case "UINT32":
        view.setUint32(at, v as number, true);
        break;
      case "INT64":
        view.setBigInt64(at, v as bigint, true);
        break;
      case "UINT64":
        view.setBigUint64(at, v as bigint, true);
        break;
      case "FP32":
        view.setFloat32(at, v as number, true);
        break;
      default:
        view.setFloat64(at, v as number, true);
    }
  });
  return out;
}

/** Unknown fields (numbers 100 on) of every wire type, to be skipped. */
const unknownFields = fc.array(
  fc.oneof(
    fc.constant([0xa0, 0x06, 0x96, 0x01]), // 100: varint 150
    fc.constant([0xa9, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]), // 101: fixed64
    fc.constant([0xb2, 0x06, 2, 0x61, 0x62]), // 102: "ab"
    fc.constant([0xbd, 0x06, 1, 2, 3, 4]), // 103: fixed32
  ),
  { maxLength: 3 },
);

Deno.test("decodeModelInferRequest reads what protobufjs writes (typed and raw contents, parameters, unknown fields skipped)", () => {
  fc.assert(
    fc.property(
      fc.array(tensor, { maxLength: 4 }),
      fc.boolean(),
      fc.string({ maxLength: 8 }),
      fc.dictionary(
        fc.string({ minLength: 1, maxLength: 4 }),
        fc.oneof(
          fc.record({ bool_param: fc.boolean() }),
          fc.record({ int64_param: fc.integer() }),
          fc.record({ string_param: fc.string({ maxLength: 4 }) }),
        ),
        { maxKeys: 3 },
      ),
      unknownFields,
      (tensors, raw, id, parameters, unknown) => {
        const inputs = tensors.map((t, i) => ({
          name: `in${i}`,
          datatype: t.datatype,
          shape: [t.values.length],
          ...(raw ? {} : {
            contents: {
              [TYPES[t.datatype]!.field]: t.values.map((v) =>
                pbValue(v, t.datatype)
              ),
            },
          }),
        }));
        const message = Request.encode(Request.fromObject({
          model_name: "m",
          model_version: "2",
          id,
          parameters,
          inputs,
          ...(raw
            ? {
              raw_input_contents: tensors.map((t) =>
                littleEndian(t.values, t.datatype)
              ),
            }
            : {}),
        })).finish();
        const bytes = new Uint8Array([...message, ...unknown.flat()]);
        const call = decodeModelInferRequest(bytes);
        assert.equal(call.name, "m");
        assert.equal(call.version, "2");
        assert.equal(call.raw, raw && tensors.length > 0);
        const header = JSON.parse(new TextDecoder().decode(call.header));
        if (id !== "") assert.equal(header.id, id);
        else assert.equal(header.id, undefined);
        assert.equal(header.parameters.binary_data_output, true);
        for (const [k, v] of Object.entries(parameters)) {
          if (k === "binary_data_output") continue;
          assert.deepEqual(header.parameters[k], Object.values(v)[0]);
        }
        tensors.forEach((t, i) => {
          const input = header.inputs[i];
          assert.equal(input.name, `in${i}`);
          assert.equal(input.datatype, t.datatype);
          assert.deepEqual(input.shape, [t.values.length]);
          assert.equal(
            input.parameters.binary_data_size,
            call.binary[i]!.byteLength,
          );
          const back = decodeBinaryTensor(
            call.binary[i]!,
            t.datatype as Datatype,
            t.values.length,
          );
          assert.deepEqual(
            back,
            t.values.map((v) => expected(v, t.datatype)),
          );
        });
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("encodeModelInferResponse writes what protobufjs reads (typed contents, raw_output_contents)", () => {
  fc.assert(
    fc.property(
      fc.array(tensor, { maxLength: 4 }),
      fc.boolean(),
      fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
      (tensors, raw, id) => {
        const chunks = tensors.map((t) => littleEndian(t.values, t.datatype));
        const header = {
          model_name: "m",
          model_version: "3",
          ...(id === undefined ? {} : { id }),
          outputs: tensors.map((t, i) => ({
            name: `out${i}`,
            datatype: t.datatype,
            shape: [t.values.length, 1],
            parameters: { binary_data_size: chunks[i]!.byteLength },
          })),
        };
        const binary = new Uint8Array(chunks.flatMap((c) => [...c]));
        const decoded = Response.toObject(
          Response.decode(encodeModelInferResponse(header, binary, raw)),
          { longs: String, bytes: Array, defaults: true },
        );
        assert.equal(decoded.model_name, "m");
        assert.equal(decoded.model_version, "3");
        assert.equal(decoded.id, id ?? "");
        tensors.forEach((t, i) => {
          const out = decoded.outputs[i];
          assert.equal(out.name, `out${i}`);
          assert.equal(out.datatype, t.datatype);
          assert.deepEqual(out.shape, [String(t.values.length), "1"]);
          if (raw) {
            assert.deepEqual(decoded.raw_output_contents[i], [...chunks[i]!]);
            return;
          }
          const got = out.contents?.[TYPES[t.datatype]!.field] ?? [];
          const want = t.values.map((v) =>
            typeof v === "bigint"
              ? String(v)
              : t.datatype === "BYTES"
              ? [...new TextEncoder().encode(v as string)]
              : t.datatype === "FP32"
              ? Math.fround(v as number)
              : v
          );
          assert.deepEqual(got, want);
        });
        if (!raw) assert.deepEqual(decoded.raw_output_contents, []);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("decodeModelInferRequest refuses truncated, lying and bad bytes with a ProtobufError or GrpcMessageError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decodeModelInferRequest(bytes);
      } catch (err) {
        assert.ok(
          err instanceof ProtobufError || err instanceof GrpcMessageError,
          String(err),
        );
      }
    }),
    { numRuns: 2000 },
  );
  const good = Request.encode(Request.fromObject({
    model_name: "m",
    inputs: [{
      name: "a",
      datatype: "FP32",
      shape: [2],
      contents: { fp32_contents: [1, 2] },
    }],
  })).finish();
  // Every cut but after model_name (3 bytes: a whole message) is truncated.
  for (let cut = 1; cut < good.length; cut++) {
    if (cut === 3) continue;
    assert.throws(
      () => decodeModelInferRequest(good.subarray(0, cut)),
      ProtobufError,
    );
  }
});

/**
 * Declared input constraints through a real gateway and a real Python
 * worker: a bad body is a 400 listing every bad field (nested paths), a
 * valid one reaches the model; `/openapi.json`, `GET /v1/models` and the
 * example body carry the constraints; a bad declaration fails the load.
 */
import assert from "node:assert/strict";
import { startGateway } from "./_gateway_harness.ts";

const MODEL = `class Ranker:
    """Ranks points."""

    inputs = {
        "p": {"type": "number", "minimum": 0, "maximum": 1, "description": "a probability"},
        "mode": {"enum": ["fast", "exact"]},
        "name": {"type": "string", "maxLength": 20, "pattern": "^[a-z]+(-[a-z]+)*$"},
        "points": {
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "items": {
                "type": "object",
                "properties": {"x": {"type": "integer", "minimum": 0}, "label": "string?"},
                "additionalProperties": False,
            },
        },
        "note": "string?",
    }

    def execute(self, msg):
        return {"n": len(msg["points"]), "mode": msg["mode"]}
`;

const post = (body: unknown): RequestInit => ({
  method: "POST",
  body: typeof body === "string" ? body : JSON.stringify(body),
});

Deno.test("Gateway checks declared input constraints before the call", async (t) => {
  await using gw = await startGateway({
    allowManage: true,
    limits: { shutdownGrace: 2000, bodyLimit: 16 << 20 },
  }, {
    "ranker.py": MODEL,
  });
  const valid = {
    p: 0.5,
    mode: "fast",
    name: "red-green",
    points: [{ x: 1 }, { x: 2, label: "b" }],
  };

  await t.step("a valid body reaches the model", async () => {
    const res = await gw.fetch("/v1/models/ranker/execute", post(valid));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { n: 2, mode: "fast" });
  });

  await t.step("a bad body is a 400 listing every bad field", async () => {
    const res = await gw.fetch(
      "/v1/models/ranker/execute",
      post({
        p: 1.5,
        mode: "slow",
        name: "Red",
        points: [{ x: 1 }, { x: -1 }, { x: "2", y: 0 }],
      }),
    );
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.type, "ValidationError");
    assert.deepEqual(error.fields, [
      {
        path: ["p"],
        message: "expected at most 1",
        expected: "number",
        received: "number",
      },
      {
        path: ["mode"],
        message: 'expected one of "fast", "exact"',
        expected: "any",
        received: "string",
      },
      {
        path: ["name"],
        message: 'expected to match the pattern "^[a-z]+(-[a-z]+)*$"',
        expected: "string",
        received: "string",
      },
      {
        path: ["points", 1, "x"],
        message: "expected at least 0",
        expected: "integer",
        received: "number",
      },
      {
        path: ["points", 2, "x"],
        message: "expected an integer",
        expected: "integer",
        received: "string",
      },
      {
        path: ["points", 2, "y"],
        message: "is not allowed (not a declared field)",
        expected: "missing",
        received: "number",
      },
    ]);
    assert.match(
      error.message,
      /^Cannot execute model 'ranker': p: expected at most 1; /,
    );
    // An integer beyond ±2^53 arrives as a BigInt: compared exactly.
    const big = await gw.fetch(
      "/v1/models/ranker/execute",
      post(
        `{"p": 0, "mode": "fast", "name": "a", "points": [{"x": -123456789012345678901234567890}]}`,
      ),
    );
    assert.equal(big.status, 400);
    assert.deepEqual(
      (await big.json()).error.fields.map((f: { path: unknown }) => f.path),
      [["points", 0, "x"]],
    );
    // A million items against maxItems: one problem, no walk.
    const many = await gw.fetch(
      "/v1/models/ranker/execute",
      post({ ...valid, points: new Array(1_000_000).fill({ x: 1 }) }),
    );
    assert.equal(many.status, 400);
    assert.deepEqual((await many.json()).error.fields, [{
      path: ["points"],
      message: "expected at most 100 items",
      expected: "array",
      received: "array",
    }]);
  });

  await t.step("a stream's body is checked the same way", async () => {
    const res = await gw.fetch(
      "/v1/models/ranker/stream",
      post({ ...valid, p: -1 }),
    );
    assert.equal(res.status, 400);
    assert.deepEqual((await res.json()).error.fields[0].path, ["p"]);
  });

  await t.step(
    "GET /v1/models and /openapi.json show the constraints",
    async () => {
      const { models } = await (await gw.fetch("/v1/models")).json();
      const ranker = models.find((m: { name: string }) => m.name === "ranker");
      assert.deepEqual(ranker.inputs.p, {
        type: "number",
        minimum: 0,
        maximum: 1,
        description: "a probability",
      });
      const doc = await (await gw.fetch("/openapi.json")).json();
      const body = doc.paths["/v1/models/ranker/execute"].post.requestBody
        .content["application/json"];
      assert.deepEqual(body.schema.properties.p, ranker.inputs.p);
      assert.deepEqual(body.schema.properties.points.items.properties.x, {
        type: "integer",
        minimum: 0,
      });
      assert.deepEqual(body.schema.required, ["p", "mode", "name", "points"]);
      // The documented example passes: sent as is, the model answers.
      const example = body.example ?? body.examples?.default?.value;
      assert.notEqual(example, undefined);
      const res = await gw.fetch("/v1/models/ranker/execute", post(example));
      assert.equal(res.status, 200, JSON.stringify(example));
      assert.deepEqual(await res.json(), { n: 1, mode: "fast" });
    },
  );

  await t.step(
    "a declaration outside the subset fails the load, naming field and keyword",
    async () => {
      await Deno.writeTextFile(
        `${gw.dir}/loose.py`,
        MODEL.replace('"maxLength": 20', '"maxLength": 20, "format": "email"'),
      );
      const res = await gw.fetch("/v1/models/loose", {
        method: "PUT",
        body: JSON.stringify({ file: "loose.py" }),
      });
      assert.equal(res.status, 422);
      const { error } = await res.json();
      assert.equal(error.type, "ModelLoadError");
      assert.match(
        error.message,
        /Cannot load model class Ranker: inputs: name: unsupported keyword 'format'/,
      );
    },
  );
});

// Declared input constraints through the gateway under Bun: a 400 with
// nested fields (an integer beyond ±2^53 compared exactly: Bun's body
// parsing keeps it a BigInt too), and a valid body reaching the model.
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";

const RANKER = `class Ranker:
    inputs = {
        "p": {"type": "number", "minimum": 0, "maximum": 1},
        "mode": {"enum": ["fast", "exact"]},
        "points": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0}}},
        },
    }

    def execute(self, msg):
        return {"n": len(msg["points"])}
`;

test(
  "gateway on Bun: declared constraints are a 400 with nested fields; a valid body reaches the model",
  async () => {
    await withGateway({ "ranker.py": RANKER }, {}, async (server) => {
      const url = `${server.url}/v1/models/ranker/execute`;
      const bad = await fetch(url, {
        method: "POST",
        body:
          '{"p": 2, "mode": "slow", "points": [{"x": 1}, {"x": -123456789012345678901234567890}]}',
      });
      expect(bad.status).toBe(400);
      const { error } = await bad.json();
      expect(error.type).toBe("ValidationError");
      expect(
        error.fields.map((f: { path: unknown[]; message: string }) => [
          f.path,
          f.message,
        ]),
      ).toEqual([
        [["p"], "expected at most 1"],
        [["mode"], 'expected one of "fast", "exact"'],
        [["points", 1, "x"], "expected at least 0"],
      ]);
      const ok = await fetch(url, {
        method: "POST",
        body: JSON.stringify({ p: 0.5, mode: "fast", points: [{ x: 1 }] }),
      });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ n: 1 });
    });
  },
);

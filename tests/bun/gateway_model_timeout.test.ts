// Per-model timeouts on the gateway's direct execute path under Bun: a
// model's models[].timeout replaces limits.requestTimeout for its calls
// (above or below it), ?timeout= only lowers it, GET /v1/models shows it.
import { expect, test } from "bun:test";
import { withGateway } from "./_helpers.ts";

const SLOW = `import time
class Slow:
    def execute(self, msg):
        time.sleep(msg.get("seconds", 0))
        return {"slept": msg.get("seconds", 0)}
`;

test(
  "serve() on Bun: a model's timeout is its calls' default and limit",
  async () => {
    await withGateway({ "slow.py": SLOW }, {
      limits: { requestTimeout: 400 },
      models: [
        { name: "tight", file: "slow.py", timeout: 150 },
        { name: "image", file: "slow.py", timeout: 10_000 },
        { name: "plain", file: "slow.py" },
      ],
    }, async (server) => {
      const call = async (path: string, seconds: number) => {
        const t0 = Date.now();
        const res = await fetch(`${server.url}${path}`, {
          method: "POST",
          body: JSON.stringify({ seconds }),
        });
        await res.body?.cancel();
        return { status: res.status, ms: Date.now() - t0 };
      };
      const tight = await call("/v1/models/tight/execute", 2);
      expect(tight.status).toBe(504);
      expect(tight.ms).toBeLessThan(1500);
      expect((await call("/v1/models/plain/execute", 0.05)).status).toBe(200);
      expect((await call("/v1/models/image/execute", 0.8)).status).toBe(200);
      expect((await call("/v1/models/plain/execute", 2)).status).toBe(504);
      expect((await call("/v1/models/image/execute?timeout=150", 2)).status)
        .toBe(504);
      const raised = await call("/v1/models/tight/execute?timeout=10000", 2);
      expect(raised.status).toBe(504);
      expect(raised.ms).toBeLessThan(1500);
      const { models } = await (await fetch(`${server.url}/v1/models`))
        .json() as {
          models: Array<
            { name: string; timeout: number; timeoutSource: string }
          >;
        };
      expect(models.map((m) => [m.name, m.timeout, m.timeoutSource])).toEqual([
        ["tight", 150, "spec"],
        ["image", 10_000, "spec"],
        ["plain", 400, "default"],
      ]);
    });
  },
  30_000,
);

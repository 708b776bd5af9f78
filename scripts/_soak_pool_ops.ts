// The soak's requests to a library Pool (scripts/soak.ts): each returns its
// outcome as a string for the ledger (scripts/_soak_ledger.ts).
import type { Pool } from "../src/pool.ts";
import { allow } from "./_soak_ledger.ts";
import type { OpKind } from "./_soak_traffic.ts";

/** The library pool's request kinds. */
export function poolOps(pool: Pool): OpKind[] {
  const CALL_OK = allow(
    "ok",
    "throw:WorkerCrashedError",
    "throw:ShuttingDownError",
    "throw:NoWorkerError",
    "throw:TimeoutError",
  );
  const big = "b".repeat(2_000_000);
  let i = 0;
  return [
    [8, "pool execute echo", CALL_OK, async (signal) => {
      const n = i++;
      const r = await pool.execute<{ n: number }>("echo", { n }, {
        signal,
        timeout: 5000,
      });
      return r.n === n ? "ok" : "wrong-result";
    }],
    [3, "pool execute batcher", CALL_OK, async (signal) => {
      const x = i++;
      const r = await pool.execute<{ y: number }>("batcher", { x }, {
        signal,
        timeout: 5000,
      });
      return r.y === 2 * x ? "ok" : "wrong-result";
    }],
    [3, "pool execute cache_counter", CALL_OK, async (signal) => {
      await pool.execute("cache_counter", { key: String(i++ % 20) }, {
        signal,
        timeout: 5000,
      });
      return "ok";
    }],
    [3, "pool big request (spilled)", CALL_OK, async (signal) => {
      const r = await pool.execute<{ len: number }>("big", { data: big }, {
        signal,
        timeout: 5000,
      });
      return r.len === big.length ? "ok" : "wrong-result";
    }],
    [
      2,
      "pool big request, abandoned",
      allow(
        "throw:CancelledError",
        "ok",
        "throw:WorkerCrashedError",
        "throw:NoWorkerError",
        "throw:ShuttingDownError",
      ),
      async () => {
        await pool.execute("big", { data: big }, {
          signal: AbortSignal.timeout(1 + Math.random() * 30),
          timeout: 5000,
        });
        return "ok";
      },
    ],
    [2, "pool big result (spilled)", CALL_OK, async (signal) => {
      const r = await pool.execute<{ data: string }>("big", { n: 2_000_000 }, {
        signal,
        timeout: 5000,
      });
      return r.data.length === 2_000_000 ? "ok" : "wrong-result";
    }],
    [3, "pool stream", CALL_OK, async (signal) => {
      let n = 0;
      for await (
        const _ of pool.executeStream("tokens", { n: 20 }, {
          signal,
          timeout: 5000,
        })
      ) n++;
      return n === 20 ? "ok" : `ok-after-${n}`;
    }],
    [
      2,
      "pool stream, abandoned",
      allow(
        "abandoned",
        "throw:WorkerCrashedError",
        "throw:NoWorkerError",
        "throw:ShuttingDownError",
        "throw:TimeoutError",
      ),
      async (signal) => {
        let n = 0;
        for await (
          const _ of pool.executeStream("tokens", { n: 200, delay: 0.005 }, {
            signal,
            timeout: 5000,
          })
        ) {
          if (++n === 3) break;
        }
        return "abandoned";
      },
    ],
    [
      2,
      "pool call timing out",
      allow(
        "throw:TimeoutError",
        "throw:WorkerCrashedError",
        "throw:NoWorkerError",
        "throw:ShuttingDownError",
      ),
      async () => {
        await pool.execute("slow", { seconds: 2 }, {
          timeout: 100 + Math.random() * 300,
        });
        return "ok";
      },
    ],
    [
      2,
      "pool call cancelled",
      allow(
        "throw:CancelledError",
        "throw:WorkerCrashedError",
        "throw:NoWorkerError",
        "throw:ShuttingDownError",
      ),
      async () => {
        await pool.execute("slow", { seconds: 2 }, {
          signal: AbortSignal.timeout(50 + Math.random() * 300),
          timeout: 5000,
        });
        return "ok";
      },
    ],
    [
      2,
      "pool eval",
      allow(
        "ok",
        "throw:CancelledError",
        "throw:WorkerCrashedError",
        "throw:NoWorkerError",
        "throw:ShuttingDownError",
        "throw:TimeoutError",
      ),
      async () => {
        const atom = pool.eval(
          "import time\nfor i in range(50):\n    print('e' * 200)\n    time.sleep(0.002)\n42",
          { timeout: 5000 },
        );
        if (Math.random() < 0.4) {
          setTimeout(
            () => atom.cancel(),
            Math.random() * 50,
          );
        }
        const v = await atom.result;
        await atom.stopped;
        return v === 42 ? "ok" : "wrong-result";
      },
    ],
  ];
}

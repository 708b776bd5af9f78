// The models the soak (scripts/soak.ts) serves, written into a temporary
// models directory: each one exercises a path whose resources must stay
// bounded over a long mixed run.

/** File name → Python source. */
export const SOAK_MODELS: Record<string, string> = {
  "echo.py": `
class Echo:
    def execute(self, msg):
        return msg
`,
  // A generator: n items of \`size\` characters, \`delay\` s apart.
  "tokens.py": `
import time


class Tokens:
    def execute(self, msg):
        n = int(msg.get("n", 20))
        pad = "x" * int(msg.get("size", 16))
        delay = float(msg.get("delay", 0))
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield {"i": i, "pad": pad}
`,
  // Dynamic batching: concurrent calls share one execute_batch.
  "batcher.py": `
class Batcher:
    batch_size = 8
    batch_delay_ms = 5

    def execute_batch(self, msgs):
        return [{"y": m.get("x", 0) * 2, "batch": len(msgs)} for m in msgs]
`,
  // Calls the host's shared cache (a host command per call, both ways).
  "cache_counter.py": `
from pyproxy import host


class CacheCounter:
    def execute(self, msg):
        key = "soak:" + str(msg.get("key", "k"))
        count = (host.cache.get(key) or 0) + 1
        host.cache.set(key, count, ttl=30)
        return {"count": count}
`,
  // Slow but interruptible: a cancel or timeout stops it within ~20 ms.
  "slow.py": `
import time


class Slow:
    def execute(self, msg):
        end = time.monotonic() + float(msg.get("seconds", 1))
        while time.monotonic() < end:
            time.sleep(0.02)
        return {"slept": msg.get("seconds", 1)}
`,
  // Large results (spilled past the 1 MiB threshold) and large requests.
  "big.py": `
class Big:
    def execute(self, msg):
        if "data" in msg:
            return {"len": len(msg["data"])}
        return {"data": "y" * int(msg.get("n", 0))}
`,
  // Publishes to a channel while it executes (host.publish).
  "publisher.py": `
from pyproxy import host


class Publisher:
    def execute(self, msg):
        return host.publish(msg.get("channel", "soak"), {"pad": "p" * int(msg.get("size", 100))})
`,
};

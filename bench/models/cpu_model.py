"""CPU-bound model used by the pool-scaling benchmark.

Each call spends about one millisecond in pure Python (the GIL is held the
whole time), so throughput can only grow by adding processes.
"""

__all__ = ["CpuModel"]


class CpuModel:
    """Sums squares in a pure Python loop; ``msg["n"]`` overrides the size."""

    # Loop length tuned to ~1 ms per call on the 2-core benchmark machine.
    DEFAULT_N = 11000

    def __init__(self, **options):
        self.n = int(options.get("n", self.DEFAULT_N))

    def execute(self, msg):
        n = int(msg.get("n", self.n)) if isinstance(msg, dict) else self.n
        total = 0
        for i in range(n):
            total += i * i
        return {"n": n, "total": total}

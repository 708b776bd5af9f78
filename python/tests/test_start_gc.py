"""A started server's cyclic garbage collector: on, with what the start made
frozen (``gc.freeze``), so neither the start nor each later full collection
traverses those ~20 000 objects; what models make is collected as before."""

import sysconfig
import unittest

from ._client import ServerProcess

# Run in the server by eval: the collector's state, the start's objects
# frozen, and a cycle made now still collected.
CHECK = """
import gc

class Node:
    pass

node = Node()
node.self = node
node = None  # a cycle, garbage now
[gc.isenabled(), gc.get_freeze_count(), gc.collect()]
"""


class StartGcTest(unittest.TestCase):
    def test_the_collector_is_on_and_the_start_s_objects_are_frozen(self):
        server = ServerProcess()
        try:
            c = server.connect()
            enabled, frozen, collected = c.call("eval", code=CHECK, timeout=10)["value"]
            self.assertTrue(enabled)
            # A free-threaded build (3.13t, not tested, docs/runtimes.md) may
            # count its frozen objects otherwise.
            if not sysconfig.get_config_var("Py_GIL_DISABLED"):
                self.assertGreater(frozen, 1000)
            self.assertGreater(collected, 0)  # the model's (eval's) cycle
        finally:
            server.kill()


if __name__ == "__main__":
    unittest.main()

"""A model's snapshot holds the helper modules it imported; a load given them
runs them instead of the files (protocol §6, "Snapshots")."""

import linecache
import os
import shutil
import sys
import tempfile
import traceback
import unittest

from pyproxy_server.errors import InvalidRequestError, ModelLoadError, PathError
from pyproxy_server.models import ModelRegistry

from ._client import ServerProcess

READS_UTIL = "import P_util\nclass A:\n    def execute(self, m):\n        return P_util.V\n"


class HelperSnapshotTest(unittest.TestCase):
    """In process: a registry on a root of its own, put on sys.path as the server does."""

    def setUp(self):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="pyproxy-snap-"))
        self.addCleanup(shutil.rmtree, self.root)
        sys.path.append(self.root)
        self.addCleanup(sys.path.remove, self.root)
        # Module names of this test only: the process imports them for real.
        self.p = "hs%d_" % id(self)
        self.addCleanup(self.restart)
        self.registry = ModelRegistry(self.root)

    def restart(self):
        """What a restarted server starts from: no helper imported, no model."""
        for name in [n for n in sys.modules if n.startswith(self.p)]:
            del sys.modules[name]
        self.registry = ModelRegistry(self.root)

    def name(self, text):
        return text.replace("P_", self.p)

    def write(self, rel, text):
        path = os.path.join(self.root, self.name(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(self.name(text))

    def call(self, name):
        return self.registry.get(name).execute({})

    def snapshot(self, desc):
        return {h["module"]: (h["file"], h["source"]) for h in desc["helpers"]}

    def test_a_snapshot_holds_the_helpers_imported_directly_and_through_others(self):
        self.write("P_util.py", "import json, P_deep\nV = 1\n")
        self.write("P_deep.py", "D = 1\n")
        self.write("P_lazy.py", "L = 1\n")
        self.write(
            "a.py",
            "import P_util\nclass A:\n    def execute(self, m):\n        import P_lazy\n"
            "        return [P_util.V, P_util.P_deep.D]\n",
        )
        desc = self.registry.add("a", {"file": "a.py", "snapshot": True})
        self.assertIn("import P_lazy", self.name(desc["source"]).replace(self.p, "P_"))
        self.assertEqual(
            self.snapshot(desc),
            {
                self.p + "util": (self.p + "util.py", self.name("import json, P_deep\nV = 1\n")),
                self.p + "deep": (self.p + "deep.py", "D = 1\n"),
            },
        )
        # Imports run by calls, after the load, are not part of it.
        self.assertEqual(self.call("a"), [1, 1])
        # Without `snapshot`, no `helpers` (nor `source`).
        self.assertNotIn("helpers", self.registry.update("a", {"file": "a.py"}))

    def test_packages_and_relative_imports(self):
        self.write("P_pkg/__init__.py", "from . import consts\n")
        self.write("P_pkg/consts.py", "C = 1\n")
        self.write("P_pkg/util.py", "from .consts import C\nV = 1\n")
        self.write("P_ns/part.py", "N = 1\n")  # a namespace package: no source of its own
        model = (
            "from .util import V\nfrom . import util\nimport P_ns.part\nclass M:\n"
            "    def execute(self, m):\n        return [V, util.C, P_ns.part.N]\n"
        )
        self.write("P_pkg/model.py", model)
        desc = self.registry.add("m", {"file": self.p + "pkg/model.py", "snapshot": True})
        helpers = self.snapshot(desc)
        self.assertEqual(
            sorted(helpers),
            sorted(self.p + n for n in ("pkg", "pkg.consts", "pkg.util", "ns.part")),
        )
        self.assertEqual(helpers[self.p + "pkg"], (self.p + "pkg/__init__.py", "from . import consts\n"))
        self.assertEqual(helpers[self.p + "ns.part"], (self.p + "ns/part.py", "N = 1\n"))
        self.assertEqual(self.call("m"), [1, 1, 1])
        # A restarted server given the snapshot runs it, whatever the files hold.
        self.write("P_pkg/__init__.py", "raise RuntimeError('edited')\n")
        self.write("P_pkg/consts.py", "C = 2\n")
        self.write("P_pkg/util.py", "from .consts import C\nV = 2\n")
        self.write("P_ns/part.py", "N = 2\n")
        self.restart()
        again = self.registry.add(
            "m", {"file": self.p + "pkg/model.py", "source": desc["source"], "helpers": desc["helpers"], "snapshot": True})
        self.assertEqual(self.call("m"), [1, 1, 1])
        self.assertEqual(again["helpers"], desc["helpers"])

    def test_given_helpers_are_loaded_instead_of_the_files(self):
        self.write("P_util.py", "V = 1\n")
        self.write("a.py", READS_UTIL)
        first = self.registry.add("a", {"file": "a.py", "snapshot": True})
        self.write("P_util.py", "V = 2\n")
        # An update reads the files afresh...
        second = self.registry.update("a", {"file": "a.py", "snapshot": True})
        self.assertEqual(self.call("a"), 2)
        self.assertEqual(self.snapshot(second)[self.p + "util"][1], "V = 2\n")
        # ...an update given the old snapshot (a host's rollback) runs it.
        rolled = self.registry.update(
            "a", {"file": "a.py", "source": first["source"], "helpers": first["helpers"], "snapshot": True})
        self.assertEqual(self.call("a"), 1)
        self.assertEqual(rolled["helpers"], first["helpers"])
        # A file deleted since is no obstacle.
        os.unlink(os.path.join(self.root, self.p + "util.py"))
        self.restart()
        self.registry.add("a", {"file": "a.py", "source": first["source"], "helpers": first["helpers"]})
        self.assertEqual(self.call("a"), 1)

    def test_a_traceback_through_a_given_helper_shows_the_lines_that_ran(self):
        self.write("P_boom.py", "def f():\n    raise ValueError('snapshot line')\n")
        self.write("a.py", "import P_boom\nclass A:\n    def execute(self, m):\n        return P_boom.f()\n")
        first = self.registry.add("a", {"file": "a.py", "snapshot": True})
        path = os.path.join(self.root, self.p + "boom.py")
        self.addCleanup(linecache.cache.pop, path, None)
        # The file is edited on disk; a restarted server is given the snapshot.
        self.write("P_boom.py", "def f():\n    return 'disk line'\n")
        self.restart()
        self.registry.add("a", {"file": "a.py", "source": first["source"], "helpers": first["helpers"]})
        try:
            self.call("a")
            self.fail("expected the snapshot's ValueError")
        except ValueError:
            shown = traceback.format_exc()
        self.assertIn("raise ValueError('snapshot line')", shown)
        self.assertNotIn("disk line", shown)
        # Loaded afresh from the file, its lines are the file's again.
        self.registry.update("a", {"file": "a.py"})
        self.write("P_boom.py", "def f():\n    raise KeyError('k')\n")
        self.registry.update("a", {"file": "a.py"})
        try:
            self.call("a")
            self.fail("expected the file's KeyError")
        except KeyError:
            shown = traceback.format_exc()
        self.assertIn("raise KeyError('k')", shown)

    def test_a_model_sent_as_source_has_helpers_too(self):
        self.write("P_util.py", "V = 1\n")
        desc = self.registry.add("s", {"source": self.name(READS_UTIL), "snapshot": True})
        self.assertNotIn("source", desc)
        self.assertEqual(self.snapshot(desc), {self.p + "util": (self.p + "util.py", "V = 1\n")})
        self.write("P_util.py", "V = 2\n")
        self.restart()
        self.registry.add("s", {"source": self.name(READS_UTIL), "helpers": desc["helpers"]})
        self.assertEqual(self.call("s"), 1)

    def test_an_add_snapshots_the_cached_copy_it_binds(self):
        self.write("P_util.py", "V = 1\n")
        self.write("a.py", READS_UTIL)
        self.registry.add("a", {"file": "a.py"})
        self.write("P_util.py", "V = 2\n")
        # A model of a new name shares the copy loaded: the snapshot says so.
        desc = self.registry.add("b", {"file": "a.py", "snapshot": True})
        self.assertEqual(self.call("b"), 1)
        self.assertEqual(self.snapshot(desc)[self.p + "util"][1], "V = 1\n")

    def test_a_helper_first_imported_outside_a_model_load_is_loaded_afresh(self):
        self.write("P_util.py", "V = 1\n")
        self.write("lazy.py", "class L:\n    def execute(self, m):\n        import P_util\n        return P_util.V\n")
        self.registry.add("lazy", {"file": "lazy.py"})
        self.assertEqual(self.call("lazy"), 1)  # imported by a call: its source was not kept
        self.write("P_util.py", "V = 2\n")
        self.write("a.py", READS_UTIL)
        desc = self.registry.add("a", {"file": "a.py", "snapshot": True})
        self.assertEqual([self.call("a"), self.snapshot(desc)[self.p + "util"][1]], [2, "V = 2\n"])

    def test_two_models_sharing_a_helper_each_replay_their_own_version(self):
        self.write("P_util.py", "V = 1\nSTATE = []\n")
        self.write("a.py", READS_UTIL)
        self.write(
            "b.py",
            "import P_util\nclass B:\n    def execute(self, m):\n"
            "        P_util.STATE.append(1)\n        return [P_util.V, len(P_util.STATE)]\n",
        )
        self.write("c.py", READS_UTIL.replace("class A", "class C"))
        snaps = {name: self.registry.add(name, {"file": name + ".py", "snapshot": True}) for name in ("a", "b", "c")}
        self.assertEqual(self.call("b"), [1, 1])
        self.write("P_util.py", "V = 2\nSTATE = []\n")
        snaps["a"] = self.registry.update("a", {"file": "a.py", "snapshot": True})
        self.assertEqual([self.call("a"), self.call("b"), self.call("c")], [2, [1, 2], 1])
        self.restart()
        for name in ("a", "b", "c"):
            self.registry.add(name, {"file": name + ".py", "source": snaps[name]["source"],
                                     "helpers": snaps[name]["helpers"]})
        self.assertEqual([self.call("a"), self.call("b"), self.call("c")], [2, [1, 1], 1])
        # b and c were given the same helper: they share one copy, as they
        # did before the restart.
        self.assertEqual(self.call("b"), [1, 2])
        self.assertIs(self.registry.get("b").instance.execute.__globals__[self.p + "util"],
                      self.registry.get("c").instance.execute.__globals__[self.p + "util"])

    def test_given_helpers_stay_in_the_models_directory(self):
        self.write("a.py", READS_UTIL)
        good = {"module": self.p + "util", "file": self.p + "util.py", "source": "V = 1\n"}
        for helpers, error, text in (
            ([dict(good, file="../outside.py")], PathError, "outside"),
            ([dict(good, file="/etc/passwd.py")], PathError, "outside"),
            ([dict(good, file="util.txt")], InvalidRequestError, "is not a .py file"),
            ([dict(good, module="a-b")], InvalidRequestError, "helpers[0] must be"),
            ([dict(good, source=None)], InvalidRequestError, "helpers[0] must be"),
            ([good, good], InvalidRequestError, "given twice"),
            ({"x": good}, InvalidRequestError, "'helpers' must be a list"),
        ):
            with self.subTest(helpers=helpers):
                with self.assertRaises(error) as caught:
                    self.registry.add("a", {"file": "a.py", "helpers": helpers})
                self.assertIn(text, str(caught.exception))
        self.assertEqual(len(self.registry), 0)
        # A name found outside the models directory is that module, given or not.
        self.write("j.py", "import json\nclass J:\n    def execute(self, m):\n        return json.dumps(1)\n")
        self.registry.add("j", {"file": "j.py", "helpers": [{"module": "json", "file": "json.py", "source": "x = 1\n"}]})
        self.assertEqual(self.call("j"), "1")

    def test_a_snapshot_over_its_bounds_fails_the_load(self):
        self.write("P_util.py", "V = 1\n")
        self.write("P_big.py", "DATA = %r\n" % ("x" * 200))
        self.write("a.py", READS_UTIL)
        self.registry.add("a", {"file": "a.py"})
        self.write("a.py", "import P_big\n" + READS_UTIL)
        self.write("P_util.py", "V = 2\n")
        self.registry.MAX_SNAPSHOT_CHARS = 100
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.update("a", {"file": "a.py", "snapshot": True})
        self.assertIn("Cannot snapshot model 'a': its 2 helper modules hold 216 characters of source", str(caught.exception))
        self.assertEqual([self.registry.get("a").version, self.call("a")], [1, 1])
        self.assertNotIn(self.p + "big", sys.modules)
        # Without a snapshot asked, no bound.
        self.registry.update("a", {"file": "a.py"})
        self.assertEqual(self.call("a"), 2)
        self.registry.MAX_SNAPSHOT_HELPERS = 1
        with self.assertRaises(InvalidRequestError):
            self.registry.update("a", {"file": "a.py", "helpers": [
                {"module": self.p + n, "file": self.p + n + ".py", "source": ""} for n in ("util", "big")]})


class HelperSnapshotServerTest(unittest.TestCase):
    """Over the wire: addModel's `helpers` reply, and a new server given them."""

    def test_a_new_server_given_the_helpers_runs_them(self):
        root = tempfile.mkdtemp(prefix="pyproxy-snap-server-")
        self.addCleanup(shutil.rmtree, root)

        def write(rel, text):
            with open(os.path.join(root, rel), "w") as f:
                f.write(text)

        write("snap_util.py", "V = 1\n")
        write("a.py", "import snap_util\nclass A:\n    def execute(self, m):\n        return snap_util.V\n")
        servers = []
        try:
            servers.append(ServerProcess(root=root))
            client = servers[0].connect()
            desc = client.call("addModel", name="a", file="a.py", snapshot=True)
            self.assertEqual(desc["helpers"], [{"module": "snap_util", "file": "snap_util.py", "source": "V = 1\n"}])
            write("snap_util.py", "V = 2\n")
            servers.append(ServerProcess(root=root))
            other = servers[1].connect()
            other.call("addModel", name="a", file="a.py", source=desc["source"], helpers=desc["helpers"])
            self.assertEqual(other.call("executeModel", name="a", msg={}), 1)
            reply = other.request("addModel", name="b", file="a.py",
                                  helpers=[{"module": "snap_util", "file": "../x.py", "source": ""}])
            self.assertEqual(reply["error"]["type"], "PathError")
        finally:
            for server in servers:
                server.kill()


if __name__ == "__main__":
    unittest.main()

"""An update loads fresh copies of the helper modules the model imports."""

import builtins
import os
import py_compile
import shutil
import sys
import tempfile
import threading
import time
import types
import unittest

from pyproxy_server.errors import CancelledError, ModelLoadError
from pyproxy_server.models import ModelRegistry

from ._client import ServerProcess


class FreshHelpersTest(unittest.TestCase):
    """In process: a registry on a root of its own, put on sys.path as the server does."""

    def setUp(self):
        self.root = os.path.realpath(tempfile.mkdtemp(prefix="pyproxy-fresh-"))
        self.addCleanup(shutil.rmtree, self.root)
        sys.path.append(self.root)
        self.addCleanup(sys.path.remove, self.root)
        # Module names of this test only: the process imports them for real.
        self.p = "fh%d_" % id(self)
        self.addCleanup(self._forget)
        self.registry = ModelRegistry(self.root)

    def _forget(self):
        for name in [n for n in sys.modules if n.startswith(self.p)]:
            del sys.modules[name]

    def write(self, rel, text):
        path = os.path.join(self.root, rel.replace("P_", self.p))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text.replace("P_", self.p))

    def call(self, name):
        return self.registry.get(name).execute({})

    def test_update_reloads_helpers_imported_directly_and_indirectly(self):
        self.write("P_util.py", "import P_deep\nV = 1\ndef f():\n    return [V, P_deep.D]\n")
        self.write("P_deep.py", "D = 1\n")
        self.write("a.py", "import P_util\nclass A:\n    def execute(self, m):\n        return P_util.f()\n")
        self.registry.add("a", {"file": "a.py"})
        old = self.registry.get("a")
        self.write("P_util.py", "import P_deep\nV = 2\ndef f():\n    return [V, P_deep.D]\n")
        self.write("P_deep.py", "D = 2\n")
        self.assertEqual(self.registry.update("a", {"file": "a.py"})["version"], 2)
        self.assertEqual(self.call("a"), [2, 2])
        # A call that holds the old version (one in flight) runs the old helpers.
        self.assertEqual(old.execute({}), [1, 1])
        # An add that replaces the model reloads them too.
        self.write("P_deep.py", "D = 3\n")
        self.registry.add("a", {"file": "a.py"})
        self.assertEqual(self.call("a"), [2, 3])

    def test_an_edit_within_the_same_second_at_the_same_size_is_seen(self):
        # A .pyc carries the file's mtime in seconds and its size: both
        # match, only the content changed. Helpers loaded by a model load
        # never use bytecode.
        self.write("P_util.py", "V = 1\n")
        self.write("a.py", "import P_util\nclass A:\n    def execute(self, m):\n        return P_util.V\n")
        path = os.path.join(self.root, self.p + "util.py")
        py_compile.compile(path, doraise=True)
        self.registry.add("a", {"file": "a.py"})
        stat = os.stat(path)
        self.write("P_util.py", "V = 2\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        py_compile.compile(path, doraise=True)  # a stale .pyc, as another import might write
        self.write("P_util.py", "V = 3\n")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        self.registry.update("a", {"file": "a.py"})
        self.assertEqual(self.call("a"), 3)

    def test_a_helper_shared_with_another_model_keeps_its_version_there(self):
        self.write("P_util.py", "V = 1\n")
        self.write("a.py", "import P_util\nclass A:\n    def execute(self, m):\n        return P_util.V\n")
        self.write("b.py", "from P_util import V\nclass B:\n    def execute(self, m):\n        return V\n")
        self.write(
            "lazy.py",
            "class Lazy:\n    def execute(self, m):\n        import P_util\n        return P_util.V\n",
        )
        for name in ("a", "b", "lazy"):
            self.registry.add(name, {"file": name + ".py"})
        self.write("P_util.py", "V = 2\n")
        self.registry.update("a", {"file": "a.py"})
        self.assertEqual(self.call("a"), 2)
        # B bound the module (or its names) when it loaded: it keeps version 1
        # until it is updated itself...
        self.assertEqual(self.call("b"), 1)
        # ...but a plain import, here inside execute, sees the newest copy loaded.
        self.assertEqual(self.call("lazy"), 2)
        self.assertEqual(sys.modules[self.p + "util"].V, 2)
        # A model added afterwards shares that copy; its add reloads nothing.
        shared = sys.modules[self.p + "util"]
        self.write("P_util.py", "V = 3\n")
        self.registry.add("c", {"file": "b.py"})
        self.assertEqual(self.call("c"), 2)
        self.assertIs(sys.modules[self.p + "util"], shared)
        self.registry.update("b", {"file": "b.py"})
        self.assertEqual(self.call("b"), 3)

    def test_packages_and_relative_imports(self):
        self.write("P_pkg/__init__.py", "from . import consts\n")
        self.write("P_pkg/consts.py", "C = 1\n")
        self.write("P_pkg/util.py", "from .consts import C\nV = 1\n")
        self.write(
            "P_pkg/model.py",
            "from .util import V\nfrom . import util\nimport P_pkg.consts\nclass M:\n"
            "    def execute(self, m):\n        return [V, util.C, P_pkg.consts.C]\n",
        )
        self.registry.add("m", {"file": self.p + "pkg/model.py"})
        self.assertEqual(self.call("m"), [1, 1, 1])
        old_package = sys.modules[self.p + "pkg"]
        self.write("P_pkg/consts.py", "C = 2\n")
        self.write("P_pkg/util.py", "from .consts import C\nV = 2\n")
        self.registry.update("m", {"file": self.p + "pkg/model.py"})
        self.assertEqual(self.call("m"), [2, 2, 2])
        package = sys.modules[self.p + "pkg"]
        self.assertIsNot(package, old_package)
        self.assertIs(package.util, sys.modules[self.p + "pkg.util"])
        # The old package object still holds the old submodules.
        self.assertEqual(old_package.consts.C, 1)

    def test_a_fresh_package_still_reaches_the_submodules_this_load_does_not_import(self):
        self.write("P_pkg/__init__.py", "")
        self.write("P_pkg/util.py", "V = 1\n")
        self.write("P_pkg/other.py", "W = 1\n")
        self.write("a.py", "import P_pkg.util\nclass A:\n    def execute(self, m):\n        return P_pkg.util.V\n")
        self.write(
            "b.py",
            "class B:\n    def execute(self, m):\n        import P_pkg.other\n        return P_pkg.other.W\n",
        )
        self.registry.add("a", {"file": "a.py"})
        self.registry.add("b", {"file": "b.py"})
        self.assertEqual(self.call("b"), 1)
        self.write("P_pkg/util.py", "V = 2\n")
        self.registry.update("a", {"file": "a.py"})
        self.assertEqual(self.call("a"), 2)
        # `import P_pkg.other` binds the fresh package: it must hold `other`.
        self.assertEqual(self.call("b"), 1)

    def test_a_namespace_package_in_the_root_is_a_helper(self):
        self.write("P_ns/helper.py", "V = 1\n")
        self.write("a.py", "import P_ns.helper\nclass A:\n    def execute(self, m):\n        return P_ns.helper.V\n")
        self.registry.add("a", {"file": "a.py"})
        self.write("P_ns/helper.py", "V = 2\n")
        self.registry.update("a", {"file": "a.py"})
        self.assertEqual(self.call("a"), 2)

    def test_a_helper_that_fails_to_import_fails_the_update_and_the_old_one_stays(self):
        self.write("P_util.py", "V = 1\n")
        self.write("a.py", "import json\nimport P_util\nclass A:\n    def execute(self, m):\n        return P_util.V\n")
        self.registry.add("a", {"file": "a.py"})
        before = sys.modules[self.p + "util"]
        self.write("P_new.py", "N = 1\n")
        self.write("P_util.py", "import P_new\nV = 2\nraise RuntimeError('half-edited')\n")
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.update("a", {"file": "a.py"})
        self.assertEqual(
            str(caught.exception),
            "Cannot load model 'a': RuntimeError: half-edited (%sutil.py, line 3; from a.py, line 2)" % self.p,
        )
        self.assertEqual(self.registry.get("a").version, 1)
        self.assertEqual(self.call("a"), 1)
        self.assertIs(sys.modules[self.p + "util"], before)
        # A helper imported for the first time by the failed update is
        # imported again next time.
        self.assertNotIn(self.p + "new", sys.modules)
        # A SyntaxError names the helper's line itself.
        self.write("P_util.py", "V = (\n")
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.update("a", {"file": "a.py"})
        self.assertRegex(
            str(caught.exception),
            r"^Cannot load model 'a': SyntaxError: .* \(%sutil\.py, line 1\) \(from a\.py, line 2\)$" % self.p,
        )
        self.assertIs(sys.modules[self.p + "util"], before)
        self.write("P_util.py", "V = 3\n")
        self.registry.update("a", {"file": "a.py"})
        self.assertEqual(self.call("a"), 3)

    def test_an_update_cancelled_while_it_loaded_puts_the_old_helpers_back(self):
        self.write("P_util.py", "V = 1\n")
        self.write("a.py", "import P_util\nclass A:\n    def execute(self, m):\n        return P_util.V\n")
        self.registry.add("a", {"file": "a.py"})
        before = sys.modules[self.p + "util"]
        self.write("P_util.py", "V = 2\n")
        with self.assertRaises(CancelledError):
            self.registry.update("a", {"file": "a.py"}, cancelled=lambda: True)
        self.assertIs(sys.modules[self.p + "util"], before)
        self.assertIs(builtins.__import__, builtins.__dict__["__import__"])
        self.assertEqual(self.call("a"), 1)

    def test_modules_outside_the_models_directory_are_never_reloaded(self):
        # A directory on sys.path inside the models directory (a virtual
        # environment's site-packages, say) is not the models directory.
        os.makedirs(os.path.join(self.root, "vendor"))
        sys.path.append(os.path.join(self.root, "vendor"))
        self.addCleanup(sys.path.remove, os.path.join(self.root, "vendor"))
        self.write("vendor/P_vendored.py", "V = 1\n")
        self.write(
            "a.py",
            "import json, email.mime.text, P_vendored\nimport pyproxy\nclass A:\n"
            "    def execute(self, m):\n        return P_vendored.V\n",
        )
        self.registry.add("a", {"file": "a.py"})
        kept = {name: sys.modules[name] for name in ("json", "email.mime.text", self.p + "vendored", "pyproxy")}
        self.write("vendor/P_vendored.py", "V = 2\n")
        self.registry.update("a", {"file": "a.py"})
        for name, module in kept.items():
            self.assertIs(sys.modules[name], module, name)
        self.assertEqual(self.call("a"), 1)

    def test_the_import_hook_is_there_only_while_a_model_loads(self):
        original = builtins.__import__
        meta_path = list(sys.meta_path)
        self.write("P_util.py", "import builtins\nHOOKED = builtins.__import__\n")
        self.write(
            "a.py",
            "import builtins, P_util\nclass A:\n    def execute(self, m):\n"
            "        return builtins.__import__ is P_util.HOOKED\n",
        )
        self.registry.add("a", {"file": "a.py"})
        # An add notes the helpers for the model's snapshot: hooked too.
        self.assertIsNot(sys.modules[self.p + "util"].HOOKED, original)
        self.assertIs(builtins.__import__, original)
        self.assertEqual(sys.meta_path, meta_path)
        self.registry.update("a", {"file": "a.py"})
        self.assertIsNot(sys.modules[self.p + "util"].HOOKED, original)
        self.assertIs(builtins.__import__, original)
        self.assertEqual(sys.meta_path, meta_path)
        self.assertFalse(self.call("a"))

    def test_calls_in_flight_finish_on_the_old_helpers(self):
        gate = threading.Event()
        sync = types.ModuleType(self.p + "sync")
        sync.gate = gate
        sys.modules[self.p + "sync"] = sync  # outside the root: shared by both versions
        self.write("P_util.py", "import P_sync\ndef f():\n    P_sync.gate.wait(10)\n    return 1\n")
        self.write("a.py", "import P_util\nclass A:\n    def execute(self, m):\n        return P_util.f()\n")
        self.registry.add("a", {"file": "a.py"})
        results = []
        entry = self.registry.get("a")  # what a call in flight holds
        caller = threading.Thread(target=lambda: results.append(entry.execute({})))
        caller.start()
        try:
            self.write("P_util.py", "def f():\n    return 2\n")
            self.registry.update("a", {"file": "a.py"})
            self.assertEqual(self.call("a"), 2)
        finally:
            gate.set()
            caller.join(10)
        self.assertEqual(results, [1])

    def test_concurrent_updates_of_models_sharing_a_helper(self):
        self.write("P_util.py", "V = 1\n")
        for name in ("a", "b"):
            self.write(name + ".py", "import P_util\nclass M:\n    def execute(self, m):\n        return P_util.V\n")
            self.registry.add(name, {"file": name + ".py"})
        self.write("P_util.py", "V = 2\n")
        original = builtins.__import__
        errors = []

        def update(name):
            try:
                for _ in range(20):
                    self.registry.update(name, {"file": name + ".py"})
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=update, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual([self.call("a"), self.call("b")], [2, 2])
        self.assertEqual(sys.modules[self.p + "util"].V, 2)
        self.assertIs(builtins.__import__, original)

    def test_another_thread_importing_the_helper_meanwhile_waits_for_the_fresh_copy(self):
        entered, proceed = threading.Event(), threading.Event()
        sync = types.ModuleType(self.p + "sync")
        sync.entered, sync.proceed = entered, proceed
        sys.modules[self.p + "sync"] = sync
        self.write("P_util.py", "V = 1\nDONE = True\n")
        self.write("a.py", "import P_util\nclass A:\n    def execute(self, m):\n        return P_util.V\n")
        self.registry.add("a", {"file": "a.py"})
        self.write("P_util.py", "import P_sync\nP_sync.entered.set()\nP_sync.proceed.wait(10)\nV = 2\nDONE = True\n")
        updater = threading.Thread(target=self.registry.update, args=("a", {"file": "a.py"}))
        seen = []
        importer = threading.Thread(target=lambda: seen.append(__import__(self.p + "util")))
        updater.start()
        try:
            self.assertTrue(entered.wait(10))
            importer.start()
            # It waits on the module's import lock, as for any module being imported.
            self.assertTrue(_until(lambda: _waits_on_import_lock(importer)))
        finally:
            proceed.set()
            updater.join(10)
            if importer.is_alive() or importer.ident is not None:
                importer.join(10)
        self.assertEqual([(m.V, m.DONE) for m in seen], [(2, True)])
        self.assertEqual(self.call("a"), 2)


def _until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def _waits_on_import_lock(thread):
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        code = frame.f_code
        if "importlib._bootstrap" in code.co_filename and code.co_name == "acquire":
            return True
        frame = frame.f_back
    return False


class FreshHelpersServerTest(unittest.TestCase):
    """Over the wire: updateModel, and an eval session that imported the helper."""

    def test_update_model_and_eval_sessions(self):
        root = tempfile.mkdtemp(prefix="pyproxy-fresh-server-")
        self.addCleanup(shutil.rmtree, root)

        def write(rel, text):
            with open(os.path.join(root, rel), "w") as f:
                f.write(text)

        write("fresh_util.py", "V = 1\n")
        write("a.py", "import fresh_util\nclass A:\n    def execute(self, m):\n        return fresh_util.V\n")
        server = ServerProcess(root=root)
        try:
            client = server.connect()
            client.call("addModel", name="a", file="a.py")
            session = client.call("openSession")["session"]
            client.call("eval", session=session, code="import fresh_util as kept")
            write("fresh_util.py", "V = 2\n")
            self.assertEqual(client.call("updateModel", name="a", file="a.py")["version"], 2)
            self.assertEqual(client.call("executeModel", name="a", msg={}), 2)
            # The session keeps the module it bound; a new import gets the new one.
            self.assertEqual(client.call("eval", session=session, code="kept.V")["value"], 1)
            self.assertEqual(client.call("eval", session=session, code="import fresh_util\nfresh_util.V")["value"], 2)
            write("fresh_util.py", "V = 3\nraise ValueError('bad')\n")
            reply = client.request("updateModel", name="a", file="a.py")
            self.assertEqual(reply["error"]["type"], "ModelLoadError")
            self.assertIn("(fresh_util.py, line 2; from a.py, line 1)", reply["error"]["message"])
            self.assertEqual(client.call("executeModel", name="a", msg={}), 2)
            self.assertEqual(client.call("eval", session=session, code="import fresh_util\nfresh_util.V")["value"], 2)
        finally:
            server.kill()

    def test_another_models_calls_keep_working_while_a_shared_helper_is_updated(self):
        root = tempfile.mkdtemp(prefix="pyproxy-fresh-server-")
        self.addCleanup(shutil.rmtree, root)

        def write(rel, text):
            with open(os.path.join(root, rel), "w") as f:
                f.write(text)

        write("busy_util.py", "V = 0\ndef f():\n    return V\n")
        write("a.py", "import busy_util\nclass A:\n    def execute(self, m):\n        return busy_util.f()\n")
        # B binds f at load and also imports the module inside execute.
        write(
            "b.py",
            "from busy_util import f\nclass B:\n    def execute(self, m):\n"
            "        import busy_util\n        return [f(), busy_util.V]\n",
        )
        server = ServerProcess(root=root)
        try:
            admin = server.connect()
            admin.call("addModel", name="a", file="a.py")
            admin.call("addModel", name="b", file="b.py")
            caller = server.connect()
            done = threading.Event()
            results, failures = [], []

            def call_b():
                while not done.is_set():
                    reply = caller.request("executeModel", name="b", msg={})
                    (results if reply["ok"] else failures).append(reply.get("result", reply.get("error")))

            thread = threading.Thread(target=call_b)
            thread.start()
            try:
                for version in range(1, 21):
                    write("busy_util.py", "V = %d\ndef f():\n    return V\n" % version)
                    admin.call("updateModel", name="a", file="a.py")
                    self.assertEqual(admin.call("executeModel", name="a", msg={}), version)
            finally:
                done.set()
                thread.join(10)
            self.assertEqual(failures, [])
            self.assertTrue(results)
            # B's bound f stays at version 0; its import sees some loaded version.
            self.assertEqual({r[0] for r in results}, {0})
            self.assertEqual(admin.call("executeModel", name="b", msg={}), [0, 20])
        finally:
            server.kill()


if __name__ == "__main__":
    unittest.main()

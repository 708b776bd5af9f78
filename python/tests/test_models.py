"""In-process tests of the model registry."""

import os
import shutil
import tempfile
import threading
import unittest
import warnings

from pyproxy_server.errors import InvalidRequestError, ModelLoadError, ModelNotFoundError, PathError
import sys
import types

from pyproxy_server.models import THREADED_FOREVER, ModelRegistry, confine, may_call_host

from ._client import MODELS_DIR, ServerProcess

# What a model load that misses a package adds, with the package's name.
INTERPRETER_HINT = (
    "; the workers run %s (Python %d.%d.%d), which has no module %%s: if it is a package,"
    " install it for that Python, or give the pool a Python that has it"
    " (the pool's python option, serve --python)" % ((sys.executable,) + tuple(sys.version_info[:3]))
)


class ModelRegistryTest(unittest.TestCase):
    def setUp(self):
        self.registry = ModelRegistry(MODELS_DIR)

    def test_add_describes_the_model(self):
        desc = self.registry.add("d", {"file": "doubler.py", "options": {"k": 4}})
        self.assertEqual(
            desc,
            {
                "name": "d",
                "class": "Doubler",
                "version": 1,
                "file": "doubler.py",
                "inputs": {"x": "number"},
                "outputs": {"y": "number"},
                "doc": "Multiplies x by k.\n\nUsed by the server tests.",
            },
        )
        self.assertEqual(self.registry.get("d").execute({"x": 2}), {"y": 8})

    def test_add_existing_name_replaces_and_bumps_version(self):
        self.registry.add("d", {"file": "doubler.py"})
        self.assertEqual(self.registry.add("d", {"file": "doubler.py"})["version"], 2)

    def test_update_keeps_old_entry_for_holders(self):
        self.registry.add("d", {"file": "doubler.py", "options": {"k": 2}})
        old = self.registry.get("d")
        self.registry.update("d", {"file": "doubler.py", "options": {"k": 10}})
        self.assertEqual(old.execute({"x": 1}), {"y": 2})
        self.assertEqual(self.registry.get("d").execute({"x": 1}), {"y": 10})

    def test_failed_update_keeps_current(self):
        self.registry.add("d", {"file": "doubler.py"})
        with self.assertRaises(ModelLoadError):
            self.registry.update("d", {"source": "raise ImportError('x')"})
        self.assertEqual(self.registry.get("d").version, 1)

    def _stderr_of_add(self, source, options=None):
        import contextlib
        import io

        spec = {"source": source}
        if options is not None:
            spec["options"] = options
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.registry.add("m", spec)
        return err.getvalue()

    def test_constructor_taking_an_option_as_a_keyword_is_warned(self):
        keyword = "class M:\n    def __init__(self, threshold=0.5): self.t = threshold\n    def execute(self, msg): return self.t\n"
        for options in ({"threshold": 0.7}, None):
            out = self._stderr_of_add(keyword, options)
            self.assertIn(
                "M.__init__ gets the whole options dict as its parameter 'threshold' (default 0.5)", out
            )
            self.assertIn("def __init__(self, options)", out)
        keyword_only = "class M:\n    def __init__(self, *, threshold=0.5): pass\n    def execute(self, msg): return 1\n"
        self.assertIn(
            "M() takes no positional argument, so its options ['threshold'] are ignored",
            self._stderr_of_add(keyword_only, {"threshold": 0.7}),
        )

    def test_constructor_taking_the_options_dict_is_not_warned(self):
        for init in ("self, options", "self, options=None", "self, options={}", "self, *args", "self, cfg"):
            source = "class M:\n    def __init__(%s): pass\n    def execute(self, msg): return 1\n" % init
            self.assertEqual(self._stderr_of_add(source, {"k": 1}), "", init)
        # No options and a constructor that takes none: nothing was lost.
        bare = "class M:\n    def execute(self, msg): return 1\n"
        self.assertEqual(self._stderr_of_add(bare), "")
        self.assertEqual(self._stderr_of_add(bare, {}), "")

    def test_unreadable_model_file_is_stage_read_and_user_code_is_not(self):
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("gone", {"file": "no_such_model.py"})
        wire = caught.exception.to_wire()
        self.assertEqual((wire["stage"], wire["exception"]), ("read", "FileNotFoundError"))
        # A model whose own code opens a missing file failed later: no stage.
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("opens", {"source": "open('/no/such/file')\nclass M:\n    pass\n"})
        wire = caught.exception.to_wire()
        self.assertEqual(wire["exception"], "FileNotFoundError")
        self.assertNotIn("stage", wire)

    def test_update_unknown(self):
        with self.assertRaises(ModelNotFoundError):
            self.registry.update("x", {"file": "doubler.py"})

    def test_an_unknown_name_says_which_one_was_meant_or_what_is_loaded(self):
        def message(name):
            with self.assertRaises(ModelNotFoundError) as caught:
                self.registry.get(name)
            return str(caught.exception)

        self.assertEqual(message("d"), "Cannot find model 'd': not loaded (no model is loaded yet)")
        self.registry.add("doubler", {"file": "doubler.py"})
        self.registry.add("echo", {"file": "doubler.py"})
        self.assertEqual(message("dubler"), "Cannot find model 'dubler': not loaded (did you mean 'doubler'?)")
        self.assertEqual(message("xyz"), "Cannot find model 'xyz': not loaded (loaded: doubler, echo)")
        for i in range(12):
            self.registry.add("m%02d" % i, {"file": "doubler.py"})
        self.assertEqual(
            message("xyz"),
            "Cannot find model 'xyz': not loaded (loaded: doubler, echo, m00, m01, m02, m03, m04, m05, m06, m07"
            " and 4 more)",
        )

    def test_a_class_not_in_the_module_lists_the_model_classes(self):
        two = "class A:\n    def execute(self, m): return 'a'\nclass B:\n    def execute(self, m): return 'b'\n"
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("ab", {"source": two, "class": "C"})
        self.assertEqual(str(caught.exception), "Cannot load model 'ab': no class 'C' in its module (model classes: A, B)")
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("x", {"source": "x = 1", "class": "C"})
        self.assertEqual(
            str(caught.exception),
            "Cannot load model 'x': no class 'C' in its module (no class with an execute(msg) method)",
        )

    def test_a_load_error_names_the_line_of_the_model_file(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        os.mkdir(os.path.join(tmp, "sub"))
        files = {
            "sub/ctor.py": "class Ctor:\n    def __init__(self, options):\n        raise ValueError('no path')\n"
            "    def execute(self, msg):\n        return msg\n",
            "imp.py": "import json\nimport no_such_package_here\n",
            "syntax.py": "class Broken:\n    def execute(self, msg)\n        return msg\n",
        }
        for rel, text in files.items():
            with open(os.path.join(tmp, rel), "w") as f:
                f.write(text)
        registry = ModelRegistry(tmp)

        def message(spec):
            with self.assertRaises(ModelLoadError) as caught:
                registry.add("m", spec)
            return str(caught.exception)

        self.assertEqual(
            message({"file": "sub/ctor.py"}),
            "Cannot load model 'm': ValueError: no path (sub/ctor.py, line 3, in __init__)",
        )
        self.assertEqual(
            message({"file": "imp.py"}),
            "Cannot load model 'm': ModuleNotFoundError: No module named 'no_such_package_here' (imp.py, line 2)"
            + INTERPRETER_HINT % "no_such_package_here",
        )
        # A SyntaxError says where itself, once.
        self.assertRegex(message({"file": "syntax.py"}), r"^Cannot load model 'm': SyntaxError: .* \(syntax\.py, line 2\)$")
        self.assertEqual(
            message({"source": "x = 1\nraise KeyError('k')\n"}),
            "Cannot load model 'm': KeyError: 'k' (<model m>, line 2)",
        )

    def test_a_package_missing_names_the_python_that_lacks_it(self):
        # numpy installed in a virtual environment while the pool starts
        # python3 from the PATH: "No module named 'numpy'" alone did not say
        # which Python looked for it, nor what to do.
        def message(source):
            with self.assertRaises(ModelLoadError) as caught:
                self.registry.add("m", {"source": source})
            return str(caught.exception)

        self.assertEqual(
            message("import no_such_pkg.sub as s\n"),
            "Cannot load model 'm': ModuleNotFoundError: No module named 'no_such_pkg' (<model m>, line 1)"
            + INTERPRETER_HINT % "no_such_pkg",
        )
        self.assertIn(sys.executable, INTERPRETER_HINT)
        # A module missing from a package that is there: installing is no answer.
        self.assertEqual(
            message("import json.no_such_sub\n"),
            "Cannot load model 'm': ModuleNotFoundError: No module named 'json.no_such_sub' (<model m>, line 1)",
        )
        # Other import errors are left as they are.
        self.assertEqual(
            message("from json import no_such_name\n"),
            "Cannot load model 'm': ImportError: cannot import name 'no_such_name' from 'json'"
            " (%s) (<model m>, line 1)" % sys.modules["json"].__file__,
        )

    def test_a_relative_path_not_found_at_load_says_where_it_was_looked_for(self):
        # np.load("weights.npy") in __init__: the worker's working directory
        # is the host's, not the models directory, and the message said only
        # "No such file or directory: 'weights.npy'".
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        os.makedirs(os.path.join(tmp, "sub"))
        files = {
            "weights.json": "[1]",
            "sub/vocab.txt": "a",
            "beside.py": "class Model:\n    def __init__(self, options):\n        open('weights.json')\n"
                         "    def execute(self, msg):\n        return 1\n",
            "sub/nested.py": "open('vocab.txt')\nclass Model:\n    def execute(self, msg):\n        return 1\n",
            "nowhere.py": "open('missing.json')\n",
            "absolute.py": "open(%r)\n" % os.path.join(tmp, "missing.json"),
        }
        for rel, text in files.items():
            with open(os.path.join(tmp, rel), "w") as f:
                f.write(text)
        registry = ModelRegistry(tmp)

        def message(file):
            with self.assertRaises(ModelLoadError) as caught:
                registry.add("m", {"file": file})
            return str(caught.exception)

        cwd = os.getcwd()
        self.assertEqual(
            message("beside.py"),
            "Cannot load model 'm': FileNotFoundError: [Errno 2] No such file or directory: 'weights.json'"
            " (beside.py, line 3, in __init__); weights.json is beside the model file, but a relative path is"
            " read from the worker's working directory (%s): open it as"
            " os.path.join(os.path.dirname(__file__), 'weights.json')" % cwd,
        )
        self.assertTrue(message("sub/nested.py").endswith(
            "(sub/nested.py, line 1); vocab.txt is beside the model file, but a relative path is read from the"
            " worker's working directory (%s): open it as os.path.join(os.path.dirname(__file__), 'vocab.txt')" % cwd))
        self.assertTrue(message("nowhere.py").endswith(
            "(nowhere.py, line 1); a relative path is read from the worker's working directory (%s),"
            " not the model's" % cwd))
        self.assertTrue(message("absolute.py").endswith("missing.json' (absolute.py, line 1)"))

    def test_a_pickle_of_a_class_of_main_says_how_to_load_it(self):
        # Saved by a notebook or script that defined Scaler: the pickle names
        # __main__.Scaler, and a worker's __main__ is the server's module, so
        # the model defining Scaler did not help, and the message named
        # pyproxy_server.__main__, a module the author never wrote.
        import subprocess

        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        subprocess.run([sys.executable, "-c",
                        "import pickle\nclass Scaler:\n    k = 3\n"
                        "pickle.dump(Scaler(), open(%r, 'wb'))\n" % os.path.join(tmp, "scaler.pkl")], check=True)
        body = ("import os, pickle\nclass Scaler:\n    k = 3\n%s"
                "class Model:\n    def __init__(self, options):\n"
                "        with open(os.path.join(os.path.dirname(__file__), 'scaler.pkl'), 'rb') as f:\n"
                "            self.scaler = pickle.load(f)\n"
                "    def execute(self, msg):\n        return self.scaler.k\n")
        with open(os.path.join(tmp, "plain.py"), "w") as f:
            f.write(body % "")
        with open(os.path.join(tmp, "fixed.py"), "w") as f:
            f.write(body % "import __main__\n__main__.Scaler = Scaler\n")
        registry = ModelRegistry(tmp)
        with self.assertRaises(ModelLoadError) as caught:
            registry.add("m", {"file": "plain.py"})
        self.assertRegex(str(caught.exception), r"^Cannot load model 'm': AttributeError: Can't get attribute 'Scaler'")
        self.assertTrue(str(caught.exception).endswith(
            "(plain.py, line 7, in __init__); the pickle names __main__.Scaler: it was saved by a script or notebook"
            " that defined Scaler, and a model's module is not __main__ in a worker: define Scaler in the model"
            " (or a helper module) and set __main__.Scaler = Scaler (import __main__) before loading it"),
            str(caught.exception))
        # What the hint says works.
        self.addCleanup(lambda: vars(sys.modules["__main__"]).pop("Scaler", None))
        registry.add("m", {"file": "fixed.py"})
        self.assertEqual(registry.get("m").execute({}), 3)
        # Other AttributeErrors are left alone.
        with self.assertRaises(ModelLoadError) as caught:
            registry.add("o", {"source": "import pickle\npickle.loads(pickle.dumps(1)).nope\n"})
        self.assertNotIn("__main__", str(caught.exception))

    def test_an_execute_that_cannot_take_the_msg_fails_the_load_saying_how_to_write_it(self):
        # Written as a FastAPI route, every call failed with "missing 1
        # required positional argument: 'debt'", a field the client had sent.
        cases = {
            "def execute(self, income, debt, age=30):":
                "execute(income, debt, age=30) cannot be called with its one argument, the request's msg"
                " (missing a required argument: 'debt'): write execute(self, msg) and read the fields from it"
                " (msg['income'])",
            "def execute(self):":
                "execute() cannot be called with its one argument, the request's msg (too many positional"
                " arguments): write execute(self, msg)",
            "def execute(self, **fields):":
                "execute(**fields) cannot be called with its one argument",
            "async def execute(self, *, msg):":
                "execute(*, msg) cannot be called with its one argument, the request's msg (too many positional"
                " arguments): write execute(self, msg)",
        }
        for line, message in cases.items():
            with self.subTest(line=line):
                with self.assertRaises(ModelLoadError) as caught:
                    self.registry.add("f", {"source": "class M:\n    %s\n        return 1\n" % line})
                self.assertEqual(str(caught.exception).partition(": ")[2][:len(message)], message)
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("f", {"source": "class M:\n    batch_size = 4\n"
                                              "    def execute_batch(self, rows, scale):\n        return rows\n"})
        self.assertEqual(str(caught.exception),
                         "Cannot load model class M: execute_batch(rows, scale) cannot be called with its one"
                         " argument, the request's msgs (missing a required argument: 'scale'):"
                         " write execute_batch(self, msgs) and read the fields from it (msgs[i]['rows'])")
        # What one argument can call loads: defaults, *args, a static or
        # class method, a generator, a callable object.
        for body in (
            "def execute(self, msg, extra=None):\n        return 1",
            "def execute(self, *args):\n        return 1",
            "@staticmethod\n    def execute(msg):\n        return 1",
            "@classmethod\n    def execute(cls, msg):\n        return 1",
            "def execute(self, msg, **options):\n        yield 1",
            "execute = type('C', (), {'__call__': lambda self, msg: 1})()",
        ):
            with self.subTest(body=body):
                self.registry.add("f", {"source": "class M:\n    %s\n" % body})
                self.assertEqual(self.registry.get("f").execute({}) if "yield" not in body else 1, 1)

    def test_a_load_raising_an_exception_whose_str_raises_is_a_load_error(self):
        # The message was made with str(exc): the load failed with that
        # ValueError instead, its model and line unnamed.
        source = ("class Odd(Exception):\n    def __str__(self):\n        raise ValueError('no str')\n"
                  "class Model:\n    def __init__(self, options):\n        raise Odd()\n"
                  "    def execute(self, msg):\n        return 1\n")
        with self.assertRaises(ModelLoadError) as caught:
            self.registry.add("m", {"source": source})
        self.assertEqual(str(caught.exception), "Cannot load model 'm': Odd: <str() of Odd failed: ValueError: no str>"
                                                " (<model m>, line 6, in __init__)")

    def test_a_model_in_a_subdirectory_importing_a_module_beside_it_is_told_how(self):
        # A TorchServe handler imports the extra files of its archive by
        # name (their directory is on its sys.path); here only the root is.
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        os.makedirs(os.path.join(tmp, "textclf", "nested"))
        files = {
            "textclf/text_utils.py": "def tokens(text):\n    return text.split()\n",
            "textclf/handler.py": "import text_utils\nclass Model:\n    def execute(self, msg):\n        return 1\n",
            "textclf/relative.py": "from . import text_utils\nclass Model:\n    def execute(self, msg):\n        return 1\n",
            "textclf/other.py": "import no_such_module_here\n",
            "top.py": "import text_utils\n",
        }
        for rel, text in files.items():
            with open(os.path.join(tmp, rel), "w") as f:
                f.write(text)
        registry = ModelRegistry(tmp)

        def message(file):
            with self.assertRaises(ModelLoadError) as caught:
                registry.add("m", {"file": file})
            return str(caught.exception)

        self.assertEqual(
            message("textclf/handler.py"),
            "Cannot load model 'm': ModuleNotFoundError: No module named 'text_utils' (textclf/handler.py, line 1);"
            " text_utils is beside the model file, but only the models directory is on sys.path:"
            " add an __init__.py to textclf/ and import it relatively (from . import text_utils),"
            " or move it to the models directory",
        )
        self.assertEqual(
            message("textclf/relative.py"),
            "Cannot load model 'm': ImportError: attempted relative import with no known parent package"
            " (textclf/relative.py, line 1); a relative import needs the model's directory to be a package:"
            " add an __init__.py to textclf/ (and to every directory between it and the models directory)",
        )
        # Not beside it: a module that is nowhere, and a model in the root
        # (text_utils is not on sys.path from there), get the Python's name.
        self.assertTrue(message("textclf/other.py").endswith(
            "(textclf/other.py, line 1)" + INTERPRETER_HINT % "no_such_module_here"))
        self.assertTrue(message("top.py").endswith("(top.py, line 1)" + INTERPRETER_HINT % "text_utils"))
        # With the package there, only the import is left to change.
        with open(os.path.join(tmp, "textclf", "__init__.py"), "w"):
            pass
        self.assertTrue(message("textclf/handler.py").endswith(
            " but only the models directory is on sys.path: import it relatively (from . import text_utils),"
            " or move it to the models directory"))

    def test_no_model_class_or_several_say_what_to_do(self):
        def message(source):
            with self.assertRaises(ModelLoadError) as caught:
                self.registry.add("m", {"source": source})
            return str(caught.exception)

        self.assertEqual(
            message("class Scorer:\n    def predict(self, msg):\n        return 1\nclass Other:\n    pass\n"),
            "Cannot load model 'm': no class with an execute(msg) or execute_batch(msgs) method (classes without one: Other, Scorer)",
        )
        self.assertEqual(
            message("from collections import OrderedDict\n"),
            "Cannot load model 'm': no class with an execute(msg) or execute_batch(msgs) method",
        )
        self.assertEqual(
            message("class A:\n    def execute(self, m): return 'a'\nclass B:\n    def execute(self, m): return 'b'\n"),
            "Cannot load model 'm': several model classes (A, B); pass 'class', or name one Model",
        )

    def test_model_class_fallback_and_selection(self):
        src = "class Helper:\n    pass\nclass Model:\n    def execute(self, m):\n        return 1\n"
        self.assertEqual(self.registry.add("m", {"source": src})["class"], "Model")
        two = "class A:\n    def execute(self, m): return 'a'\nclass B:\n    def execute(self, m): return 'b'\n"
        with self.assertRaises(ModelLoadError):
            self.registry.add("ab", {"source": two})
        self.registry.add("ab", {"source": two, "class": "B"})
        self.assertEqual(self.registry.get("ab").execute(None), "b")
        with self.assertRaises(ModelLoadError):
            self.registry.add("ab", {"source": two, "class": "C"})
        with self.assertRaises(ModelLoadError):
            self.registry.add("none", {"source": "x = 1"})

    def test_imported_classes_are_not_candidates(self):
        src = "from collections import OrderedDict\nclass M:\n    def execute(self, m): return 1\n"
        self.assertEqual(self.registry.add("m", {"source": src})["class"], "M")

    def test_snapshot_returns_the_code_loaded_and_a_replay_of_it_ignores_the_file(self):
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        with open(os.path.join(tmp, "m.py"), "w") as f:
            f.write("class M:\n    def execute(self, msg):\n        return {'v': 1, 'file': __file__}\n")
        registry = ModelRegistry(tmp)
        desc = registry.add("m", {"file": "m.py", "snapshot": True})
        source = desc.pop("source")
        self.assertIn("'v': 1", source)
        self.assertNotIn("source", registry.add("plain", {"file": "m.py"}))
        with open(os.path.join(tmp, "m.py"), "w") as f:
            f.write("this is not python anymore(\n")
        # The host's replay: the snapshot, under the file's name (its __file__, tracebacks).
        replay = ModelRegistry(tmp)
        self.assertEqual(replay.add("m", {"file": "m.py", "source": source})["file"], "m.py")
        self.assertEqual(replay.get("m").execute({}), {"v": 1, "file": os.path.join(os.path.realpath(tmp), "m.py")})
        # The name is still confined, and the source must be a string.
        with self.assertRaises(PathError):
            replay.add("x", {"file": "../m.py", "source": source})
        with self.assertRaises(InvalidRequestError):
            replay.add("x", {"file": "m.py", "source": 7})
        with self.assertRaises(ModelLoadError):
            replay.add("x", {"file": "m.py"})  # the file itself no longer loads

    def test_bad_arguments(self):
        with self.assertRaises(InvalidRequestError):
            self.registry.add("", {"file": "doubler.py"})
        with self.assertRaises(InvalidRequestError):
            self.registry.add("d", {"options": {}})  # neither file nor source
        with self.assertRaises(InvalidRequestError):
            self.registry.add("d", {"file": "doubler.py", "options": [1]})
        with self.assertRaises(InvalidRequestError):
            self.registry.get(["unhashable"])

    def test_schema_validation(self):
        with self.assertRaises(ModelLoadError):
            self.registry.add("b", {"file": "bad_schema.py"})

    def test_schema_optional_fields(self):
        src = (
            "class M:\n"
            "    inputs = {'key': 'string', 'ttl': 'number?', 'x': 'any?'}\n"
            "    def execute(self, m):\n"
            "        return m\n"
        )
        desc = self.registry.add("o", {"source": src})
        self.assertEqual(desc["inputs"], {"key": "string", "ttl": "number?", "x": "any?"})
        for bad in ("?", "number??", "float?"):
            with self.assertRaises(ModelLoadError, msg=bad) as caught:
                self.registry.add("b", {"source": src.replace("number?", bad)})
            self.assertIn("trailing ? for an optional field", str(caught.exception))

    def test_not_threadsafe_models_are_serialised(self):
        src = (
            "import threading, time\n"
            "class M:\n"
            "    threadsafe = False\n"
            "    def __init__(self):\n"
            "        self.active = 0\n"
            "        self.peak = 0\n"
            "    def execute(self, m):\n"
            "        self.active += 1\n"
            "        self.peak = max(self.peak, self.active)\n"
            "        time.sleep(0.01)\n"
            "        self.active -= 1\n"
            "        return self.peak\n"
        )
        self.registry.add("m", {"source": src})
        entry = self.registry.get("m")
        threads = [threading.Thread(target=entry.execute, args=(None,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(entry.instance.peak, 1)

    def test_source_traceback_shows_lines(self):
        self.registry.add("f", {"source": "class M:\n    def execute(self, m):\n        raise KeyError('boom')\n"})
        try:
            self.registry.get("f").execute(None)
        except KeyError:
            import traceback

            self.assertIn("raise KeyError('boom')", traceback.format_exc())

    def test_remove(self):
        self.registry.add("d", {"file": "doubler.py"})
        self.assertEqual(self.registry.remove("d"), {"name": "d", "removed": True})
        self.assertEqual(len(self.registry), 0)

    def test_models_sent_as_source_leave_nothing_in_linecache_once_removed(self):
        import linecache

        before = set(linecache.cache)
        # Models added and removed under new names, as a long-lived pool may.
        for i in range(200):
            self.registry.add("s%d" % i, {"source": "class M:\n    def execute(self, m):\n        return %d\n" % i})
            self.registry.update("s%d" % i, {"source": "class M:\n    def execute(self, m):\n        return -1\n"})
            self.registry.remove("s%d" % i)
        self.assertEqual(set(linecache.cache) - before, set())

    def test_a_failed_load_puts_back_what_linecache_held(self):
        import linecache

        before = set(linecache.cache)
        for i in range(50):
            with self.assertRaises(ModelLoadError):
                self.registry.add("bad%d" % i, {"source": "raise ValueError('no')\n"})
        self.assertEqual(set(linecache.cache) - before, set())
        # A failed update keeps the lines of the version still serving.
        self.registry.add("kept", {"source": "class M:\n    def execute(self, m):\n        raise KeyError('old')\n"})
        with self.assertRaises(ModelLoadError):
            self.registry.update("kept", {"source": "raise ValueError('new')\n"})
        self.assertIn("raise KeyError('old')", "".join(linecache.getlines("<model kept>")))
        self.registry.remove("kept")


class PackageModelTest(unittest.TestCase):
    """A model file inside a package under the root uses relative imports."""

    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        sys.path.append(self.root)  # the server puts its root there
        self.addCleanup(sys.path.remove, self.root)
        for name in ("relpkg_models", "relpkg_models.util"):
            self.addCleanup(sys.modules.pop, name, None)
        pkg = os.path.join(self.root, "relpkg_models")
        os.mkdir(pkg)
        files = {
            "__init__.py": "",
            "util.py": "def answer():\n    return 42\n",
            "model.py": "from .util import answer\nclass M:\n    def execute(self, m):\n        return {'a': answer()}\n",
        }
        for name, text in files.items():
            with open(os.path.join(pkg, name), "w") as f:
                f.write(text)
        os.mkdir(os.path.join(self.root, "plain-dir"))
        with open(os.path.join(self.root, "plain-dir", "model.py"), "w") as f:
            f.write(files["model.py"])

    def test_relative_import_inside_a_package(self):
        registry = ModelRegistry(self.root)
        registry.add("rel", {"file": "relpkg_models/model.py"})
        self.assertEqual(registry.get("rel").execute({}), {"a": 42})

    def test_relative_import_outside_a_package_fails_as_in_python(self):
        registry = ModelRegistry(self.root)
        # As in Python, an ImportError and nothing else: no ImportWarning that
        # the module's package cannot be resolved (it was, with __package__
        # None; under -W error that warning even replaced the ImportError).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with self.assertRaises(ModelLoadError) as ctx:
                registry.add("rel", {"file": "plain-dir/model.py"})
        self.assertIn("ImportError", str(ctx.exception))
        self.assertEqual([w for w in caught if issubclass(w.category, ImportWarning)], [])


class MayCallHostTest(unittest.TestCase):
    """The load-time scan that keeps models using pyproxy.host off the inline path."""

    def _module(self, name, source, file=None):
        module = types.ModuleType(name)
        if file is not None:
            module.__file__ = file
        sys.modules[name] = module
        self.addCleanup(sys.modules.pop, name, None)
        exec(source, module.__dict__)
        return module

    def test_direct_references(self):
        for line in ("from pyproxy import host", "import pyproxy", "import pyproxy.host as h",
                     "from pyproxy.host import cache", "from pyproxy.host import call"):
            module = self._module("m_direct", line + "\nclass M:\n def execute(self, m): return m\n")
            self.assertTrue(may_call_host(module.M, "m_direct"), line)

    def test_clean_model(self):
        module = self._module("m_clean", "import json, os\nclass M:\n def execute(self, m): return m\n")
        self.assertFalse(may_call_host(module.M, "m_clean"))

    def test_one_level_of_user_modules(self):
        self._module("helper_uses_host", "from pyproxy import host\n", file="/srv/models/helper_uses_host.py")
        module = self._module("m_indirect", "import helper_uses_host\nclass M:\n def execute(self, m): return m\n")
        self.assertTrue(may_call_host(module.M, "m_indirect"))

    def test_registry_keeps_such_models_threaded(self):
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        registry = ModelRegistry(root)
        registry.add("uses", {"source": "from pyproxy import host\nclass M:\n def execute(self, m): return m\n"})
        registry.add("plain", {"source": "class M:\n def execute(self, m): return m\n"})
        self.assertEqual(registry.get("uses").mode, THREADED_FOREVER)
        self.assertNotEqual(registry.get("plain").mode, THREADED_FOREVER)


class AsyncExecuteTest(unittest.TestCase):
    """``async def execute`` runs to completion (its coroutine object was the
    result, a SerializationError at every call), on the call's thread."""

    SOURCE = (
        "import asyncio, threading\n"
        "class M:\n"
        "    async def execute(self, msg):\n"
        "        await asyncio.sleep(0)\n"
        "        return {'x': msg['x'] * 2, 'thread': threading.current_thread().name}\n"
    )

    def test_in_process(self):
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        registry = ModelRegistry(root)
        registry.add("a", {"source": self.SOURCE})
        entry = registry.get("a")
        self.assertEqual(entry.mode, THREADED_FOREVER)
        self.assertEqual(entry.run({"x": 2})["x"], 4)

    def test_over_the_wire_with_its_errors(self):
        server = ServerProcess()
        try:
            c = server.connect()
            c.call("addModel", name="a", source=self.SOURCE)
            for x in range(12):  # past the inline learning calls: still threaded
                result = c.call("executeModel", name="a", msg={"x": x})
                self.assertEqual(result["x"], 2 * x)
                self.assertNotEqual(result["thread"], "MainThread")
            c.call("addModel", name="b", source=(
                "class Bad(Exception): pass\n"
                "class M:\n"
                "    async def execute(self, msg):\n"
                "        raise Bad('async failure')\n"))
            error = c.request("executeModel", name="b", msg={})["error"]
            self.assertEqual((error["type"], error["exception"]), ("PythonError", "Bad"))
            self.assertIn("async failure", error["message"])
        finally:
            server.kill()


class BatchTest(unittest.TestCase):
    """A class with ``batch_size`` and ``execute_batch`` takes lists of
    messages through ``executeBatch``; an exception instance in its results
    fails that message alone."""

    SOURCE = (
        "class M:\n"
        "    batch_size = 4\n"
        "    batch_delay_ms = 2\n"
        "    def execute_batch(self, msgs):\n"
        "        return [ValueError('bad %d' % m['x']) if m['x'] < 0 else {'y': m['x'] * 2, 'n': len(msgs)}\n"
        "                for m in msgs]\n"
    )

    def registry(self):
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        return ModelRegistry(root)

    def test_describe_run_batch_and_a_single_message(self):
        registry = self.registry()
        desc = registry.add("b", {"source": self.SOURCE})
        self.assertEqual(desc["batch"], {"size": 4, "delayMs": 2})
        entry = registry.get("b")
        self.assertEqual(entry.mode, THREADED_FOREVER)
        results = entry.run_batch([{"x": 1}, {"x": -1}])
        self.assertEqual(results[0], {"y": 2, "n": 2})
        self.assertIsInstance(results[1], ValueError)
        # Without execute, executeModel is a one-message batch.
        self.assertEqual(entry.run({"x": 3}), {"y": 6, "n": 1})
        with self.assertRaisesRegex(ValueError, "bad -2"):
            entry.run({"x": -2})

    def test_a_stream_of_a_model_without_execute_is_its_batch_of_one(self):
        # executeStream of any model that is not a generator gives one item,
        # its result; one with only execute_batch failed with AttributeError.
        registry = self.registry()
        registry.add("b", {"source": self.SOURCE})
        self.assertEqual(list(registry.get("b").open_stream({"x": 3})), [{"y": 6, "n": 1}])
        with self.assertRaisesRegex(ValueError, "bad -1"):
            registry.get("b").open_stream({"x": -1})

    def test_async_and_thread_unsafe_execute_batch(self):
        registry = self.registry()
        registry.add("b", {"source": (
            "import asyncio\n"
            "class M:\n"
            "    batch_size = 2\n"
            "    threadsafe = False\n"
            "    async def execute_batch(self, msgs):\n"
            "        await asyncio.sleep(0)\n"
            "        return tuple(m * 10 for m in msgs)\n"
        )})
        self.assertEqual(list(registry.get("b").run_batch([1, 2])), [10, 20])
        self.assertEqual(registry.get("b").run(3), 30)

    def test_settings_it_cannot_mean_fail_the_load(self):
        registry = self.registry()
        cases = [
            ("batch_size = 0", "batch_size must be an integer from 1 to 1024, got 0"),
            ("batch_size = True", "batch_size must be an integer from 1 to 1024, got True"),
            ("batch_size = 2000", "got 2000"),
            ("batch_size = 2\n    batch_delay_ms = -1", "batch_delay_ms must be a number of milliseconds from 0 to 1000"),
            ("batch_size = 2\n    batch_delay_ms = '5'", "got '5'"),
        ]
        for attrs, message in cases:
            source = "class M:\n    %s\n    def execute_batch(self, msgs):\n        return msgs\n" % attrs
            with self.assertRaisesRegex(ModelLoadError, message):
                registry.add("b", {"source": source})
        with self.assertRaisesRegex(ModelLoadError, "batch_size is set but it has no execute_batch"):
            registry.add("b", {"source": "class M:\n    batch_size = 2\n    def execute(self, m):\n        return m\n"})
        with self.assertRaises(ModelLoadError) as caught:
            registry.add("b", {"source": "class M:\n    def execute_batch(self, msgs):\n        return msgs\n"})
        self.assertEqual(
            str(caught.exception),
            "Cannot load model 'b': class M has no execute(msg) method (it has execute_batch(msgs):"
            " set batch_size, on the class or in __init__, for it to get batches)",
        )
        # Set in __init__, the same values are checked the same way.
        with self.assertRaisesRegex(ModelLoadError, "batch_size must be an integer from 1 to 1024, got 0"):
            registry.add("b", {"source": (
                "class M:\n    def __init__(self, options):\n        self.batch_size = options['n']\n"
                "    def execute_batch(self, msgs):\n        return msgs\n"), "options": {"n": 0}})

    def test_init_may_set_the_batch_settings_from_its_options(self):
        # TorchServe takes batch_size and max_batch_delay from a model's
        # configuration: a port reads them from its options.
        registry = self.registry()
        source = (
            "class M:\n"
            "    batch_size = 2\n"
            "    def __init__(self, options):\n"
            "        if 'batch_size' in options:\n"
            "            self.batch_size = options['batch_size']\n"
            "            self.batch_delay_ms = options['max_batch_delay']\n"
            "    def execute_batch(self, msgs):\n"
            "        return [len(msgs)] * len(msgs)\n"
        )
        desc = registry.add("b", {"source": source, "options": {"batch_size": 8, "max_batch_delay": 50}})
        self.assertEqual(desc["batch"], {"size": 8, "delayMs": 50})
        self.assertEqual(registry.get("b").run_batch([1] * 8), [8] * 8)
        # Without them, the class's.
        self.assertEqual(registry.add("c", {"source": source})["batch"], {"size": 2, "delayMs": 10})
        # Only in __init__, with no execute at all.
        only = "class M:\n    def __init__(self, options):\n        self.batch_size = 4\n" \
               "    def execute_batch(self, msgs):\n        return msgs\n"
        self.assertEqual(registry.add("d", {"source": only})["batch"], {"size": 4, "delayMs": 10})
        self.assertEqual(registry.get("d").run(7), 7)

    def test_timeout_ms_is_described_and_checked(self):
        # The host applies it (docs/models.md, "Timeouts and cancellation"):
        # the server only reports it, and refuses values it cannot mean.
        registry = self.registry()
        desc = registry.add("t", {"source": "class M:\n    timeout_ms = 120000\n    def execute(self, m):\n        return m\n"})
        self.assertEqual(desc["timeoutMs"], 120000)
        desc = registry.add("u", {"source": "class M:\n    def execute(self, m):\n        return m\n"})
        self.assertNotIn("timeoutMs", desc)
        # Set by __init__ from the options, as batch_size may be.
        source = ("class M:\n    def __init__(self, options):\n        self.timeout_ms = options['t']\n"
                  "    def execute(self, m):\n        return m\n")
        desc = registry.add("w", {"source": source, "options": {"t": 5000}})
        self.assertEqual(desc["timeoutMs"], 5000)
        with self.assertRaisesRegex(ModelLoadError, "timeout_ms must be an integer number of milliseconds from 1 to 2147483647, got 0"):
            registry.add("x", {"source": source, "options": {"t": 0}})
        for value in ("0", "True", "1.5", "'100'", str(2**31)):
            source = "class M:\n    timeout_ms = %s\n    def execute(self, m):\n        return m\n" % value
            with self.assertRaisesRegex(ModelLoadError, "timeout_ms must be an integer number of milliseconds from 1 to 2147483647, got "):
                registry.add("v", {"source": source})

    def test_close_timeout_ms_is_described_for_a_model_with_close(self):
        # A host bounds a remove or update by it (drain, then close()).
        registry = self.registry()
        close = "    def close(self):\n        pass\n"
        desc = registry.add("d", {"source": "class M:\n    def execute(self, m):\n        return m\n" + close})
        self.assertEqual(desc["closeTimeoutMs"], 5000)
        desc = registry.add("c", {"source": "class M:\n    close_timeout_ms = 20000\n"
                                            "    def execute(self, m):\n        return m\n" + close})
        self.assertEqual(desc["closeTimeoutMs"], 20000)
        # Set by __init__, as timeout_ms may be.
        source = ("class M:\n    def __init__(self, options):\n        self.close_timeout_ms = options['t']\n"
                  "    def execute(self, m):\n        return m\n" + close)
        self.assertEqual(registry.add("i", {"source": source, "options": {"t": 700}})["closeTimeoutMs"], 700)
        # No close(): nothing to wait for, nothing described.
        desc = registry.add("n", {"source": "class M:\n    close_timeout_ms = 20000\n"
                                            "    def execute(self, m):\n        return m\n"})
        self.assertNotIn("closeTimeoutMs", desc)

    def test_a_wrong_number_of_results_is_an_error_naming_both_counts(self):
        registry = self.registry()
        registry.add("b", {"source": "class M:\n    batch_size = 3\n    def execute_batch(self, msgs):\n        return msgs[1:]\n"})
        with self.assertRaisesRegex(Exception, "execute_batch returned 1 result for 2 messages"):
            registry.get("b").run_batch([1, 2])

    def test_over_the_wire(self):
        server = ServerProcess()
        try:
            c = server.connect()
            c.call("addModel", name="b", source=self.SOURCE)
            c.call("addModel", name="plain", source="class P:\n    def execute(self, m):\n        return m\n")
            reply = c.call("executeBatch", name="b", msgs=[{"x": 1}, {"x": -5}, {"x": 2}])
            self.assertEqual(reply["results"], [{"y": 2, "n": 3}, None, {"y": 4, "n": 3}])
            self.assertEqual(list(reply["errors"]), ["1"])
            error = reply["errors"]["1"]
            self.assertEqual((error["type"], error["exception"], error["message"]), ("PythonError", "ValueError", "bad -5"))
            self.assertNotIn("errors", c.call("executeBatch", name="b", msgs=[{"x": 1}]))
            for args, message in [
                ({"name": "b", "msgs": []}, "'msgs' must be a non-empty list"),
                ({"name": "b", "msgs": {"x": 1}}, "'msgs' must be a non-empty list"),
                ({"name": "b", "msgs": [{"x": 1}] * 5}, "5 messages for model 'b', whose batch_size is 4"),
                ({"name": "plain", "msgs": [{}]}, "model 'plain' does not batch"),
            ]:
                error = c.request("executeBatch", **args)["error"]
                self.assertEqual(error["type"], "InvalidRequestError")
                self.assertIn(message, error["message"])
            self.assertEqual(c.request("executeBatch", name="nope", msgs=[{}])["error"]["type"], "ModelNotFoundError")
            # split: messages gathered for an earlier version of the model run
            # as this one takes them: in batches of its size, or one by one.
            reply = c.call("executeBatch", name="b", msgs=[{"x": i} for i in range(6)], split=True)
            self.assertEqual(reply["results"], [{"y": i * 2, "n": 4 if i < 4 else 2} for i in range(6)])
            c.call("addModel", name="failing", source=(
                "class F:\n    def execute(self, m):\n        if m < 0:\n            raise SystemExit(3)\n        return m\n"
            ))
            reply = c.call("executeBatch", name="failing", msgs=[1, -1, 2], split=True)
            self.assertEqual(reply["results"], [1, None, 2])
            self.assertEqual(list(reply["errors"]), ["1"])
            self.assertEqual(reply["errors"]["1"]["exception"], "SystemExit")
            error = c.request("executeBatch", name="b", msgs=[{"x": 1}], split=1)["error"]
            self.assertEqual(error["type"], "InvalidRequestError")
            self.assertIn("'split' must be true or false", error["message"])
        finally:
            server.kill()


class ConfineTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.root = os.path.join(self.tmp, "root")
        os.mkdir(self.root)

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_inside(self):
        self.assertEqual(confine(self.root, "a/b.py", "file"), os.path.join(os.path.realpath(self.root), "a", "b.py"))

    def test_escapes(self):
        for path in ("../x.py", "/etc/passwd", "a/../../x.py"):
            with self.assertRaises(PathError):
                confine(self.root, path, "file")

    def test_sibling_with_common_prefix(self):
        os.mkdir(self.root + "2")
        with self.assertRaises(PathError):
            confine(self.root, "../root2/x.py", "file")

    def test_symlink_out(self):
        os.symlink(self.tmp, os.path.join(self.root, "up"))
        with self.assertRaises(PathError):
            confine(self.root, "up/x.py", "file")


if __name__ == "__main__":
    unittest.main()

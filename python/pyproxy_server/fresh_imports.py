"""``FreshImports``: an update loads fresh copies of the model's helper modules.

A model file imports helper modules from the models directory (``import
util``, or ``from .util import f`` inside a package there). Python imports a
module once and caches it in ``sys.modules``, so an update that re-ran only
the model file kept running the old helpers ("I redeployed and nothing
changed"). While an update loads (protocol §6), every ``import`` statement run
on its thread that names a *helper* already imported gets a fresh copy of it,
read from disk again, once per load; its own imports get the same treatment,
so edits anywhere down the chain take effect.

A helper is a module loaded from Python source (or bytecode) that sits in the
models directory itself (``util.py``, ``pkg/__init__.py``, or a namespace
package ``ns/`` all of whose directories are there) or, for a submodule, under
it with its top-level package a helper. Modules found elsewhere (the
standard library, site-packages, a virtual environment inside the models
directory, the ``pyproxy`` packages) are never reloaded.

How the rest of the process sees it:

- The old copies are not touched: the model version being replaced, and
  any other model that imported a helper, keep the module objects they bound
  when they loaded, so their calls (in flight or later) run the helper
  version they were loaded with.
- The fresh copy takes the old one's place in ``sys.modules`` as the import
  system loads it (under the module's import lock: another thread importing
  it meanwhile waits, then gets the fresh copy), so a later plain ``import``
  (another model added, an eval session, an import inside a function) sees
  the newest version loaded.
- If the load fails, the old copies go back into ``sys.modules`` and helpers
  imported for the first time by that load are dropped from it.

The hook is installed on ``builtins.__import__`` only while an update loads
and acts only on the loading threads (an import elsewhere meanwhile costs one
more dictionary lookup): a call's path is unchanged. Imports that do not go
through an ``import`` statement (``importlib.import_module``) are not
refreshed.
"""

import builtins
import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import threading

__all__ = ["FreshImports"]

try:  # The import system's per-module lock (CPython 3.3 and later).
    from importlib._bootstrap import _ModuleLockManager as _module_lock
except ImportError:  # pragma: no cover - another implementation
    def _module_lock(name):
        return contextlib.nullcontext()

_SOURCE_LOADERS = (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader)
# Never reloaded, even if the models directory holds them.
_OWN_PACKAGES = frozenset(("pyproxy", "pyproxy_server"))
# ``FreshLoad.done`` value of a helper whose fresh copy is being loaded.
_LOADING = object()


class FreshLoad:
    """The state of one load: what was refreshed, what was imported before."""

    __slots__ = ("done", "tops", "before")

    def __init__(self):
        # Module name -> (old, fresh) once refreshed, _LOADING while it
        # loads, None when it was not a helper already imported.
        self.done = {}
        # Top-level name -> whether it is a helper already imported.
        self.tops = {}
        self.before = set(sys.modules)


class FreshImports:
    """Fresh helper modules for the loads run between ``begin`` and ``end``.

    Example::

        fresh = FreshImports("/srv/models")
        ok = False
        try:
            fresh.begin()
            exec(compile("import util", "m.py", "exec"), {})
            ok = True
        finally:
            fresh.end(ok)  # also after an interrupt inside begin()
    """

    def __init__(self, root):
        self.root = os.path.realpath(root)
        self._lock = threading.Lock()
        # Thread id -> its FreshLoad.
        self._loads = {}
        self._hook = self._import
        self._installed = False
        self._previous = builtins.__import__

    def begin(self):
        """Refresh the helpers that this thread's imports name until ``end``."""
        load = FreshLoad()
        with self._lock:
            if not self._installed:
                self._previous = builtins.__import__
                builtins.__import__ = self._hook
                self._installed = True
            self._loads[threading.get_ident()] = load
        # A helper file created since the directory was last listed.
        importlib.invalidate_caches()

    def end(self, ok):
        """Stop refreshing for this thread; unless ``ok``, put the old helpers
        back. Safe to call when ``begin`` did not run or did not finish."""
        with self._lock:
            load = self._loads.pop(threading.get_ident(), None)
            if not self._loads and builtins.__import__ is self._hook:
                # (Another hook installed over ours keeps ours in its chain.)
                builtins.__import__ = self._previous
                self._installed = False
        if load is not None and not ok:
            self._restore(load)

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        load = self._loads.get(threading.get_ident())
        if load is not None:
            self._refresh(load, name, globals, fromlist, level)
        return self._previous(name, globals, locals, fromlist, level)

    def _refresh(self, load, name, globals, fromlist, level):
        if level > 0:
            try:
                name = importlib.util.resolve_name("." * level + name, _package(globals))
            except (ImportError, ValueError, TypeError, AttributeError):
                return  # the import itself says what is wrong
        elif not isinstance(name, str):
            return
        top = name.partition(".")[0]
        helper = load.tops.get(top)
        if helper is None:
            module = sys.modules.get(top)
            helper = load.tops[top] = module is not None and self._is_helper(top, module)
        if not helper:
            return
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            self._fresh(load, ".".join(parts[:i]))
        for item in fromlist or ():
            if isinstance(item, str) and item != "*":
                self._fresh(load, name + "." + item)

    def _fresh(self, load, name):
        """Replace the cached helper ``name`` with a fresh copy (once per load)."""
        if name in load.done:
            return
        module = sys.modules.get(name)
        if module is None or not self._is_helper(name, module):
            load.done[name] = None
            return
        load.done[name] = _LOADING
        with _module_lock(name):
            if sys.modules.get(name) is not module:
                load.done[name] = None  # another load refreshed it meanwhile
                return
            _drop_bytecode(module)
            try:
                del sys.modules[name]
                fresh = importlib.import_module(name)
            except BaseException:
                sys.modules[name] = module
                load.done[name] = None
                raise
            load.done[name] = (module, fresh)
            if hasattr(fresh, "__path__"):
                _adopt_submodules(fresh)

    def _is_helper(self, name, module):
        top = name.partition(".")[0]
        if top in _OWN_PACKAGES:
            return False
        spec = getattr(module, "__spec__", None)
        if spec is None:
            return False
        origin = spec.origin
        if isinstance(spec.loader, _SOURCE_LOADERS) and isinstance(origin, str):
            paths = [os.path.realpath(origin)]
            if top == name and spec.submodule_search_locations is not None:
                paths = [os.path.dirname(paths[0])]  # a package: root/top/__init__.py
        elif origin is None and spec.submodule_search_locations:
            # A namespace package (a directory without __init__.py), only
            # when all of it is in the root.
            paths = [os.path.realpath(p) for p in spec.submodule_search_locations]
        else:
            return False
        if top != name:  # a submodule: under the root (its package is a helper)
            return all(p.startswith(self.root + os.sep) for p in paths)
        return all(os.path.dirname(p) == self.root for p in paths)

    def _restore(self, load):
        for name, entry in list(load.done.items()):
            if isinstance(entry, tuple):
                old, fresh = entry
                if sys.modules.get(name) is fresh:
                    sys.modules[name] = old
        # Helpers imported for the first time by the failed load may hold
        # fresh copies of the ones just put back: the next import redoes them.
        for name in set(sys.modules) - load.before:
            module = sys.modules.get(name)
            if module is not None and self._is_helper(name, module):
                sys.modules.pop(name, None)


def _package(globals):
    """The package a relative import in a module with these globals is relative to."""
    if not globals:
        return None
    package = globals.get("__package__")
    if package is not None:
        return package
    spec = globals.get("__spec__")
    if spec is not None:
        return spec.parent
    name = globals.get("__name__", "")
    return name if "__path__" in globals else name.rpartition(".")[0]


def _adopt_submodules(package):
    """Give a fresh package the submodules still cached under its name.

    The import system sets a submodule as an attribute of its package only
    when it loads it: without this, ``import pkg.other`` of a cached
    ``pkg.other`` (one this load does not import) would bind the fresh ``pkg``
    with no ``other``. A submodule the load imports afresh replaces its entry.
    """
    prefix = package.__name__ + "."
    for name, module in list(sys.modules.items()):
        if name.startswith(prefix) and module is not None:
            child = name[len(prefix):]
            if "." not in child and child not in package.__dict__:
                setattr(package, child, module)


def _drop_bytecode(module):
    """Remove the helper's cached bytecode: a file rewritten within the second
    its ``.pyc`` was written, at the same size, would pass the ``.pyc``'s
    mtime-and-size check and load stale."""
    spec = module.__spec__
    if isinstance(spec.loader, importlib.machinery.SourceFileLoader) and isinstance(spec.cached, str):
        try:
            os.unlink(spec.cached)
        except OSError:
            pass

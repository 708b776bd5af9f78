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

Snapshots (protocol §6): every model load, an add too, also notes the
helpers it binds, each with the source it ran (``HelperLoader``), so the
host can replay them. A load may be given those sources (``given``): a
helper named there is loaded from the given source instead of its file. A
load that is not an update reuses a cached helper only when everything it
ran is known and still current (its own helpers are the copies in
``sys.modules``) and, when sources are given, matches them; otherwise it
loads it afresh like an update does (a helper first imported by a call or
an eval, outside any model load, whose source the server did not keep).

The hook is installed on ``builtins.__import__`` (and a finder on
``sys.meta_path``) only while a model loads and acts only on the loading
threads (an import elsewhere meanwhile costs one more dictionary lookup): a
call's path is unchanged. Imports that do not go through an ``import``
statement (``importlib.import_module``) are not refreshed.
"""

import builtins
import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import threading

from .helper_loader import HelperLoader

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
    """The state of one model load: what was refreshed, what was imported
    before, what its modules imported."""

    __slots__ = ("done", "tops", "before", "refresh", "given", "stack")

    def __init__(self, refresh=True, given=None):
        # Module name -> (old, fresh) once refreshed, _LOADING while it
        # loads, None when decided otherwise (not a helper already imported,
        # or a cached copy kept).
        self.done = {}
        # Top-level name -> (its module, whether it is a helper).
        self.tops = {}
        self.before = set(sys.modules)
        # An update: every helper already imported is loaded afresh.
        self.refresh = refresh
        # Module name -> (absolute path, source) to load instead of the file.
        self.given = given
        # One dict per module running, the model's first, then each helper
        # being loaded: name -> module of the helpers its imports bound.
        self.stack = [{}]


class FreshImports:
    """Fresh helper modules, and their snapshot, for the loads run between
    ``begin`` and ``end``.

    Example::

        fresh = FreshImports("/srv/models")
        ok = False
        try:
            fresh.begin()
            exec(compile("import util", "m.py", "exec"), {})
            helpers = fresh.snapshot()  # [{"module": "util", "file": "util.py", "source": ...}]
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
        self._finder = _HelperFinder(self)
        self._installed = False
        self._previous = builtins.__import__

    def begin(self, refresh=True, given=None):
        """Track the helpers this thread's imports name until ``end``.

        ``refresh``: load every helper already imported afresh (an update);
        otherwise only those whose cached copy cannot be reused (module doc).
        ``given``: module name -> (absolute path, source) to load instead of
        reading the file.
        """
        load = FreshLoad(refresh, given)
        with self._lock:
            if not self._installed:
                self._previous = builtins.__import__
                builtins.__import__ = self._hook
                _insert_finder(self._finder)
                self._installed = True
            self._loads[threading.get_ident()] = load
        # A helper file created since the directory was last listed.
        importlib.invalidate_caches()

    def end(self, ok):
        """Stop tracking for this thread; unless ``ok``, put the old helpers
        back. Safe to call when ``begin`` did not run or did not finish."""
        with self._lock:
            load = self._loads.pop(threading.get_ident(), None)
            if not self._loads and builtins.__import__ is self._hook:
                # (Another hook installed over ours keeps ours in its chain.)
                builtins.__import__ = self._previous
                _remove_finder(self._finder)
                self._installed = False
        if load is not None and not ok:
            self._restore(load)

    def snapshot(self):
        """The helpers this thread's load bound, directly or through other
        helpers, with the source each ran, sorted by module name:
        ``[{"module", "file" (relative to the root), "source"}]``. Helpers
        without source (namespace packages, bytecode only) are left out."""
        load = self._loads.get(threading.get_ident())
        if load is None:
            return []
        found = {}
        todo = list(load.stack[0].items())
        while todo:
            name, module = todo.pop()
            if name in found:
                continue
            source, deps = _kept(module)
            found[name] = (module, source)
            todo.extend((deps or {}).items())
        return [
            {"module": name, "file": self._relative(module.__spec__.loader.path), "source": source}
            for name, (module, source) in sorted(found.items())
            if source is not None
        ]

    def _relative(self, path):
        # The directory's real path (the root is one), the file's own name.
        real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        return os.path.relpath(real, self.root).replace(os.sep, "/")

    def _import(self, name, globals=None, locals=None, fromlist=(), level=0):
        load = self._loads.get(threading.get_ident())
        if load is None:
            return self._previous(name, globals, locals, fromlist, level)
        names = _names(name, globals, fromlist, level)
        if names is not None:
            self._refresh(load, *names)
        module = self._previous(name, globals, locals, fromlist, level)
        if names is not None:
            self._note(load, *names)
        return module

    def _top_is_helper(self, load, top):
        module = sys.modules.get(top)
        if module is None:
            return False
        seen = load.tops.get(top)
        if seen is None or seen[0] is not module:
            seen = load.tops[top] = (module, self._is_helper(top, module))
        return seen[1]

    def _refresh(self, load, chain, subs):
        """Load afresh, before the import runs, the cached helpers it binds
        that this load must not reuse."""
        if not self._top_is_helper(load, chain[0]):
            return
        want_chain = [i for i, name in enumerate(chain) if self._wants_fresh(load, name)]
        want_subs = [name for name in subs if self._wants_fresh(load, name)]
        if not want_chain and not want_subs:
            return
        # A submodule loaded afresh is set on its package: its package is
        # loaded afresh too, so the copy other models hold is left alone.
        last = len(chain) - 1 if want_subs else want_chain[-1]
        for name in chain[:last + 1]:
            self._fresh(load, name)
        for name in want_subs:
            self._fresh(load, name)

    def _wants_fresh(self, load, name):
        """Whether the cached helper ``name`` is to be loaded afresh (decided
        once per load)."""
        if name in load.done:
            return False
        module = sys.modules.get(name)
        if module is None or not self._is_helper(name, module):
            load.done[name] = None
            return False
        if load.refresh or not self._reusable(load, name, module):
            return True
        load.done[name] = None  # kept
        return False

    def _reusable(self, load, name, module):
        """True when a load that is not an update may bind the cached helper
        as it is: what it ran, and what its helpers ran, is known, each of
        them is the copy in ``sys.modules``, and matches the given sources."""
        seen = {}
        todo = [(name, module)]
        while todo:
            name, module = todo.pop()
            if name in seen:
                if seen[name] is not module:
                    return False
                continue
            seen[name] = module
            if sys.modules.get(name) is not module:
                return False
            source, deps = _kept(module)
            if deps is None:
                return False
            if load.given is not None and source is not None:
                given = load.given.get(name)
                if given is None or given[1] != source:
                    return False
            todo.extend(deps.items())
        return True

    def _note(self, load, chain, subs):
        """Record the helpers an import bound for the module running it."""
        if not self._top_is_helper(load, chain[0]):
            return
        deps = load.stack[-1]
        for name in chain + subs:
            module = sys.modules.get(name)
            if module is not None and self._is_helper(name, module):
                deps[name] = module

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

    def _find_spec(self, fullname, path, target):
        """``_HelperFinder.find_spec``: a helper that a loading thread imports
        gets a ``HelperLoader`` (with the given source, if any)."""
        load = self._loads.get(threading.get_ident())
        if load is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        top = fullname.partition(".")[0]
        if top != fullname and not self._top_is_helper(load, top):
            return spec
        given = load.given.get(fullname) if load.given else None
        if given is not None and (spec is None or self._is_helper_spec(fullname, spec)):
            # (Given for a name found elsewhere, the standard library, say:
            # that module, as the model's own import found it.)
            file, source = given
            return importlib.util.spec_from_file_location(
                fullname, file, loader=HelperLoader(fullname, file, source, load))
        if (spec is not None and type(spec.loader) is importlib.machinery.SourceFileLoader
                and self._is_helper_spec(fullname, spec)):
            return importlib.util.spec_from_file_location(
                fullname, spec.origin, loader=HelperLoader(fullname, spec.origin, None, load),
                submodule_search_locations=spec.submodule_search_locations)
        return spec

    def _is_helper(self, name, module):
        spec = getattr(module, "__spec__", None)
        return spec is not None and self._is_helper_spec(name, spec)

    def _is_helper_spec(self, name, spec):
        top = name.partition(".")[0]
        if top in _OWN_PACKAGES:
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


class _HelperFinder:
    """A ``sys.meta_path`` finder, just before ``PathFinder``, there while a
    model loads: see ``FreshImports._find_spec``. Other threads' imports
    pass through it (``None``)."""

    def __init__(self, fresh):
        self._fresh = fresh

    def find_spec(self, fullname, path=None, target=None):
        return self._fresh._find_spec(fullname, path, target)

    def invalidate_caches(self):
        pass


def _insert_finder(finder):
    # A new list rather than an insert or a remove in place: an import
    # running on another thread iterates the list it read, and a remove in
    # place could make it skip PathFinder.
    meta = [f for f in sys.meta_path if f is not finder]
    at = next((i for i, f in enumerate(meta) if f is importlib.machinery.PathFinder), len(meta))
    meta.insert(at, finder)
    sys.meta_path = meta


def _remove_finder(finder):
    sys.meta_path = [f for f in sys.meta_path if f is not finder]


def _names(name, globals, fromlist, level):
    """``(chain, subs)``: the modules an import statement may bind (each
    dotted prefix of its absolute name, and ``name.item`` for each item of
    its ``fromlist``), or None."""
    if level > 0:
        try:
            name = importlib.util.resolve_name("." * level + name, _package(globals))
        except (ImportError, ValueError, TypeError, AttributeError):
            return None  # the import itself says what is wrong
    elif not isinstance(name, str) or not name:
        return None
    parts = name.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    subs = [name + "." + item for item in fromlist or () if isinstance(item, str) and item != "*"]
    return chain, subs


def _kept(module):
    """``(source, deps)`` of a helper module: the source it ran and the
    helpers it bound (``HelperLoader``); ``deps`` is None when unknown (it
    was loaded outside a model load)."""
    loader = getattr(getattr(module, "__spec__", None), "loader", None)
    if isinstance(loader, HelperLoader):
        return loader.source, loader.deps
    if isinstance(loader, importlib.machinery.SourceFileLoader):
        return None, None
    return None, {}  # a namespace package, bytecode only: nothing to keep


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

"""``HelperLoader``: loads a helper module and keeps what it loaded.

While a model loads (``FreshImports``), a helper module of the models
directory imported for the first time, or afresh, is loaded by a
``HelperLoader`` instead of the usual source file loader. It keeps two
things on itself (so on the module's ``__spec__.loader``): the source it ran,
exactly as read (or as the host gave it: protocol §6, "Snapshots"), and the
helpers that the module's own ``import`` statements bound while it ran. The
two make up a model's snapshot of its helpers, which the host sends back to
a restarted server so it runs exactly the helpers the others run.

It never reads nor writes bytecode (``__pycache__``): the source is read
anyway, and a ``.pyc`` could be stale (a file rewritten within the second at
the same size).
"""

import importlib.machinery
import importlib.util
import linecache

__all__ = ["HelperLoader"]


class HelperLoader(importlib.machinery.SourceFileLoader):
    """A ``SourceFileLoader`` that keeps the source it ran and the helpers
    the module imported.

    Example::

        loader = HelperLoader("util", "/srv/models/util.py", load=load)
        spec = importlib.util.spec_from_file_location("util", loader.path, loader=loader)
        # ...the import system runs it; then loader.source, loader.deps
    """

    def __init__(self, fullname, path, given=None, load=None):
        super().__init__(fullname, path)
        # The source to run instead of the file's (the host's snapshot).
        self._given = given
        # The FreshLoad of the model load importing it: its stack collects the
        # helpers this module's imports bind.
        self._load = load
        # The source the module ran, None before it ran.
        self.source = None
        # Module name -> module of the helpers its import statements bound
        # while it ran; None when unknown (it ran outside a model load).
        self.deps = None

    def get_code(self, fullname):
        source = self._given
        self._given = None  # a later importlib.reload reads the file
        if source is None:
            source = importlib.util.decode_source(self.get_data(self.path))
        self.source = source
        # Tracebacks show the lines that ran, not the file's (a snapshot, or a
        # file edited since): an entry without mtime is kept by checkcache.
        # One per helper file, replaced by its next load.
        linecache.cache[self.path] = (len(source), None, source.splitlines(True), self.path)
        return compile(source, self.path, "exec", dont_inherit=True)

    def get_source(self, fullname):
        if self.source is not None:
            return self.source
        return super().get_source(fullname)

    def exec_module(self, module):
        load, self._load = self._load, None
        if load is None:  # run again (importlib.reload) outside a model load
            self.deps = None
            super().exec_module(module)
            return
        deps = {}
        load.stack.append(deps)
        try:
            super().exec_module(module)
        finally:
            load.stack.pop()
        self.deps = deps

"""Loads a benchmark model class from a file (shared by the reference servers)."""

import importlib.util
import os

__all__ = ["load_model"]


def load_model(path, class_name=None):
    """Import ``path`` and return an instance of its model class.

    The class is ``class_name`` when given, else the file's single class with
    an ``execute`` method (the same rule as pyproxy's ``addModel``).
    """
    name = "bench_model_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if class_name:
        return getattr(module, class_name)()
    found = [
        v for v in vars(module).values()
        if isinstance(v, type) and v.__module__ == name and hasattr(v, "execute")
    ]
    if len(found) != 1:
        raise ValueError("Cannot load model: %s has %d model classes" % (path, len(found)))
    return found[0]()

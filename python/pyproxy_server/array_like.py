"""numpy-like values (arrays, scalars, tensors, ``Series``) as plain JSON values.

A model ported from Triton's Python backend, KServe or MLServer returns
numpy arrays and ``np.int64`` as a rule. The server has no numpy (it is
stdlib-only, and numpy may not be installed), so such values are found by
their shape, not their class: a value whose *class* has a callable
``tolist`` and the attributes ``dtype`` and ``ndim`` is "array-like", and
its ``tolist()`` is what is sent. That takes numpy arrays and scalars (a
0-d array or a scalar gives a Python scalar), torch tensors (``tolist``
copies a CUDA tensor to the CPU and needs no ``detach()``), pandas
``Series`` and ``Index``, cupy and jax arrays. A pandas ``DataFrame`` is
not (no ``tolist``: its orientation is the model's choice, ``to_dict``);
``memoryview`` (a ``tolist`` and an ``ndim``, no ``dtype``) and ``bytes``
stay bytes.

:func:`default` is the strict JSON encoder's ``default`` (``big_json``):
the C encoder calls it only for a value it cannot write, so a plain result
never pays for the check, and what ``tolist()`` gives is encoded by the
same encoder (NaN refused, a datetime of a ``datetime64`` array refused
with its hint, an object array's items converted in turn).

Example::

    class Fake:                       # as numpy.ndarray
        dtype, ndim = "float32", 1
        def tolist(self):
            return [0.5, 1.5]

    json.dumps({"scores": Fake()}, default=default)   # '{"scores": [0.5, 1.5]}'
"""

__all__ = ["convert", "default", "is_array_like", "same_again"]

# binary.BYTES_TYPES (not imported: binary imports this module).
_BYTES = (bytes, bytearray, memoryview)


def is_array_like(value):
    """True for a value converted by ``tolist()`` (see the module docstring).

    Looked up on the class, never the instance: a proxy or a mock whose
    ``__getattr__`` answers every name is not mistaken for an array (nor a
    ``Mock(spec=numpy.ndarray)``, whose ``__class__`` says ndarray: ``type``
    does not).
    """
    cls = type(value)
    if isinstance(value, _BYTES):
        return False
    try:
        return callable(getattr(cls, "tolist", None)) and hasattr(cls, "dtype") and hasattr(cls, "ndim")
    except Exception:  # a metaclass whose lookup raises: not an array
        return False


def convert(value):
    """``value.tolist()`` of an array-like value (nested lists, or a Python
    scalar for a 0-d array or a scalar). Raises ``TypeError`` naming why when
    ``value`` is not array-like or its ``tolist()`` raised (a torch tensor
    on the ``meta`` device...): the encoders report a ``TypeError`` as "not
    JSON", any other exception would escape them."""
    if not is_array_like(value):
        raise TypeError("Object of type %s is not JSON serializable" % value.__class__.__name__)
    try:
        plain = value.tolist()
    except Exception as exc:
        raise TypeError(
            "Object of type %s is not JSON serializable: its .tolist() raised %s: %s"
            % (value.__class__.__name__, exc.__class__.__name__, exc)
        ) from exc
    if type(plain) is type(value):
        # numpy.longdouble (float128) and clongdouble: no Python type holds
        # them, so tolist() gives the scalar back, and the encoder would call
        # its default on it again and again until RecursionError, reported as
        # a result "nested too deep".
        raise TypeError("Object of type %s is not JSON serializable: %s" % (value.__class__.__name__, same_again(value)))
    return plain


def same_again(value):
    """Why an array-like ``value`` whose ``tolist()`` gives ``value``'s own
    type cannot be sent, and what to do."""
    return ("its .tolist() gives a %s again, a type no Python number holds: convert it with float(...)"
            " or complex(...), an array with .astype(\"float64\")" % value.__class__.__name__)


# The encoder's ``default``: called with each value it cannot write.
default = convert

"""Small pieces of English for error messages: an article before a type's
name, a count with its noun."""

__all__ = ["article", "count"]


def article(name):
    """``name`` with its indefinite article: ``"an int"``, ``"a dict"``,
    ``"an object"``, ``"a uint8"`` (by its first letter, ``u`` taken as
    "you": good enough for type names)."""
    return ("an " if name[:1].lower() in ("a", "e", "i", "o") else "a ") + name


def count(n, noun, plural=None):
    """``"1 result"``, ``"2 results"``: ``n`` with ``noun`` (``plural``,
    else ``noun + "s"``, when it is not 1)."""
    return "%d %s" % (n, noun if n == 1 else (plural or noun + "s"))

import threading


class _Closes:
    def __del__(self):
        raise ValueError("cannot close")


def _drop():
    _Closes()  # its __del__ raises: an exception Python can only ignore


class Model:
    """Fails on threads of its own, which have no call's output: ``msg["what"]``
    is "thread" (an uncaught exception) or "unraisable" (a ``__del__``'s);
    "inCall": a ``__del__``'s exception on the call's own thread."""

    def execute(self, msg):
        if msg["what"] == "inCall":
            _drop()
            return "done"
        if msg["what"] == "thread":
            target = lambda: 1 / 0  # noqa: E731
        else:
            target = _drop
        thread = threading.Thread(target=target, name="loader-%s" % msg["what"])
        thread.start()
        thread.join()
        return "done"

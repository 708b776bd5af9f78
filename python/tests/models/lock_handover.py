import gc

from one_at_a_time import Model as OneAtATime  # the models directory is on sys.path


class HandOver:
    """The model lock as a caller sees it at a hand-over: free when it looks
    (``locked()``), taken by another caller by the time it acquires."""

    def __init__(self, lock):
        self._lock = lock

    def __getattr__(self, name):  # acquire, acquire_for, release...
        return getattr(self._lock, name)

    def locked(self):
        return False

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


class Model(OneAtATime):
    """one_at_a_time's model (``threadsafe = False``), whose lock always looks
    free to a caller about to take it once ``msg["handOver"]`` installed
    that, as it does to one that looks just as the model is handed over from
    one call to the next."""

    def execute(self, msg):
        if msg.get("handOver"):
            for entry in gc.get_referrers(self):
                if type(entry).__name__ == "ModelEntry":
                    entry._lock = HandOver(entry._lock)
                    return {"installed": True}
            return {"installed": False}
        return super().execute(msg)

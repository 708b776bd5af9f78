import logging
import threading

log = logging.getLogger("scorer")


class Model:
    """Logs through Python's logging module (see InlineModel and ThreadedModel
    for the variants of a fixed mode)."""

    def execute(self, msg):
        log.warning("scoring %s", msg.get("x"))
        log.debug("not at the root's level")
        logging.getLogger("pyproxy_server.fake").warning("the server's own logger")
        if msg.get("fail"):
            try:
                1 / 0
            except ZeroDivisionError:
                log.exception("failed")
        print("printed on " + threading.current_thread().name)
        return 1


class InlineModel(Model):
    # Always on the loop thread: learning would decide it from run times,
    # which a busy machine stretches past INLINE_MAX.
    inline = True


class ThreadedModel(Model):
    threaded = True

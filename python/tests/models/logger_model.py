import logging
import threading

log = logging.getLogger("scorer")


class Model:
    """Logs through Python's logging module (msg["threaded"]: the threaded
    variant, see ThreadedModel)."""

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


class ThreadedModel(Model):
    threaded = True

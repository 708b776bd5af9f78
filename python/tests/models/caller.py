from pyproxy import host


class Model:
    """Calls back into the host."""

    def execute(self, msg):
        op = msg["op"]
        if op == "call":
            return {"answer": host.call(msg["name"], msg.get("args"), timeout=msg.get("timeout", 5))}
        if op == "cache":
            host.cache.set("k", {"v": 1}, ttl=5)
            got = host.cache.get("k")
            deleted = host.cache.delete("k")
            host.publish("news", {"hello": 1})
            return {"got": got, "deleted": deleted}
        if op == "error":
            try:
                host.call("fails", {})
            except host.HostError as exc:
                return {"type": exc.remote_type, "message": exc.remote_message, "text": str(exc)}
        if op == "thread":
            import threading

            out = {}

            def run():
                try:
                    host.call("x")
                except host.HostError as exc:
                    out["error"] = str(exc)

            t = threading.Thread(target=run)
            t.start()
            t.join()
            return out
        return None

class Model:
    """Returns various results chosen by msg["kind"]."""

    def execute(self, msg):
        kind = msg["kind"]
        if kind == "set":
            return {"s": {1, 2}}
        if kind == "nan":
            return {"x": float("nan")}
        if kind == "big":
            return {"data": "x" * msg["size"]}
        if kind == "echo":
            return msg["value"]
        if kind == "exit":
            raise SystemExit(3)
        return None

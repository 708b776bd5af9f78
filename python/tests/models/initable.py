import json


class Model:
    def __init__(self, options):
        self.table = {}

    def init(self, path):
        with open(path) as f:
            self.table = json.load(f)
        return {"entries": len(self.table)}

    def execute(self, msg):
        return {"value": self.table.get(msg["key"])}

class Model:
    def __init__(self, options):
        raise RuntimeError("cannot build: " + str(options.get("why")))

    def execute(self, msg):
        return msg

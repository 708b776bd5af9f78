class Model:
    inputs = {"x": "float"}

    def execute(self, msg):
        return msg

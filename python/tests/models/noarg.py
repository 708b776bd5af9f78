class Model:
    def __init__(self):
        self.calls = 0

    def execute(self, msg):
        self.calls += 1
        return None

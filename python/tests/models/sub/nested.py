class Model:
    def execute(self, msg):
        return {"nested": True}

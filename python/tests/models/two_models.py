class First:
    def execute(self, msg):
        return {"which": "first"}


class Second:
    def execute(self, msg):
        return {"which": "second"}

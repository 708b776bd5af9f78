import sys


class Model:
    def execute(self, msg):
        print("hello from", msg.get("who", "model"))
        sys.stderr.write("careful\n")
        print("no newline", end="")
        return {"printed": True}

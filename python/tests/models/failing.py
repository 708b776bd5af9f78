class Model:
    def execute(self, msg):
        return helper(msg)


def helper(msg):
    raise ValueError("bad input %r" % (msg,))

"""A small raw-socket client and process harness for the server tests.

Deliberately independent of the server's code paths except the ``Framer``
(tested on its own), so the tests check the wire behaviour, not our
assumptions about it.
"""

import hashlib
import hmac
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from pyproxy_server.framer import Framer

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS_DIR = os.path.join(PYTHON_DIR, "tests", "models")
SECRET = "5ec7e7" * 10

HEADER = struct.Struct(">4sB16sI")


def frame(payload, checksum=None, end=None, magic=b"PYPX", version=1, length=None):
    """Build a frame by hand, optionally corrupting any field."""
    digest = hashlib.md5(payload).digest()
    checksum = digest if checksum is None else checksum
    end = checksum if end is None else end
    length = len(payload) if length is None else length
    return HEADER.pack(magic, version, checksum, length) + payload + end


def encode(msg):
    return Framer.encode(json.dumps(msg).encode())


class Closed(Exception):
    """The server closed the connection."""


class WithFields(dict):
    """A host handler's answer that is the reply's fields (``result`` and
    others, such as ``$bytes``), not only its result."""


class Client:
    """One connection: send messages, read messages, answer host requests."""

    def __init__(self, sock):
        self.sock = sock
        self.framer = Framer()
        self.inbox = []
        self.events = []
        self.host_requests = []
        self.others = []
        # Replies read while waiting for another one, by id.
        self.replies = {}
        # cmd -> fn(args) -> result; raise Exception to reply an error.
        self.handlers = {}
        self.closed = False

    def send(self, *msgs):
        self.sock.sendall(b"".join(encode(m) for m in msgs))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        while not self.inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the server in time")
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                continue
            try:
                data = self.sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                raise Closed("connection closed by the server")
            for item in self.framer.feed(data):
                self.inbox.append(json.loads(item))

    def recv(self, timeout=5.0):
        """Return the next message (any shape)."""
        self._fill(time.monotonic() + timeout)
        return self.inbox.pop(0)

    def reply_for(self, rid, timeout=5.0):
        """Read until the reply with ``rid``; keep events, answer host requests."""
        if rid in self.replies:
            return self.replies.pop(rid)
        deadline = time.monotonic() + timeout
        while True:
            self._fill(deadline)
            msg = self.inbox.pop(0)
            if ("ok" in msg or "$spill" in msg) and "cmd" not in msg:
                if msg.get("id") == rid:
                    return msg
                self.replies[msg.get("id")] = msg
            elif "event" in msg:
                self.events.append(msg)
            elif "cmd" in msg:
                self._answer(msg)
            else:
                self.others.append(msg)

    def _answer(self, msg):
        self.host_requests.append(msg)
        handler = self.handlers.get(msg["cmd"])
        if handler is None:
            reply = {"id": msg["id"], "ok": False, "error": {"type": "UnknownCommandError", "message": "no handler %s" % msg["cmd"]}}
        else:
            try:
                result = handler(msg.get("args"))
                reply = {"id": msg["id"], "ok": True, "result": result}
                if isinstance(result, WithFields):
                    reply.update(result)  # the reply is the handler's own fields
            except Exception as exc:
                reply = {"id": msg["id"], "ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
        self.send(reply)

    def request(self, cmd, rid=None, timeout=5.0, **args):
        """Send ``cmd`` and return its reply message."""
        self._next = getattr(self, "_next", 1000) + 1
        rid = self._next if rid is None else rid
        msg = {"id": rid, "cmd": cmd}
        msg.update(args)
        self.send(msg)
        return self.reply_for(rid, timeout)

    def call(self, cmd, timeout=5.0, **args):
        """Send ``cmd`` and return its result; fail on an error reply."""
        reply = self.request(cmd, timeout=timeout, **args)
        if not reply["ok"]:
            raise AssertionError("%s failed: %r" % (cmd, reply["error"]))
        return reply["result"]

    def wait_closed(self, timeout=5.0):
        """Drain until EOF; True when the server closed the connection."""
        try:
            while True:
                self.recv(timeout)
        except Closed:
            return True
        except TimeoutError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def copy_models(target):
    """Copy the test models to ``target`` (no logs or bytecode); return it."""
    shutil.copytree(MODELS_DIR, target, ignore=shutil.ignore_patterns("logs", "__pycache__"))
    return target


class ServerProcess:
    """A real ``python3 -m pyproxy_server`` on port 0; always ``kill()`` it."""

    def __init__(self, root=None, args=(), insecure=False, secret=SECRET, env=None, log_mark=None):
        """``env``: variables for the server's environment besides ours; its
        ``PYTHONPATH`` goes before the server's package directory.
        ``log_mark``: the secret line's ``logMark``."""
        self.secret = secret
        # By default a copy of the test models: the server writes its log
        # under its root, and the source tree must not collect them.
        self._own_root = None
        if root is None:
            self._own_root = tempfile.mkdtemp(prefix="pyproxy-test-")
            root = copy_models(os.path.join(self._own_root, "models"))
        self.root = root
        self.stderr = tempfile.TemporaryFile()
        extra = dict(env or ())
        env = dict(os.environ)
        env.update(extra)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (extra.get("PYTHONPATH"), PYTHON_DIR)))
        cmd = [sys.executable, "-m", "pyproxy_server", "--path", root, "--id", "t1"]
        if "--unix" not in args:
            cmd += ["--port", "0"]
        cmd += list(args)
        if insecure:
            cmd.append("--insecure-no-auth")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        self.clients = []
        try:
            if not insecure:
                start = {"secret": secret} if log_mark is None else {"secret": secret, "logMark": log_mark}
                self.proc.stdin.write((json.dumps(start) + "\n").encode())
                self.proc.stdin.flush()
            self.ready = self._read_ready()
        except BaseException:
            self.kill()
            raise
        self.port = self.ready["port"]

    def _read_ready(self, timeout=10.0):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("no ready line; stderr: %s" % self.stderr_text())
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("server exited before its ready line; stderr: %s" % self.stderr_text())
        return json.loads(line)

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def connect(self, auth=True):
        if self.ready.get("port") is not None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.ready["unix"])
        client = Client(sock)
        self.clients.append(client)
        client.hello = client.recv()
        if auth and client.hello.get("auth") == "hmac-sha256":
            client.auth = client.call("auth", mac=mac(self.secret, client.hello["nonce"]))
        return client

    def wait(self, timeout=5.0):
        """Wait for the process to exit; return its code (None on timeout)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        for client in self.clients:
            client.close()
        # The server leads a process group (``lead_process_group``), as the
        # host kills it: what its models forked (a ``multiprocessing`` pool's
        # workers) ends with it. A pool worker of a test that failed stayed
        # running for good, blocked on its queue's lock.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (AttributeError, OSError):  # no such group (it leads none), or no process groups
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass
        self.stderr.close()
        if self._own_root is not None:
            shutil.rmtree(self._own_root, ignore_errors=True)


def mac(secret, nonce):
    return hmac.new(secret.encode(), nonce.encode(), hashlib.sha256).hexdigest()

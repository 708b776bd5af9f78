"""A model that publishes to a gateway channel while it executes.

Subscribe with ``curl -N localhost:8000/v1/channels/events`` and execute
``{"event": "signup", "user": "ada"}``: every subscriber receives the message.
"""

import time

from pyproxy import host


class Publisher:
    """Publishes ``msg`` to ``msg["channel"]`` (default: the ``channel`` option)."""

    outputs = {"channel": "string", "seq": "integer", "delivered": "integer"}

    def __init__(self, options=None):
        options = options or {}
        self.default_channel = options.get("channel", "events")

    def execute(self, msg):
        channel = msg.get("channel", self.default_channel)
        payload = {k: v for k, v in msg.items() if k != "channel"}
        payload["published_at"] = time.time()
        return host.publish(channel, payload)

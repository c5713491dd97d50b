"""Example consumers: acknowledge gilmsg messages, record each consumed message as a JSON line.

Configuration (``fedmsg.d/*.py``), for a consumer whose ``config_key`` is ``K``:

``K``
    True to run the consumer in ``fedmsg-hub``.
``K.topic``
    Topic prefix to subscribe to (default ``""``: every message on the bus).
``K.output``
    File to append one JSON object per consumed message to (default: none, log only).
``K.gilmsg_name``
    Identity to acknowledge as (default: the hub's ``name``); see :mod:`gilmsg.consumers`.
``K.delay``
    Seconds each ``consume()`` takes (default 0): stands for slow work, e.g. to watch how the
    hub stops while a message is being consumed.
``K.gilmsg_ack_mode``
    ``processed`` to send a ``processed`` / ``rejected`` ACK once ``consume()`` is over.

A message whose body has a ``"fail"`` key makes ``consume()`` raise ``RuntimeError`` with that
text (after recording it): the way to see a ``rejected`` ACK. One with a ``"gate"`` key (a file
path) makes ``consume()`` wait until that file exists (at most 60 s), for tests that need a
``consume()`` to stay busy until they say so.

Each line written holds ``consumer`` (class name), ``identity`` (Common Name it acknowledges
as), ``topic``, ``msg_id``, ``msg``, ``pid`` and ``thread``, and is written with a single
``write`` on a file opened for appending, so readers never see half a line.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from gilmsg import GilmsgConsumer

log = logging.getLogger(__name__)


class ExampleConsumer(GilmsgConsumer):
    """Acknowledges what is addressed to it; records every message it consumes."""

    config_key = "gilmsg_example"
    topic = ""

    def __init__(self, hub: Any) -> None:
        config = hub.config
        # moksha subscribes to self.topic in the constructor: set it first.
        self.topic = config.get(f"{self.config_key}.topic", type(self).topic)
        self.output: str | None = config.get(f"{self.config_key}.output")
        self.delay = float(config.get(f"{self.config_key}.delay", 0) or 0)
        self._write_lock = threading.Lock()
        super().__init__(hub)

    def consume(self, message: dict[str, Any]) -> None:
        """Record ``message`` (the moksha wrapper; the fedmsg envelope is ``message["body"]``)."""
        envelope = message["body"]
        body = envelope.get("msg")
        if isinstance(body, dict) and isinstance(body.get("gate"), str):
            deadline = time.monotonic() + 60
            while not os.path.exists(body["gate"]) and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.delay:
            log.info("%s consuming %s", type(self).__name__, envelope.get("msg_id"))
            time.sleep(self.delay)
        record = {
            "consumer": type(self).__name__,
            "identity": self.common_name,
            "topic": message["topic"],
            "msg_id": envelope.get("msg_id"),
            "msg": envelope.get("msg"),
            "pid": os.getpid(),
            "thread": threading.current_thread().name,
        }
        if self.output:
            line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
            with self._write_lock:
                fd = os.open(self.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        # Logged once the line is written: tests await this log line, then read the file.
        log.info("%s consumed %s on %s", record["consumer"], record["msg_id"], record["topic"])
        if isinstance(body, dict) and "fail" in body:
            raise RuntimeError(body["fail"])


class OtherExampleConsumer(ExampleConsumer):
    """The same behaviour under its own ``config_key``: to run two consumers in one hub."""

    config_key = "gilmsg_example_other"

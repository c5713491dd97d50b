"""The chaos suite's hub recipient: a GilmsgConsumer whose application appends every delivery to
the file of the config key ``chaos_app.log`` (``<time> <msg_id> <nonce>``, fsynced), after
``chaos_app.work`` seconds of "work". ``processed`` ACKs and the durable record come from the
config keys ``chaos_app.gilmsg_ack_mode`` and ``chaos_app.gilmsg_dedup_path``."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from gilmsg import GilmsgConsumer


class ChaosConsumer(GilmsgConsumer):
    """Logs each gilmsg chaos message it consumes."""

    topic = "org.gilmsg.test.chaos.chaos"
    config_key = "chaos_app"

    def __init__(self, hub: Any) -> None:
        self._log = open(hub.config["chaos_app.log"], "a", encoding="utf-8")
        self._work = float(hub.config.get("chaos_app.work", 0.0))
        self._lock = threading.Lock()
        super().__init__(hub)

    def consume(self, message: dict[str, Any]) -> None:
        envelope = message["body"]
        body = envelope.get("msg")
        if not isinstance(body, dict) or "nonce" not in body:
            return
        time.sleep(self._work)
        with self._lock:
            self._log.write(f"{time.time():.6f} {envelope.get('msg_id')} {body['nonce']}\n")
            self._log.flush()
            os.fsync(self._log.fileno())

"""A plain ``fedmsg.consumers.FedmsgConsumer`` (no gilmsg), for hubs that run one beside a
GilmsgConsumer (tests/integration/test_hub_sockets.py puts this directory on PYTHONPATH)."""

from __future__ import annotations

import logging
from typing import Any

import fedmsg.consumers

log = logging.getLogger("gilmsg.tests.plain")


class PlainConsumer(fedmsg.consumers.FedmsgConsumer):
    """Logs ``plain consumed <msg_id>`` for every message; enabled by ``plain_consumer``."""

    topic = ""
    config_key = "plain_consumer"
    validate_signatures = False

    def consume(self, message: dict[str, Any]) -> None:
        log.info("plain consumed %s", message["body"].get("msg_id"))

"""``/live``, ``/ready`` and ``/metrics`` inside ``fedmsg-hub``, served by its Twisted reactor.

:func:`start` is called by :class:`gilmsg.GilmsgConsumer` and the outbox plugin when they are
created; it listens once per process, at the config key ``gilmsg.monitoring = "HOST:PORT"``,
bound exactly there before the hub receives anything. Pages are rendered in the reactor thread
(no blocking: the readiness checks stat files, the metrics are in memory); Twisted writes
without blocking, so a scraper that never reads costs a buffer, never the hub's time, and an
idle connection is dropped after :data:`gilmsg.monitoring.server.IO_TIMEOUT` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gilmsg import monitoring
from gilmsg.errors import ConfigError, InvalidInput

log = logging.getLogger("gilmsg.monitoring")

_port: Any = None


def start(config: Mapping[str, Any]) -> Any:
    """Listen at ``config["gilmsg.monitoring"]`` in the reactor (once per process); the
    listening port, or None if the key is not set.

    Raises:
        ConfigError: the value is not ``HOST:PORT``, or it cannot be bound (names it).
    """
    global _port
    from gilmsg.config import registry

    address = registry.get(config, monitoring.CONFIG_KEY)
    if not address:
        return None
    if _port is not None:
        return _port
    from twisted.internet.error import CannotListenError
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from gilmsg.monitoring.server import IO_TIMEOUT, page, parse_address

    try:
        host, port = parse_address(address)
    except InvalidInput as exc:
        raise ConfigError(f"config key {monitoring.CONFIG_KEY!r}: {exc}") from None
    monitoring.enable()
    monitoring.watch_trust(config)
    monitoring.expect_consuming()  # until the reactor runs

    class Pages(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:  # noqa: N802 - Twisted's name
            status, ctype, body = page(request.path.decode("utf-8", "replace"))
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", ctype.encode())
            return body

    from moksha.hub.reactor import reactor

    site = Site(Pages(), timeout=IO_TIMEOUT)
    site.noisy = False
    try:
        _port = reactor.listenTCP(port, site, interface=host)
    except CannotListenError as exc:
        why = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
        raise ConfigError(f"cannot bind monitoring endpoint {address}: {why}") from None
    log.info("gilmsg: monitoring on http://%s:%d (/live, /ready, /metrics)", host, port)
    return _port

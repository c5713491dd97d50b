"""Where ACKs travel over ZeroMQ when ``gilmsg.ack_endpoints`` gives a name endpoints of its own
for them: then receivers of the whole bus, connected to the ``endpoints`` entries, never get the
other recipients' ACKs (see ``docs/performance.rst``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gilmsg.config import registry
from gilmsg.errors import ConfigError

#: Where each name sends its ACKs, when not on its ``endpoints`` entry.
ACK_ENDPOINTS_KEY = "gilmsg.ack_endpoints"


def ack_endpoints(config: Mapping[str, Any], name: str) -> list[str]:
    """The ``gilmsg.ack_endpoints`` entry of ``name``: where it sends its ACKs ([] when it has
    none: on its ``endpoints`` entry, with everything else it sends; always [] for a transport
    other than ZeroMQ).

    Raises:
        ConfigError: ``gilmsg.ack_endpoints`` is not a dict of addresses.
    """
    if registry.get(config, "gilmsg.transport") != "zmq":
        return []  # other transports route ACKs their own way (AMQP: the reply queue)
    table = config.get(ACK_ENDPOINTS_KEY) or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"{ACK_ENDPOINTS_KEY} must be a dict: name -> list of addresses, "
                          f"not {type(table).__name__}")
    addresses = table.get(name) or []
    addresses = [addresses] if isinstance(addresses, str) else list(addresses)
    if not all(isinstance(a, str) for a in addresses):
        raise ConfigError(f"{ACK_ENDPOINTS_KEY}[{name!r}] must list addresses (strings)")
    return addresses


def ack_listen_endpoints(config: Mapping[str, Any], skip: str | None = None) -> list[str]:
    """Where a publisher hears each other name's ACKs: its ``gilmsg.ack_endpoints`` entry if it
    has one, else its ``endpoints`` entry (``relay_inbound`` and ``skip`` left out)."""
    out: list[str] = []
    names = list(config.get("endpoints") or {})
    names += [n for n in (config.get(ACK_ENDPOINTS_KEY) or {}) if n not in names]
    for name in names:
        if name in ("relay_inbound", skip):
            continue
        own = ack_endpoints(config, name)
        if not own:
            addresses = (config.get("endpoints") or {}).get(name) or []
            own = [addresses] if isinstance(addresses, str) else list(addresses)
        out.extend(a for a in own if a not in out)
    return out


def named_ack_endpoints(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, address)`` of every ``gilmsg.ack_endpoints`` entry: what a receiver that wants
    to see ACKs (``show_acks``, the bridge) connects to besides :func:`named_endpoints`."""
    return [(name, a) for name in (config.get(ACK_ENDPOINTS_KEY) or {})
            for a in ack_endpoints(config, name)]

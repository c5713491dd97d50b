"""Transports: the seam between gilmsg and the bytes on the wire.

:mod:`gilmsg.transport.base` is the interface; :mod:`gilmsg.transport.zmq` (the default, the
only module that imports ``zmq``) and :mod:`gilmsg.transport.memory` (in-process, for tests)
implement it. The config key ``gilmsg.transport`` picks one: ``"zmq"``, ``"memory"`` or the
dotted name of any module with the same two functions. Nothing is imported until used.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from gilmsg.config import registry
from gilmsg.errors import ConfigError

#: Config key naming the transport, and its default.
CONFIG_KEY = "gilmsg.transport"
DEFAULT = "zmq"


def module_for(config: Mapping[str, Any]) -> ModuleType:
    """The transport module ``config`` asks for (imported now).

    Raises:
        ConfigError: the name is not a string or no such module can be imported.
    """
    key, name = registry.lookup(config, CONFIG_KEY)
    name = name or DEFAULT
    if not isinstance(name, str):
        raise ConfigError(f"config key {key!r} must be a transport name, not {name!r}")
    path = name if "." in name else f"{__name__}.{name}"
    try:
        return importlib.import_module(path)
    except ImportError as exc:
        raise ConfigError(f"config key {key!r}: no transport {name!r} ({exc})") from None


def link_for(config: Mapping[str, Any]) -> Any:
    """:func:`gilmsg.link.link_for` (kept here for callers of the old module)."""
    from gilmsg.link import link_for as _link_for

    return _link_for(config)


def close_all() -> None:
    """:func:`gilmsg.link.close_all` (kept here for callers of the old module)."""
    from gilmsg import link

    link.close_all()


def __getattr__(name: str) -> Any:
    # ZeroMQ's socket options (tune, LinkOptions ...) stay reachable as gilmsg.transport.<name>.
    if name in ("tune", "LinkOptions", "LINK_DEFAULTS", "Reconnector", "HWM", "RECONNECT_IVL_MS",
                "RECONNECT_IVL_MAX_MS", "EXIT_LINGER_MS", "MAX_SUBSCRIPTION_BYTES",
                "MAX_PREFIX_BYTES", "MAX_ACK_FRAME_BYTES", "ACK_RCVHWM"):
        from gilmsg.transport import zmq as _zmq

        return getattr(_zmq, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

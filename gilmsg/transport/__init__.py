"""Transports: the seam between gilmsg and the bytes on the wire.

:mod:`gilmsg.transport.base` is the interface; :mod:`gilmsg.transport.zmq` (the default, the
only package that imports ``zmq``) and :mod:`gilmsg.transport.memory` (in-process, for tests)
implement it, as does :mod:`gilmsg.transport.amqp`. The config key ``gilmsg.transport`` picks
one: ``"zmq"``, ``"amqp"``, ``"memory"`` or the dotted name of any module providing
:class:`~gilmsg.transport.base.Transport`. Nothing is imported until used, and nothing here
imports upward (the links that drive a transport are :mod:`gilmsg.link`'s) or re-exports a
transport's own names (ZeroMQ's socket options are :mod:`gilmsg.transport.zmq`'s).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, cast

from gilmsg.config import registry
from gilmsg.errors import ConfigError
from gilmsg.transport.base import Transport

#: Config key naming the transport, and its default.
CONFIG_KEY = "gilmsg.transport"
DEFAULT = "zmq"


def module_for(config: Mapping[str, Any]) -> Transport:
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
        module = importlib.import_module(path)
    except ImportError as exc:
        raise ConfigError(f"config key {key!r}: no transport {name!r} ({exc})") from None
    return cast(Transport, module)

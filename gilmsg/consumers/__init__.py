"""Recipients that run inside someone else's loop, and acknowledge by themselves.

- :mod:`gilmsg.consumers.hub`: :class:`GilmsgConsumer`, the base class for ``fedmsg-hub``
  consumers (moksha and Twisted);
- :mod:`gilmsg.consumers.amqp`: :class:`GilmsgCallback`, the base class for
  ``fedora-messaging consume --callback``;
- :mod:`gilmsg.consumers.signals`: the hub's prompt, chained signal handling.

Importing this package loads neither moksha nor fedora-messaging: each class is imported from
its own module on first use.
"""

from __future__ import annotations

from typing import Any

_LAZY = {"GilmsgConsumer": "gilmsg.consumers.hub", "GilmsgCallback": "gilmsg.consumers.amqp"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gilmsg.consumers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["GilmsgCallback", "GilmsgConsumer"]

"""The ZeroMQ transport, fedmsg's own: the only package of gilmsg that imports ``zmq``.

A :class:`ZmqPublisher` binds (or, in ``active`` mode, connects) an XPUB socket, which also
reports subscriptions, and listens for ACKs on one SUB socket connected to the rest of the bus;
a :class:`ZmqSubscription` holds one SUB socket per endpoint. This module is the
:class:`~gilmsg.transport.base.Transport` (:func:`open_publisher`, :func:`subscribe`,
:func:`remember_route`); the parts live in its modules, one concern each, and every name is
importable from here:

- :mod:`~gilmsg.transport.zmq.options`: the socket options (:func:`tune`,
  :class:`LinkOptions`, :data:`LINK_DEFAULTS`), frame and queue limits, :func:`receive_hwm`;
- :mod:`~gilmsg.transport.zmq.reconnector`: :class:`Reconnector`;
- :mod:`~gilmsg.transport.zmq.publisher`: :class:`ZmqPublisher`;
- :mod:`~gilmsg.transport.zmq.subscription`: :class:`ZmqSubscription`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gilmsg.config import Publishing
from gilmsg.transport.zmq.options import (
    ACK_RCVHWM,
    EXIT_LINGER_MS,
    HWM,
    LINK_DEFAULTS,
    MAX_ACK_FRAME_BYTES,
    MAX_SUBSCRIPTION_BYTES,
    RECEIVE_BACKLOG_DEFAULT,
    RECEIVE_BACKLOG_KEY,
    RECONNECT_IVL_MAX_MS,
    RECONNECT_IVL_MS,
    LinkOptions,
    receive_hwm,
    tune,
)
from gilmsg.transport.zmq.publisher import ACK_BATCH, MAX_PREFIX_BYTES, ZmqPublisher
from gilmsg.transport.zmq.reconnector import Reconnector
from gilmsg.transport.zmq.subscription import ZmqSubscription

__all__ = [
    "ACK_BATCH", "ACK_RCVHWM", "EXIT_LINGER_MS", "HWM", "LINK_DEFAULTS", "MAX_ACK_FRAME_BYTES",
    "MAX_PREFIX_BYTES", "MAX_SUBSCRIPTION_BYTES", "RECEIVE_BACKLOG_DEFAULT",
    "RECEIVE_BACKLOG_KEY", "RECONNECT_IVL_MAX_MS", "RECONNECT_IVL_MS", "LinkOptions",
    "Reconnector", "ZmqPublisher", "ZmqSubscription", "open_publisher", "receive_hwm",
    "remember_route", "subscribe", "tune",
]


def open_publisher(publishing: Publishing, config: Mapping[str, Any]) -> ZmqPublisher:
    """Bind (or connect) ``publishing``'s endpoint. Raises ConfigError if none can be used."""
    return ZmqPublisher(publishing, config)


def remember_route(msg_id: str, route: str) -> None:
    """Ignored: ZeroMQ sends every ACK on the ACK topic, which the publisher hears
    (:meth:`gilmsg.transport.base.Transport.remember_route`)."""


def subscribe(endpoints: Sequence[tuple[str, str]], topic: str,
              config: Mapping[str, Any], ignore: Collection[str] = ()) -> ZmqSubscription:
    """Subscribe to ``topic`` on every ``(name, endpoint)``; the reader thread drops the
    messages whose topic is one of ``ignore``."""
    return ZmqSubscription(endpoints, topic, config, ignore)

"""The interface between gilmsg and whatever moves its bytes.

A transport is one module (``gilmsg/transport/<name>.py``, or any importable module named by the
``gilmsg.transport`` config key) providing what :class:`Transport` types: two functions,

``open_publisher(publishing: gilmsg.config.Publishing, config: Mapping) -> Publisher``
    Bind (or, ``method == "connect"``, connect) this identity's publishing endpoint; raise
    :class:`~gilmsg.errors.ConfigError` if none of its addresses can be used, or if one of the
    transport's own config keys is wrong.

``subscribe(endpoints: Sequence[tuple[str, str]], topic: str, config: Mapping) -> Subscription``
    Receive every message whose topic starts with ``topic`` from ``(name, endpoint)`` pairs.

``remember_route(msg_id: str, route: str) -> None``
    ACKs this process sends for ``msg_id`` go to ``route``: where the publisher asked for
    them, as learnt from the received message's transport metadata by a receiver that does
    not read through this transport's :class:`Subscription` (AMQP's ``reply_to``, handed over
    by :class:`gilmsg.consumers.amqp.GilmsgCallback` through
    :meth:`gilmsg.recipient.Recipient.remember_route` and :meth:`gilmsg.link.Link.
    remember_route`). Transports whose ACKs need no routing (ZeroMQ, memory) ignore it; a
    module without it is treated as one of those.

``config`` is the whole fedmsg configuration: a transport reads its own keys there.

Frames are what :func:`gilmsg.core.wire.encode` returns: ``[topic, envelope JSON]``.
Everything else (signing, the protocol's rules, threads and futures) is the same for every
transport; :class:`gilmsg.link.Link` drives a :class:`Publisher`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:  # for the types only: nothing here imports upward at run time
    from gilmsg.config import Publishing


class Heard(NamedTuple):
    """What :meth:`Publisher.poll` brought: ACK frames, and whether a subscriber joined."""

    frames: list[list[bytes]]
    joined: bool


class Publisher(Protocol):
    """One publishing identity's endpoint, with its ACK listener.

    :meth:`poll`, :meth:`listen` and :meth:`close` are called from one thread only (the link's);
    :meth:`send`, :meth:`wake` and :meth:`wait_subscriber` from any thread.
    """

    #: The endpoint actually bound or connected.
    address: str | None

    def send(self, frames: Sequence[bytes]) -> None:
        """Send frames once, fire-and-forget; never blocks for long."""

    def listen(self, topics: Sequence[str], endpoints: Sequence[str]) -> None:
        """Hear messages on ``topics`` from ``endpoints`` too (idempotent)."""

    def poll(self, timeout: float, watch_subscribers: bool) -> Heard:
        """Wait up to ``timeout`` seconds for ACK frames, a new subscriber or :meth:`wake`.

        With ``watch_subscribers`` false, joins need not be reported (nothing is pending).
        """

    def wake(self) -> None:
        """Make a :meth:`poll` in progress (or the next one) return at once."""

    def wait_subscriber(self, topic: str, timeout: float) -> bool:
        """True once someone subscribes to a prefix of ``topic``; False after ``timeout``."""

    def close(self) -> None:
        """Close everything (outgoing messages get a short linger)."""


class Subscription(Protocol):
    """Messages from a set of endpoints, for a receiver (``gilmsg.tail_messages``)."""

    def receive(self, timeout: float) -> list[tuple[str, str, list[bytes]]]:
        """``(name, endpoint, frames)`` received within ``timeout`` seconds (maybe none)."""

    def close(self) -> None:
        """Disconnect and free everything."""


class Transport(Protocol):
    """A transport module, as :func:`gilmsg.transport.module_for` returns it and
    :class:`gilmsg.link.Link` drives it (see the module docstring)."""

    __name__: str

    def open_publisher(self, publishing: Publishing, config: Mapping[str, Any]) -> Publisher:
        """Bind (or connect) this identity's publishing endpoint, with its ACK listener.

        Raises:
            ConfigError: none of its addresses can be used, or a transport key is wrong.
        """

    def subscribe(self, endpoints: Sequence[tuple[str, str]], topic: str,
                  config: Mapping[str, Any], ignore: Collection[str] = ()) -> Subscription:
        """Receive every message whose topic starts with ``topic`` from ``(name, endpoint)``.

        A message whose topic is exactly one of ``ignore`` may be dropped unread, as early as
        the transport can (the receiver still checks: a transport may hand it over anyway).
        """

    def remember_route(self, msg_id: str, route: str) -> None:
        """Route the ACKs this process sends for ``msg_id`` to ``route`` (or ignore it)."""


def send_ack(pub: Publisher, frames: Sequence[bytes]) -> None:
    """Send the ACK ``frames`` where ``pub``'s transport sends ACKs: its optional ``send_ack``
    (ZeroMQ: the ``gilmsg.ack_endpoints`` socket, when this name has one), else ``send``."""
    getattr(pub, "send_ack", pub.send)(frames)

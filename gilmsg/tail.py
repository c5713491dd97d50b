"""``gilmsg.tail_messages``: fedmsg's tail_messages that acknowledges before it yields."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gilmsg import config as gconfig
from gilmsg import transport
from gilmsg.core import wire
from gilmsg.recipient import Recipient

#: How often (s) the receive loop wakes up with nothing to read, so signals are handled.
POLL_INTERVAL = 0.5


def tail_messages(
    topic: str = "",
    passive: bool = False,
    ack: bool = True,
    show_acks: bool = True,
    **config: Any,
) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """Yield ``(name, endpoint, topic, envelope)`` for every message on the bus, as fedmsg does.

    Connects to every endpoint of the configuration (``passive`` is accepted and ignored, as in
    fedmsg). Before a gilmsg message that names this process's certificate Common Name (or names
    no recipients) is yielded, a signed ACK has been sent. Each gilmsg msg_id is yielded once
    however often it is re-sent; repeats are acknowledged again. With ``validate_signatures``
    true, messages whose signature does not hold are dropped (and logged). ``ack=False`` watches
    without acknowledging and needs no identity. ``show_acks=False`` drops ACK traffic unread
    (fedmsg yields it; with many recipients it is most of the bus). With ZeroMQ, frames over
    1 MiB are cut off unread (the connection is re-made at once) and the sockets use the
    connection-health keys of :class:`gilmsg.transport.zmq.LinkOptions`.

    Raises:
        ConfigError, CertificateError: at the first ``next()``, if ``ack`` is true and this
            process's identity, endpoint or certificate is missing or unusable.
    """
    cfg = gconfig.load(config)
    recipient = Recipient(cfg, ack=ack)
    ack_topic = recipient.ack_topic.encode("utf-8")
    subscription = transport.module_for(cfg).subscribe(gconfig.named_endpoints(cfg), topic, cfg)
    try:
        while True:
            for name, endpoint, frames in subscription.receive(POLL_INTERVAL):
                if not show_acks and frames[:1] == [ack_topic]:
                    continue
                decoded = wire.decode(frames)
                if decoded is None:
                    continue
                msg_topic, envelope = decoded
                if recipient.handle(msg_topic, envelope):
                    yield name, endpoint, msg_topic, envelope
    finally:
        subscription.close()


__all__ = ["tail_messages"]

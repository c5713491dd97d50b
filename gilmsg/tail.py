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
    dedup_path: str | None = None,
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

    ``dedup_path``: an SQLite file (see :mod:`gilmsg.outbox.dedup`) recording the gilmsg
    messages consumed, so that a restarted process never yields one again (its repeats are
    still acknowledged). A message counts as consumed, and is recorded, when the generator is
    resumed or closed after yielding it: the loop body that got it has ended (normally, by
    ``break``, or by an exception). A crash inside the loop body yields it again after the
    restart if it is re-sent; a crash after the body ended and before the record's commit
    returned (microseconds) does too.

    Raises:
        ConfigError, CertificateError: at the first ``next()``, if ``ack`` is true and this
            process's identity, endpoint or certificate is missing or unusable.
        OutboxError: at the first ``next()``, ``dedup_path`` cannot be used; later, if it
            cannot be written.
    """
    cfg = gconfig.load(config)
    consumed = None
    if dedup_path is not None:
        from gilmsg.outbox.dedup import Consumed

        consumed = Consumed(dedup_path)
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
                if not recipient.handle(msg_topic, envelope):
                    continue
                key = None
                if consumed is not None and wire.is_gilmsg(envelope):
                    key = wire.digest(envelope)  # the key Recipient deduplicates on
                    if consumed.done(key):
                        continue
                try:
                    yield name, endpoint, msg_topic, envelope
                finally:
                    if key is not None:
                        consumed.record(key, envelope.get("msg_id"))  # type: ignore[union-attr]
    finally:
        subscription.close()
        if consumed is not None:
            consumed.close()


__all__ = ["tail_messages"]

"""``gilmsg.tail_messages``: fedmsg's tail_messages that acknowledges before it yields.

With ``ack_mode="processed"`` the loop body settles each message: asking for the next one
(or leaving a ``with`` block normally) sends ``processed``; :meth:`Tail.reject`, or an
exception leaving the ``with`` block, sends ``rejected`` with the reason::

    with gilmsg.tail_messages("org.example", ack_mode="processed", **cfg) as feed:
        for name, endpoint, topic, envelope in feed:
            store(envelope["msg"])   # raises: rejected with "OSError: disk full"
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gilmsg import config as gconfig
from gilmsg import transport
from gilmsg.core import wire
from gilmsg.core.receiving import check_ack_mode
from gilmsg.recipient import Recipient, Settlement

#: How often (s) the receive loop wakes up with nothing to read, so signals are handled.
POLL_INTERVAL = 0.5

Item = tuple[str, str, str, dict[str, Any]]


class Tail(Iterator[Item]):
    """What :func:`tail_messages` returns: an iterator of ``(name, endpoint, topic, envelope)``.

    Also a context manager, and, with ``ack_mode="processed"``, the handle that settles the
    message it yielded last: :meth:`processed`, :meth:`reject`, or implicitly (see
    :func:`tail_messages`).
    """

    def __init__(self, items: Iterator[tuple[Item, Settlement | None]], settle: bool) -> None:
        self._items = items
        self._settle = settle
        self._current: Settlement | None = None

    def __iter__(self) -> Tail:
        return self

    def __next__(self) -> Item:
        self.processed()  # asking for the next message settles the previous one
        item, settlement = next(self._items)
        self._current = settlement if self._settle else None
        return item

    def processed(self) -> bool:
        """Send ``processed`` for the message yielded last, if it is still unsettled."""
        current, self._current = self._current, None
        return current.processed() if current is not None else False

    def reject(self, reason: BaseException | str) -> bool:
        """Send ``rejected`` with ``reason`` for the message yielded last (an exception gives
        its type and message, bounded); False if there is none to settle."""
        current, self._current = self._current, None
        return current.reject(reason) if current is not None else False

    def close(self) -> None:
        """Disconnect. A message yielded last and not settled stays answered ``received``."""
        self._current = None
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None and isinstance(exc, Exception):
            self.reject(exc)
        elif exc is None:
            self.processed()
        self.close()


def tail_messages(
    topic: str = "",
    passive: bool = False,
    ack: bool = True,
    show_acks: bool = True,
    ack_mode: str = "received",
    **config: Any,
) -> Tail:
    """Yield ``(name, endpoint, topic, envelope)`` for every message on the bus, as fedmsg does.

    Connects to every endpoint of the configuration (``passive`` is accepted and ignored, as in
    fedmsg). Before a gilmsg message that names this process's certificate Common Name (or names
    no recipients) is yielded, a signed ACK has been sent (several messages arriving together
    are acknowledged in one batched ACK when their publishers take them). Each gilmsg msg_id is
    yielded once however often it is re-sent; repeats are acknowledged again. With
    ``validate_signatures`` true, messages whose signature does not hold are dropped (and
    logged). ``ack=False`` watches without acknowledging and needs no identity.
    ``show_acks=False`` drops ACK traffic unread (fedmsg yields it; with many recipients it is
    most of the bus). With ZeroMQ, frames over 1 MiB are cut off unread (the connection is
    re-made at once) and the sockets use the connection-health keys of
    :class:`gilmsg.transport.zmq.LinkOptions`.

    ``ack_mode="processed"``: the receipt ACK (``received``) still goes out before the message
    is yielded; then the message is settled by the loop body, for publishers that
    ``require="processed"``:

    * asking for the next message (the ``for`` loop going round), or leaving a ``with`` block
      normally, sends ``processed`` for the message yielded last;
    * ``feed.reject(reason)``, or an exception leaving the ``with`` block, sends ``rejected``
      with the reason (an exception's type and message, at most 500 characters);
    * a message left unsettled (the loop ended by an exception outside a ``with`` block, or
      :meth:`Tail.close`) stays answered ``received``: its publisher times out, and says so.

    Raises:
        InvalidInput: ``ack_mode`` is not ``received`` or ``processed`` (at the call).
        ConfigError, CertificateError: at the first ``next()``, if ``ack`` is true and this
            process's identity, endpoint or certificate is missing or unusable.
    """
    settle = check_ack_mode(ack_mode) == "processed" and ack
    return Tail(_items(topic, ack, show_acks, settle, config), settle)


def _items(topic: str, ack: bool, show_acks: bool, settle: bool,
           config: dict[str, Any]) -> Iterator[tuple[Item, Settlement | None]]:
    cfg = gconfig.load(config)
    recipient = Recipient(cfg, ack=ack)
    ack_topic = recipient.ack_topic.encode("utf-8")
    subscription = transport.module_for(cfg).subscribe(gconfig.named_endpoints(cfg), topic, cfg)
    batch: list[dict[str, Any]] = []
    try:
        while True:
            received = subscription.receive(POLL_INTERVAL)
            while received and len(received) < wire.MAX_BATCH:  # what arrived together
                more = subscription.receive(0)
                if not more:
                    break
                received += more
            ready = []
            for name, endpoint, frames in received:
                if not show_acks and frames[:1] == [ack_topic]:
                    continue
                decoded = wire.decode(frames)
                if decoded is None:
                    continue
                msg_topic, envelope = decoded
                if recipient.handle(msg_topic, envelope, batch if ack else None):
                    ready.append((name, endpoint, msg_topic, envelope))
            if batch:
                recipient.flush(batch)  # every ACK is out before its message is yielded
            for item in ready:
                settlement = recipient.settlement(item[2], item[3]) if settle else None
                yield item, settlement
    finally:
        subscription.close()


__all__ = ["Tail", "tail_messages"]

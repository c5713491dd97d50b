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
from gilmsg import monitoring, transport
from gilmsg.core import wire
from gilmsg.core.receiving import Deliver, Handed, check_ack_mode
from gilmsg.recipient import Recipient

#: How often (s) the receive loop wakes up with nothing to read, so signals are handled.
POLL_INTERVAL = 0.5

Item = tuple[str, str, str, dict[str, Any]]


class Tail(Iterator[Item]):
    """What :func:`tail_messages` returns: an iterator of ``(name, endpoint, topic, envelope)``.

    Also a context manager, and, with ``ack_mode="processed"``, the handle that settles the
    message it yielded last: :meth:`processed`, :meth:`reject`, or implicitly (see
    :func:`tail_messages`). It tells the recipient when the loop body is over with a message;
    the recipient records it (durable record), then settles it, in that order.
    """

    def __init__(self, items: Iterator[tuple[Item, Handed]], settle: bool,
                 recipient: list[Recipient]) -> None:
        self._items = items
        self._settle = settle
        self._recipient = recipient  # filled in by the generator once it started
        self._current: Handed | None = None

    def __iter__(self) -> Tail:
        return self

    def __next__(self) -> Item:
        self._over(settle=True)  # asking for the next message settles the previous one
        item, handed = next(self._items)
        self._current = handed if handed.key is not None else None
        return item

    def processed(self) -> bool:
        """Send ``processed`` for the message yielded last, if it is still unsettled."""
        if not self._settle:
            return False
        return self._over(settle=True)

    def reject(self, reason: BaseException | str) -> bool:
        """Send ``rejected`` with ``reason`` for the message yielded last (an exception gives
        its type and message, bounded); False if there is none to settle."""
        if not self._settle:
            return False
        current, self._current = self._current, None
        if current is None:
            return False
        return self._recipient[0].rejected(current, reason)

    def _over(self, settle: bool) -> bool:
        """The loop body is over with the message yielded last: recorded, then (``settle``,
        in processed mode) settled ``processed``."""
        current, self._current = self._current, None
        if current is None:
            return False
        if settle:
            return self._recipient[0].finished(current)
        self._recipient[0].ended(current)
        return False

    def close(self) -> None:
        """Disconnect. A message yielded last and not settled stays answered ``received``."""
        try:
            self._over(settle=False)
        finally:
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
    dedup_path: str | None = None,
    batch_acks: bool = False,
    **config: Any,
) -> Tail:
    """Yield ``(name, endpoint, topic, envelope)`` for every message on the bus, as fedmsg does.

    Connects to every endpoint of the configuration (``passive`` is accepted and ignored, as in
    fedmsg). Before a gilmsg message that names this process's certificate Common Name (or names
    no recipients) is yielded, a signed ACK has been sent. Each gilmsg msg_id is
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

    ``dedup_path``: an SQLite file or a ``postgresql://`` URL (see :mod:`gilmsg.outbox.dedup`)
    recording the gilmsg messages consumed, so that a restarted process never yields one again
    (its repeats are still acknowledged). A message counts as consumed, and is recorded, when
    the generator is resumed or closed after yielding it: the loop body that got it has ended
    (normally, by ``break``, or by an exception). A crash inside the loop body yields it again
    after the restart if it is re-sent; a crash after the body ended and before the record's
    commit returned (the commit: typically tens of microseconds on SQLite, a network round trip
    on PostgreSQL) does too. In ``processed`` mode the record is committed before the
    ``processed`` / ``rejected`` ACK is sent.

    ``batch_acks=True``: messages that arrive together (up to 64) are acknowledged with one
    signed, batched ACK (for publishers that take them) before the first of them is yielded:
    far less signing under load, but a loop that stops early (``break``, ``close()``) leaves the
    rest of that group acknowledged and never yielded, as a hub that dies loses its queue.
    Without it each message is acknowledged just before it is yielded.

    Raises:
        InvalidInput: ``ack_mode`` is not ``received`` or ``processed`` (at the call).
        ConfigError, CertificateError: at the first ``next()``, if ``ack`` is true and this
            process's identity, endpoint or certificate is missing or unusable.
        OutboxError: at the first ``next()``, ``dedup_path`` cannot be used; later, if it
            cannot be written.
    """
    settle = check_ack_mode(ack_mode) == "processed" and ack
    holder: list[Recipient] = []
    return Tail(_items(topic, ack, show_acks, settle, dedup_path, batch_acks, config, holder),
                settle, holder)


def _items(topic: str, ack: bool, show_acks: bool, settle: bool, dedup_path: str | None,
           batch_acks: bool, config: dict[str, Any], holder: list[Recipient]
           ) -> Iterator[tuple[Item, Handed]]:
    cfg = gconfig.load(config)
    consumed = None
    if dedup_path is not None:
        from gilmsg.outbox.dedup import open_consumed

        consumed = open_consumed(dedup_path)
    try:
        recipient = Recipient(cfg, ack=ack, ack_mode="processed" if settle else "received",
                              consumed=consumed)
    except BaseException:
        if consumed is not None:
            consumed.close()
        raise
    holder.append(recipient)
    ack_topics = [[recipient.ack_topic.encode("utf-8")], [recipient.batch_topic.encode("utf-8")]]
    ignore = () if show_acks else (recipient.ack_topic, recipient.batch_topic)
    endpoints = gconfig.named_endpoints(cfg)
    if show_acks:  # where ACKs leave too
        endpoints += [e for e in gconfig.named_ack_endpoints(cfg) if e not in endpoints]
    subscription = transport.module_for(cfg).subscribe(endpoints, topic, cfg, ignore)
    monitoring.watch_subscription(subscription)
    try:
        monitoring.set_consuming(True)
        while True:
            received = subscription.receive(POLL_INTERVAL)
            while batch_acks and received and len(received) < wire.MAX_BATCH:  # together
                more = subscription.receive(0)
                if not more:
                    break
                received += more
            # Without batch_acks, each group is one message: acknowledged, then yielded.
            groups = [received] if batch_acks else [[r] for r in received]
            for group in groups:
                ready = []
                fed = False  # only what was fed can have left ACKs waiting for the tick
                for name, endpoint, frames in group:
                    if not show_acks and frames[:1] in ack_topics:
                        continue
                    decoded = wire.decode(frames)
                    if decoded is None:
                        continue
                    msg_topic, envelope = decoded
                    fed = True
                    result = recipient.receive(msg_topic, envelope, batch=batch_acks)
                    if isinstance(result, Deliver):
                        ready.append(((name, endpoint, msg_topic, envelope), result.handed))
                if fed:
                    recipient.tick()  # every ACK is out before its message is yielded
                for item, handed in ready:
                    try:
                        yield item, handed
                    finally:  # the loop body is over with it (Tail did this already, or not)
                        recipient.ended(handed)
    finally:
        monitoring.set_consuming(False)
        monitoring.remove_check("subscription")
        subscription.close()
        if consumed is not None:
            consumed.close()


__all__ = ["Tail", "tail_messages"]

"""The publisher's side of the protocol as a state machine, with no I/O and no clock.

In the manner of h11: the caller feeds :class:`Machine` events (:class:`Sent`,
:class:`AckReceived` with the signature verdict, :class:`SubscriberJoined`, :class:`Tick`,
:class:`Cancelled`) and carries out the actions it returns (:class:`Send` frames again,
:class:`Resolve` a delivery with its :class:`Report` or :class:`~gilmsg.errors.Timeout`, log an
:class:`IgnoredAck`). Every event carries the time, so every rule of ``docs/protocol.rst`` on
the publishing side (what counts as an ACK, when to re-send, when a delivery is over) is decided
here and tested without sockets or sleeps. :class:`gilmsg.link.Link` drives it.

The package's modules, one concern each: :mod:`~gilmsg.core.delivery.outcomes` (what an ACK
meant, a delivery's state, the answers and the report), :mod:`~gilmsg.core.delivery.records`
(one publish's bookkeeping: :class:`Delivery`, :class:`Backoff`, :class:`Ledger`),
:mod:`~gilmsg.core.delivery.events` (events in, actions out) and
:mod:`~gilmsg.core.delivery.machine` (:class:`Machine`). Every name is importable from here.
"""

from __future__ import annotations

from gilmsg.core.delivery.events import (
    AckReceived,
    AcksReceived,
    Action,
    Cancelled,
    Event,
    IgnoredAck,
    Resolve,
    Send,
    Sent,
    SubscriberJoined,
    Tick,
)
from gilmsg.core.delivery.machine import Machine
from gilmsg.core.delivery.outcomes import SUSPICIOUS, Answer, Outcome, Report, State
from gilmsg.core.delivery.records import Backoff, Delivery, Ledger

__all__ = [
    "SUSPICIOUS", "AckReceived", "AcksReceived", "Action", "Answer", "Backoff", "Cancelled",
    "Delivery", "Event", "IgnoredAck", "Ledger", "Machine", "Outcome", "Report", "Resolve",
    "Send", "Sent", "State", "SubscriberJoined", "Tick",
]

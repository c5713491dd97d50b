"""What :class:`~gilmsg.core.delivery.machine.Machine` takes and gives: the events the adapter
feeds it (:data:`Event`) and the actions it returns for the adapter to carry out
(:data:`Action`). NamedTuples: immutable, and cheap to define at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from gilmsg.core.delivery.outcomes import Outcome, Report
from gilmsg.core.delivery.records import Delivery
from gilmsg.core.wire import Ack
from gilmsg.errors import GilmsgError

__all__ = [
    "AckReceived", "AcksReceived", "Action", "Cancelled", "Event", "IgnoredAck", "Resolve",
    "Send", "Sent", "SubscriberJoined", "Tick",
]

# Events in ...


class Sent(NamedTuple):
    """``delivery``'s ``frames`` went out for the first time at ``at``: wait for its ACKs."""

    delivery: Delivery
    frames: Sequence[bytes]
    at: float


class AckReceived(NamedTuple):
    """An ACK arrived at ``at``; ``signer`` is the CN of a valid signature, None if it failed.

    When it failed, ``claimed`` is the CN its certificate names (unproven) and ``refusal`` why
    it failed: kept only to explain a later :class:`~gilmsg.errors.Timeout`.
    """

    ack: Ack
    signer: str | None
    at: float
    claimed: str | None = None
    refusal: str | None = None


class AcksReceived(NamedTuple):
    """A batched ACK arrived: several entries under one signature (see :class:`AckReceived`).

    Entries for msg_ids nobody here waits for belong to other publishers and are skipped. If
    any other entry would not count (other signer, other content), none of them counts.
    """

    acks: Sequence[Ack]
    signer: str | None
    at: float
    claimed: str | None = None
    refusal: str | None = None


class SubscriberJoined(NamedTuple):
    """Someone subscribed to the publishing socket at ``at`` (it may be a late recipient)."""

    at: float


class Tick(NamedTuple):
    """The clock reads ``at``: re-send what is due, end what has expired."""

    at: float


class Cancelled(NamedTuple):
    """Stop ``msg_id`` at ``at``: the caller gave up (``error`` None) or it cannot go on."""

    msg_id: str
    at: float
    error: GilmsgError | None = None


Event = Sent | AckReceived | AcksReceived | SubscriberJoined | Tick | Cancelled

# ... actions out.


class Send(NamedTuple):
    """Send these frames (again)."""

    msg_id: str
    frames: Sequence[bytes]


class Resolve(NamedTuple):
    """``delivery`` is over: ``result`` is its Report, or the error to raise (Timeout ...).

    ``result`` is None for a cancelled delivery; what had arrived is in ``delivery.acks``.
    """

    delivery: Delivery
    result: Report | GilmsgError | None


class IgnoredAck(NamedTuple):
    """An ACK that did not count and deserves a warning (forged, misdirected, refused)."""

    ack: Ack
    signer: str | None
    outcome: Outcome


Action = Send | Resolve | IgnoredAck

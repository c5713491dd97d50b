"""What a delivery can come to: what an incoming ACK meant (:class:`Outcome`), where a
delivery is (:class:`State`), each recipient's :class:`Answer` and the :class:`Report` of a
publish that every recipient acknowledged. Plain values, no behaviour.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["SUSPICIOUS", "Answer", "Outcome", "Report", "State"]


class Outcome(enum.Enum):
    """What an incoming ACK meant for the publisher."""

    ACCEPTED = "accepted"  #: a required recipient acknowledged this exact message
    REPEAT = "repeat"  #: that recipient had already acknowledged it
    UNKNOWN_MESSAGE = "unknown message"  #: no publish is waiting for that msg_id
    FORGED_SIGNATURE = "bad signature"  #: signature, chain or CRL check failed
    NOT_A_RECIPIENT = "not a recipient"  #: validly signed by someone not asked to ACK
    WRONG_DIGEST = "wrong digest"  #: names this msg_id but acknowledges other content
    #: a gilmsg 0.1.2 ACK: no ``ack_digest``, so it does not bind the content and never counts
    OLD_FORMAT = "0.1.2-format ACK without ack_digest (an old gilmsg peer)"
    REJECTED = "rejected"  #: the recipient got the message and refused it
    LATE = "late"  #: genuine, but after the deadline: the publish has already failed
    RECEIVED = "received"  #: ``processed`` is required; this one says it arrived (noted)
    BAD_BATCH = "bad batch"  #: valid entry of a batch that has a bad one: none counts


#: Outcomes worth a WARNING: someone sent an ACK that looks like an attack or a mistake.
SUSPICIOUS = frozenset({Outcome.FORGED_SIGNATURE, Outcome.NOT_A_RECIPIENT,
                        Outcome.WRONG_DIGEST, Outcome.BAD_BATCH, Outcome.OLD_FORMAT})


class State(enum.Enum):
    """Where a delivery is: waiting, or over (and how)."""

    PENDING = "pending"  #: waiting for ACKs, re-sent on schedule
    ACKED = "acked"  #: every recipient acknowledged: resolved with a Report
    EXPIRED = "expired"  #: ``ack_timeout`` passed first: resolved with Timeout
    CANCELLED = "cancelled"  #: the caller gave up (Ctrl-C): no result
    FAILED = "failed"  #: the adapter could not go on (CA unusable, link closed)
    REJECTED = "rejected"  #: a recipient answered ``rejected``: resolved with Rejected at once


class Answer(NamedTuple):
    """What one recipient answered: its ``status``, when, and why.

    ``status`` is ``processed``, ``received``, ``rejected`` or ``missing`` (no ACK that
    counts). ``at``: seconds after the call when that answer arrived (None for missing).
    ``reason``: the rejection's reason; for a missing recipient whose ACKs were refused, why
    (revoked or expired certificate, other CA, other content); else None.
    """

    status: str
    at: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Report:
    """What a successful acknowledged publish returns.

    Attributes:
        msg_id: the id every recipient acknowledged.
        topic: the full topic the message went out on.
        acks: recipient Common Name -> seconds after the call when its ACK (at the required
            level) arrived.
        sends: how many times the message was sent (1 + redeliveries).
        answers: recipient -> :class:`Answer` (status ``received`` or ``processed``, time).
        require: the ACK status the publish required (``received`` or ``processed``).
    """

    msg_id: str
    topic: str
    acks: Mapping[str, float]
    sends: int
    answers: Mapping[str, Answer] = field(default_factory=dict, compare=False)
    require: str = field(default="received", compare=False)

    @property
    def elapsed(self) -> float:
        """Seconds from the call until the last ACK arrived."""
        return max(self.acks.values(), default=0.0)

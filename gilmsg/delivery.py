"""ACK bookkeeping and the decision "done / missing / forged", with no I/O and no clock.

Every function takes the current time as an argument, so the whole protocol state can be driven
and tested without sockets or sleeps. The ZeroMQ adapter (:mod:`gilmsg.transport`) feeds it
validated ACKs and asks it when to re-send.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from gilmsg.message import Ack


class Outcome(enum.Enum):
    """What an incoming ACK meant for the publisher."""

    ACCEPTED = "accepted"  #: a required recipient acknowledged this exact message
    REPEAT = "repeat"  #: that recipient had already acknowledged it
    UNKNOWN_MESSAGE = "unknown message"  #: no publish is waiting for that msg_id
    FORGED_SIGNATURE = "bad signature"  #: signature, chain or CRL check failed
    NOT_A_RECIPIENT = "not a recipient"  #: validly signed by someone not asked to ACK
    WRONG_DIGEST = "wrong digest"  #: names this msg_id but acknowledges other content
    REJECTED = "rejected"  #: the recipient got the message and refused it
    LATE = "late"  #: genuine, but after the deadline: the publish has already failed


@dataclass(frozen=True)
class Backoff:
    """Redelivery intervals: ``first``, then times ``factor`` each time, never above ``ceiling``."""

    first: float = 0.02
    factor: float = 2.0
    ceiling: float = 0.5

    def delays(self) -> Iterator[float]:
        """The successive waits between sends, forever."""
        delay = self.first
        while True:
            yield delay
            delay = min(delay * self.factor, self.ceiling)


@dataclass
class Delivery:
    """One publish waiting for its required recipients.

    ``started`` and ``deadline`` are on the caller's monotonic clock. ACK times are stored as
    seconds after ``started``.
    """

    msg_id: str
    digest: str
    topic: str
    recipients: tuple[str, ...]
    started: float
    deadline: float
    backoff: Backoff = field(default_factory=Backoff)
    acks: dict[str, float] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)
    sends: int = 0
    next_send: float = 0.0
    _delays: Iterator[float] | None = field(default=None, repr=False)

    @property
    def missing(self) -> tuple[str, ...]:
        """Recipients that have not acknowledged, in the order they were named."""
        return tuple(r for r in self.recipients if r not in self.acks)

    @property
    def done(self) -> bool:
        """True once every recipient has acknowledged."""
        return not self.missing

    def expired(self, now: float) -> bool:
        """True once the deadline has passed."""
        return now >= self.deadline

    def sent(self, now: float) -> None:
        """Record a (re-)send at ``now`` and schedule the next one."""
        if self._delays is None:
            self._delays = self.backoff.delays()
        self.sends += 1
        self.next_send = now + next(self._delays)

    def resend_due(self, now: float) -> bool:
        """Should the message go out again at ``now``?"""
        return not self.done and not self.expired(now) and now >= self.next_send

    def on_ack(self, signer: str | None, ack: Ack, now: float) -> Outcome:
        """Count an ACK whose signature was checked: ``signer`` is None when it did not validate.

        Only a validly signed ACK from a named recipient, for this msg_id and this digest,
        arriving before the deadline, counts; this is where false positives are ruled out.
        """
        if signer is None:
            return Outcome.FORGED_SIGNATURE
        if ack.msg_id != self.msg_id:
            return Outcome.UNKNOWN_MESSAGE
        if signer not in self.recipients:
            return Outcome.NOT_A_RECIPIENT
        if ack.digest != self.digest:
            return Outcome.WRONG_DIGEST
        if signer in self.acks:
            return Outcome.REPEAT
        if self.expired(now):
            return Outcome.LATE
        if ack.status == "rejected":
            self.rejected[signer] = ack.reason or ""
            return Outcome.REJECTED
        self.acks[signer] = now - self.started
        return Outcome.ACCEPTED


class Ledger:
    """The deliveries one process is waiting on, by msg_id."""

    def __init__(self) -> None:
        self._pending: dict[str, Delivery] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(list(self._pending.values()))

    def add(self, delivery: Delivery) -> None:
        """Start waiting for ``delivery``'s ACKs."""
        self._pending[delivery.msg_id] = delivery

    def remove(self, msg_id: str) -> Delivery | None:
        """Stop waiting for ``msg_id``; returns what was collected."""
        return self._pending.pop(msg_id, None)

    def get(self, msg_id: str) -> Delivery | None:
        """The delivery waiting on ``msg_id``, if any (cheap: used before any crypto)."""
        return self._pending.get(msg_id)

    def on_ack(self, signer: str | None, ack: Ack, now: float) -> tuple[Delivery | None, Outcome]:
        """Route a checked ACK to its delivery."""
        delivery = self._pending.get(ack.msg_id)
        if delivery is None:
            return None, Outcome.UNKNOWN_MESSAGE
        return delivery, delivery.on_ack(signer, ack, now)

    def next_wakeup(self, now: float) -> float | None:
        """The earliest time something is due after ``now``: a re-send or a deadline.

        Deliveries that are done or expired are not counted: they only wait to be removed; nor
        are those not sent yet (the adapter sends them when it handles their command).
        """
        times = [
            min(d.next_send, d.deadline)
            for d in self._pending.values()
            if d.sends and not d.done and not d.expired(now)  # unsent: its command is queued
        ]
        return min(times) if times else None


class Seen:
    """A bounded memory of msg_ids already delivered to the application.

    Remembers the ``capacity`` most recently seen ids; an id older than that would be delivered
    again (redelivery stops after the publisher's timeout, so a capacity far above the message
    rate times the timeout is enough).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._ids

    def first_time(self, msg_id: str) -> bool:
        """Record ``msg_id``; True if it was not remembered already."""
        if msg_id in self._ids:
            self._ids.move_to_end(msg_id)
            return False
        self._ids[msg_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


@dataclass(frozen=True)
class Report:
    """What a successful acknowledged publish returns.

    Attributes:
        msg_id: the id every recipient acknowledged.
        topic: the full topic the message went out on.
        acks: recipient Common Name -> seconds after the call when its ACK arrived.
        sends: how many times the message was sent (1 + redeliveries).
    """

    msg_id: str
    topic: str
    acks: Mapping[str, float]
    sends: int

    @property
    def elapsed(self) -> float:
        """Seconds from the call until the last ACK arrived."""
        return max(self.acks.values(), default=0.0)

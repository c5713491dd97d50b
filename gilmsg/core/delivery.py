"""The publisher's side of the protocol as a state machine, with no I/O and no clock.

In the manner of h11: the caller feeds :class:`Machine` events (:class:`Sent`,
:class:`AckReceived` with the signature verdict, :class:`SubscriberJoined`, :class:`Tick`,
:class:`Cancelled`) and carries out the actions it returns (:class:`Send` frames again,
:class:`Resolve` a delivery with its :class:`Report` or :class:`~gilmsg.errors.Timeout`, log an
:class:`IgnoredAck`). Every event carries the time, so every rule of ``docs/protocol.rst`` on
the publishing side (what counts as an ACK, when to re-send, when a delivery is over) is decided
here and tested without sockets or sleeps. :class:`gilmsg.link.Link` drives it.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gilmsg.core.wire import Ack
from gilmsg.errors import GilmsgError, Timeout

__all__ = [
    "SUSPICIOUS", "AckReceived", "Action", "Backoff", "Cancelled", "Delivery", "Event",
    "IgnoredAck", "Ledger", "Machine", "Outcome", "Report", "Resolve", "Seen", "Send", "Sent",
    "State", "SubscriberJoined", "Tick",
]


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


#: Outcomes worth a WARNING: someone sent an ACK that looks like an attack or a mistake.
SUSPICIOUS = frozenset({Outcome.FORGED_SIGNATURE, Outcome.NOT_A_RECIPIENT,
                        Outcome.WRONG_DIGEST, Outcome.REJECTED})


class State(enum.Enum):
    """Where a delivery is: waiting, or over (and how)."""

    PENDING = "pending"  #: waiting for ACKs, re-sent on schedule
    ACKED = "acked"  #: every recipient acknowledged: resolved with a Report
    EXPIRED = "expired"  #: ``ack_timeout`` passed first: resolved with Timeout
    CANCELLED = "cancelled"  #: the caller gave up (Ctrl-C): no result
    FAILED = "failed"  #: the adapter could not go on (CA unusable, link closed)


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
    state: State = State.PENDING
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

    def recipient_state(self, recipient: str) -> str:
        """``"acked"``, ``"rejected"``, ``"expired"`` (no answer in time) or ``"pending"``."""
        if recipient in self.acks:
            return "acked"
        if recipient in self.rejected:
            return "rejected"
        return "expired" if self.state is State.EXPIRED else "pending"

    def result(self) -> Report | Timeout:
        """The :class:`Report` if every recipient acknowledged, else the :class:`Timeout`."""
        missing = self.missing
        if not missing:
            return Report(self.msg_id, self.topic, dict(self.acks), self.sends)
        rejected = {who: why for who, why in self.rejected.items() if who in missing}
        return Timeout(self.msg_id, self.topic, self.acks, missing,
                       self.deadline - self.started, rejected)

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

    def forget(self, msg_id: str) -> None:
        """Forget ``msg_id``: its next :meth:`first_time` is True again."""
        self._ids.pop(msg_id, None)


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


# -- the state machine ----------------------------------------------------------------------
# Events in ... (NamedTuples: immutable, and cheap to define at import time)


class Sent(NamedTuple):
    """``delivery``'s ``frames`` went out for the first time at ``at``: wait for its ACKs."""

    delivery: Delivery
    frames: Sequence[bytes]
    at: float


class AckReceived(NamedTuple):
    """An ACK arrived at ``at``; ``signer`` is the CN of a valid signature, None if it failed."""

    ack: Ack
    signer: str | None
    at: float


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


Event = Sent | AckReceived | SubscriberJoined | Tick | Cancelled

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


class Machine:
    """Every delivery one publishing identity waits on, driven by :meth:`handle`.

    Not thread-safe: the adapter serialises calls (and reads of the deliveries it hands in).
    """

    def __init__(self) -> None:
        self._ledger = Ledger()
        self._frames: dict[str, Sequence[bytes]] = {}

    def __len__(self) -> int:
        return len(self._ledger)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(self._ledger)

    def wants(self, msg_id: str) -> bool:
        """Is a delivery waiting for ACKs of ``msg_id``? (Asked before any cryptography.)"""
        return self._ledger.get(msg_id) is not None

    def next_wakeup(self, now: float) -> float | None:
        """When to feed the next :class:`Tick` at the latest (None: only events matter)."""
        return self._ledger.next_wakeup(now)

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; returns what the adapter must do, in order."""
        actions: list[Action] = []
        if isinstance(event, Sent):
            delivery = event.delivery
            delivery.sent(event.at)
            self._ledger.add(delivery)
            self._frames[delivery.msg_id] = event.frames
        elif isinstance(event, AckReceived):
            delivery, outcome = self._ledger.on_ack(event.signer, event.ack, event.at)
            if outcome in SUSPICIOUS:
                actions.append(IgnoredAck(event.ack, event.signer, outcome))
            if delivery is not None and delivery.done:
                actions.append(self._finish(delivery, State.ACKED, delivery.result()))
        elif isinstance(event, SubscriberJoined | Tick):
            joined = isinstance(event, SubscriberJoined)
            for delivery in self._ledger:
                if delivery.resend_due(event.at) or (
                        joined and not delivery.done and not delivery.expired(event.at)):
                    delivery.sent(event.at)
                    actions.append(Send(delivery.msg_id, self._frames[delivery.msg_id]))
        elif isinstance(event, Cancelled):
            delivery = self._ledger.get(event.msg_id)
            if delivery is not None:
                state = State.CANCELLED if event.error is None else State.FAILED
                actions.append(self._finish(delivery, state, event.error))
        else:
            raise TypeError(f"not a delivery event: {event!r}")
        if not isinstance(event, Cancelled):
            for delivery in self._ledger:  # the one place where a deadline is checked
                if delivery.expired(event.at) and not delivery.done:
                    actions.append(self._finish(delivery, State.EXPIRED, delivery.result()))
        return actions

    def _finish(self, delivery: Delivery, state: State,
                result: Report | GilmsgError | None) -> Resolve:
        self._ledger.remove(delivery.msg_id)
        self._frames.pop(delivery.msg_id, None)
        delivery.state = state
        return Resolve(delivery, result)

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
import heapq
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from gilmsg.core.pacing import Pacer
from gilmsg.core.wire import Ack, bound_reason, satisfies
from gilmsg.errors import GilmsgError, Rejected, Timeout

__all__ = [
    "SUSPICIOUS", "AckReceived", "AcksReceived", "Action", "Answer", "Backoff", "Cancelled",
    "Delivery", "Event", "IgnoredAck", "Ledger", "Machine", "Outcome", "Report", "Resolve",
    "Send", "Sent", "State", "SubscriberJoined", "Tick",
]


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
    #: ``"received"`` or ``"processed"``: which ACK status counts (``processed`` always does).
    require: str = "received"
    #: recipient -> seconds after ``started`` of its first ``received`` ACK (or later status).
    heard: dict[str, float] = field(default_factory=dict)
    #: recipient -> why the first ACK bearing its name did not count (once per recipient).
    refused: dict[str, str] = field(default_factory=dict)
    #: recipient -> seconds after ``started`` of its ``rejected`` ACK.
    rejected_at: dict[str, float] = field(default_factory=dict)
    #: recipient -> the status of its ACK that counted (``received`` or ``processed``).
    statuses: dict[str, str] = field(default_factory=dict)
    #: when the last copy went out (on the caller's clock; 0 before the first).
    last_sent: float = 0.0
    #: a recipient answered later copies and not this one: re-send without waiting for quiet.
    overtaken: bool = False
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

    def sent(self, now: float, floor: float = 0.0) -> None:
        """Record a (re-)send at ``now`` and schedule the next one, ``floor`` seconds at least."""
        if self._delays is None:
            self._delays = self.backoff.delays()
        self.sends += 1
        self.last_sent = now
        self.overtaken = False
        self.next_send = now + max(next(self._delays), floor)

    @property
    def silent(self) -> tuple[str, ...]:
        """Recipients that have not answered at all (no ``received``, ``processed`` or
        ``rejected`` ACK): the only ones a re-send is for."""
        return tuple(r for r in self.recipients
                     if r not in self.acks and r not in self.heard and r not in self.rejected)

    def resend_due(self, now: float) -> bool:
        """Should the message go out again at ``now``? Not once every recipient answered."""
        return (not self.done and not self.expired(now) and now >= self.next_send
                and bool(self.silent))

    def recipient_state(self, recipient: str) -> str:
        """``"acked"``, ``"rejected"``, ``"expired"`` (no answer in time) or ``"pending"``."""
        if recipient in self.acks:
            return "acked"
        if recipient in self.rejected:
            return "rejected"
        return "expired" if self.state is State.EXPIRED else "pending"

    def answers(self) -> dict[str, Answer]:
        """Every named recipient's :class:`Answer` so far, in the order they were named."""
        out: dict[str, Answer] = {}
        for who in self.recipients:
            if who in self.rejected:
                out[who] = Answer("rejected", self.rejected_at.get(who), self.rejected[who])
            elif who in self.acks:
                out[who] = Answer(self.statuses.get(who, "received"), self.acks[who])
            elif who in self.heard:
                out[who] = Answer("received", self.heard[who])
            else:
                out[who] = Answer("missing", None, self.refused.get(who))
        return out

    def result(self) -> Report | Timeout | Rejected:
        """The :class:`Report` if every recipient acknowledged, :class:`Rejected` if one
        rejected it, else the :class:`Timeout`."""
        missing = self.missing
        if not missing:
            return Report(self.msg_id, self.topic, dict(self.acks), self.sends, self.answers(),
                          self.require)
        rejected = {who: why for who, why in self.rejected.items() if who in missing}
        refused = {who: why for who, why in self.refused.items() if who in missing}
        if rejected:
            return Rejected(self.msg_id, self.topic, self.acks, missing, rejected,
                            self.answers(), refused)
        return Timeout(self.msg_id, self.topic, self.acks, missing,
                       self.deadline - self.started, rejected, self.answers(), refused)

    def judge(self, signer: str | None, ack: Ack, now: float) -> Outcome:
        """What an ACK whose signature was checked would mean, without recording it.

        ``signer`` is None when the signature did not validate. Only a validly signed ACK
        from a named recipient, for this msg_id and this digest, arriving before the deadline,
        can count; this is where false positives are ruled out.
        """
        if signer is None:
            return Outcome.FORGED_SIGNATURE
        if ack.msg_id != self.msg_id:
            return Outcome.UNKNOWN_MESSAGE
        if signer not in self.recipients:
            return Outcome.NOT_A_RECIPIENT
        if ack.digest is None:
            return Outcome.OLD_FORMAT
        if ack.digest != self.digest:
            return Outcome.WRONG_DIGEST
        if signer in self.acks or signer in self.rejected:
            return Outcome.REPEAT  # its answer is final, whatever a later ACK says
        if self.expired(now):
            return Outcome.LATE
        if ack.status == "rejected":
            return Outcome.REJECTED
        if satisfies(ack.status, self.require):
            return Outcome.ACCEPTED
        return Outcome.REPEAT if signer in self.heard else Outcome.RECEIVED

    def on_ack(self, signer: str | None, ack: Ack, now: float, claimed: str | None = None,
               refusal: str | None = None) -> Outcome:
        """Judge an ACK (see :meth:`judge`) and record what it says.

        ``claimed`` and ``refusal``: for an ACK whose signature did not validate, the CN its
        certificate names (unproven) and why it failed; kept once per named recipient, so
        that a :class:`Timeout` can say why an answer from it did not count.
        """
        outcome = self.judge(signer, ack, now)
        if outcome is Outcome.FORGED_SIGNATURE:
            if ack.msg_id == self.msg_id and claimed in self.recipients:
                self.refused.setdefault(claimed, refusal or "signature did not validate")
        elif outcome is Outcome.WRONG_DIGEST:
            self.refused.setdefault(signer, "its ACK acknowledges other content "  # type: ignore
                                            "(digest mismatch)")
        elif outcome is Outcome.OLD_FORMAT:
            self.refused.setdefault(signer, "its ACK is in the gilmsg 0.1.2 format (no "  # type: ignore
                                            "ack_digest): upgrade that peer; such ACKs do not "
                                            "bind the content and never count")
        else:
            self.record(signer, ack, now, outcome)
        return outcome

    def record(self, signer: str | None, ack: Ack, now: float, outcome: Outcome) -> None:
        """Record an ACK judged ``outcome`` (by :meth:`judge`)."""
        if signer is None:
            return
        at = now - self.started
        if outcome is Outcome.REJECTED:
            self.rejected[signer] = bound_reason(ack.reason or "")
            self.rejected_at[signer] = at
        elif outcome is Outcome.ACCEPTED:
            self.acks[signer] = at
            self.heard.setdefault(signer, at)
            self.statuses[signer] = ack.status
        elif outcome is Outcome.RECEIVED:
            self.heard[signer] = at


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
        """Route a checked ACK to its delivery (see :meth:`Delivery.on_ack`)."""
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


# -- the state machine ----------------------------------------------------------------------
# Events in ... (NamedTuples: immutable, and cheap to define at import time)


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


#: Outcomes of a batch entry that void the whole batch.
_VOIDS_BATCH = frozenset({Outcome.FORGED_SIGNATURE, Outcome.NOT_A_RECIPIENT,
                          Outcome.WRONG_DIGEST, Outcome.OLD_FORMAT})


class Machine:
    """Every delivery one publishing identity waits on, driven by :meth:`handle`.

    Re-sends and deadlines sit in two heaps (lazily pruned), so the cost of an event does not
    grow with the number of deliveries in flight; only :class:`SubscriberJoined` visits them
    all. Not thread-safe: the adapter serialises calls (and reads of the deliveries it hands
    in).

    When to re-send is decided with a :class:`~gilmsg.core.pacing.Pacer` (see
    :mod:`gilmsg.core.pacing`): a copy goes out again when a recipient that has not answered
    it answered later copies (overtaken), or has answered nothing for its retransmission
    timeout (quiet), or when a subscriber joins; never while that recipient keeps answering
    the backlog ahead of it. Timer re-sends of one delivery also back off (:class:`Backoff`).
    """

    #: The longest wait between re-sends that the round trip time can impose.
    MAX_RESEND_FLOOR = 5.0

    def __init__(self) -> None:
        self._ledger = Ledger()
        self._frames: dict[str, Sequence[bytes]] = {}
        self._seq = itertools.count()
        #: What is known of each recipient: round trips, last answer, order of the copies.
        self.pacer = Pacer(ceiling=self.MAX_RESEND_FLOOR)
        self._resends: list[tuple[float, int, Delivery]] = []
        self._deadlines: list[tuple[float, int, Delivery]] = []

    def __len__(self) -> int:
        return len(self._ledger)

    def __iter__(self) -> Iterator[Delivery]:
        return iter(self._ledger)

    def wants(self, msg_id: str) -> bool:
        """Is a delivery waiting for ACKs of ``msg_id``? (Asked before any cryptography.)"""
        return self._ledger.get(msg_id) is not None

    def next_wakeup(self, now: float) -> float | None:
        """When to feed the next :class:`Tick` at the latest (None: only events matter)."""
        self._prune(now)
        times = [heap[0][0] for heap in (self._resends, self._deadlines) if heap]
        return min(times) if times else None

    def _live(self, delivery: Delivery) -> bool:
        return delivery.state is State.PENDING and self._ledger.get(delivery.msg_id) is delivery

    def _prune(self, now: float) -> None:
        while self._resends and not self._resend_entry_live(self._resends[0], now):
            heapq.heappop(self._resends)
        while self._deadlines and not self._live(self._deadlines[0][2]):
            heapq.heappop(self._deadlines)
        if len(self._resends) > 4 * len(self._ledger) + 64:  # stale entries: rebuild
            self._resends = [e for e in self._resends if self._resend_entry_live(e, now)]
            heapq.heapify(self._resends)

    def _resend_entry_live(self, entry: tuple[float, int, Delivery], now: float) -> bool:
        when, _seq, delivery = entry
        return (self._live(delivery) and when == delivery.next_send
                and bool(delivery.silent) and not delivery.expired(now))

    def resend_floor(self, recipients: Sequence[str]) -> float:
        """The least wait before a timer re-send to ``recipients``: their largest RTO."""
        return self.pacer.floor(recipients)

    def _observe(self, delivery: Delivery, signer: str | None, at: float,
                 outcome: Outcome) -> None:
        """Tell the pacer what an ACK from ``signer`` showed; schedule overtaken copies."""
        if signer is None or signer not in delivery.recipients:
            return
        if outcome is Outcome.REPEAT:
            self.pacer.heard(signer, at)
            return
        if outcome not in (Outcome.ACCEPTED, Outcome.RECEIVED, Outcome.REJECTED):
            return
        if delivery.sends == 1:
            rtt: float | None = at - delivery.last_sent
        elif not self.pacer.estimator(signer).samples:
            # Karn's rule would leave a recipient that only ever answered re-sent messages
            # without an estimate, hence "quiet" and re-sent to forever: until it has one,
            # time from the first send (an overestimate: the safe side).
            rtt = at - delivery.started
        else:
            rtt = None  # Karn: which copy was answered is unknown
        for other in self.pacer.answered(signer, delivery, at, rtt, self._live_paced):
            assert isinstance(other, Delivery)
            if other.expired(at) or other.done:
                continue
            other.overtaken = True  # re-sent at the next Tick, once its first delay is over
            other.next_send = max(at, other.last_sent + other.backoff.first)
            heapq.heappush(self._resends, (other.next_send, next(self._seq), other))

    def _live_paced(self, delivery: object) -> bool:
        return isinstance(delivery, Delivery) and self._live(delivery)

    def _sent(self, delivery: Delivery, at: float) -> None:
        silent = delivery.silent
        delivery.sent(at, self.resend_floor(silent))
        self.pacer.sent(delivery, silent)
        heapq.heappush(self._resends, (delivery.next_send, next(self._seq), delivery))

    def _due(self, delivery: Delivery, at: float) -> bool:
        """A timer re-send of ``delivery`` is due at ``at``, else it is put off: while every
        recipient it waits for keeps answering older copies, its ACKs are plausibly on their
        way behind that backlog."""
        if delivery.overtaken:
            return True
        silent = delivery.silent
        if self.pacer.quiet(silent, at):
            return True
        until = self.pacer.in_transit_until(silent)
        if until is None or until <= at:  # pragma: no cover - quiet() said otherwise
            return True
        delivery.next_send = until
        heapq.heappush(self._resends, (until, next(self._seq), delivery))
        return False

    def handle(self, event: Event) -> list[Action]:
        """Apply one event; returns what the adapter must do, in order."""
        actions: list[Action] = []
        if isinstance(event, Sent):
            delivery = event.delivery
            self._ledger.add(delivery)
            self._frames[delivery.msg_id] = event.frames
            self._sent(delivery, event.at)
            heapq.heappush(self._deadlines, (delivery.deadline, next(self._seq), delivery))
        elif isinstance(event, AckReceived):
            acked = self._ledger.get(event.ack.msg_id)
            if acked is not None:
                outcome = acked.on_ack(event.signer, event.ack, event.at, event.claimed,
                                       event.refusal)
                self._observe(acked, event.signer, event.at, outcome)
                if outcome in SUSPICIOUS:
                    actions.append(IgnoredAck(event.ack, event.signer, outcome))
                self._settle(acked, actions)
        elif isinstance(event, AcksReceived):
            self._batch(event, actions)
        elif isinstance(event, Tick):
            due: dict[str, Delivery] = {}
            while self._resends and self._resends[0][0] <= event.at:
                entry = heapq.heappop(self._resends)
                if self._resend_entry_live(entry, event.at):
                    due.setdefault(entry[2].msg_id, entry[2])
            for delivery in due.values():
                if delivery.resend_due(event.at) and self._due(delivery, event.at):
                    self._sent(delivery, event.at)
                    actions.append(Send(delivery.msg_id, self._frames[delivery.msg_id]))
        elif isinstance(event, SubscriberJoined):
            for delivery in self._ledger:
                if (not delivery.done and not delivery.expired(event.at)
                        and delivery.silent):
                    self._sent(delivery, event.at)
                    actions.append(Send(delivery.msg_id, self._frames[delivery.msg_id]))
        elif isinstance(event, Cancelled):
            cancelled = self._ledger.get(event.msg_id)
            if cancelled is not None:
                state = State.CANCELLED if event.error is None else State.FAILED
                actions.append(self._finish(cancelled, state, event.error))
        else:
            raise TypeError(f"not a delivery event: {event!r}")
        if not isinstance(event, Cancelled):  # the one place where a deadline is checked
            while self._deadlines and self._deadlines[0][0] <= event.at:
                delivery = heapq.heappop(self._deadlines)[2]
                if self._live(delivery) and not delivery.done:
                    actions.append(self._finish(delivery, State.EXPIRED, delivery.result()))
        return actions

    def _batch(self, event: AcksReceived, actions: list[Action]) -> None:
        judged = []
        for ack in event.acks:
            delivery = self._ledger.get(ack.msg_id)
            if delivery is not None:  # other entries are for other publishers
                judged.append((delivery, ack, delivery.judge(event.signer, ack, event.at)))
        void = [entry for entry in judged if entry[2] in _VOIDS_BATCH]
        if void:
            for delivery, ack, outcome in void:  # notes why each named recipient failed
                delivery.on_ack(event.signer, ack, event.at, event.claimed, event.refusal)
                actions.append(IgnoredAck(ack, event.signer, outcome))
            for _delivery, ack, outcome in judged:
                if outcome not in _VOIDS_BATCH:
                    actions.append(IgnoredAck(ack, event.signer, Outcome.BAD_BATCH))
            return
        for delivery, ack, outcome in judged:
            if delivery.state is State.PENDING:
                delivery.record(event.signer, ack, event.at, outcome)
                self._observe(delivery, event.signer, event.at, outcome)
                self._settle(delivery, actions)

    def _settle(self, delivery: Delivery, actions: list[Action]) -> None:
        """End ``delivery`` if what it recorded decides it: all acknowledged, or a rejection."""
        if delivery.state is not State.PENDING:
            return
        if delivery.done:
            actions.append(self._finish(delivery, State.ACKED, delivery.result()))
        elif any(r in delivery.rejected for r in delivery.recipients):
            actions.append(self._finish(delivery, State.REJECTED, delivery.result()))

    def _finish(self, delivery: Delivery, state: State,
                result: Report | GilmsgError | None) -> Resolve:
        self._ledger.remove(delivery.msg_id)
        self._frames.pop(delivery.msg_id, None)
        self.pacer.forget(delivery, delivery.recipients)
        delivery.state = state
        return Resolve(delivery, result)

"""The bookkeeping of one publish: its :class:`Delivery` record (who answered what and when,
when to send again, what it resolves to, how an ACK is judged and recorded), its re-send
:class:`Backoff`, and the :class:`Ledger` of the deliveries a process waits on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from gilmsg.core.delivery.outcomes import Answer, Outcome, Report, State
from gilmsg.core.wire import Ack, bound_reason, satisfies
from gilmsg.errors import Rejected, Timeout

__all__ = ["Backoff", "Delivery", "Ledger"]


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

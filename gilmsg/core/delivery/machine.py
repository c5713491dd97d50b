"""The publisher's state machine: :class:`Machine` applies one event at a time to every
delivery of a publishing identity and returns the actions to carry out (see
:mod:`gilmsg.core.delivery`). It decides when to re-send (with the
:class:`~gilmsg.core.pacing.Pacer`), when a delivery is over and how a batched ACK counts.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Sequence

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
from gilmsg.core.delivery.outcomes import SUSPICIOUS, Outcome, Report, State
from gilmsg.core.delivery.records import Delivery, Ledger
from gilmsg.core.pacing import Pacer
from gilmsg.errors import GilmsgError

__all__ = ["Machine"]


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

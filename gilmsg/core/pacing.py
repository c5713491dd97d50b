"""When a publisher re-sends: driven by what it observes of each recipient. Pure, no clock.

A copy is re-sent for one of three reasons only:

* **overtaken**: the recipient answered a message sent to it :data:`REORDER` sends or more
  after this one, but not this one. A recipient answers in the order it receives (one
  connection, one receiving thread), so this copy or its ACK was lost: re-send now (TCP's fast
  retransmit);
* **quiet**: the recipient has answered nothing at all for its retransmission timeout (RTO),
  and this copy went out at least that long ago. While it keeps answering older messages, the
  ACK of this one is plausibly in transit behind the queue the publisher itself created, and
  nothing is re-sent: the backlog drains first;
* a subscriber **joined** (handled by the machine: the immediate re-send to a late recipient).

The RTO of each recipient is RFC 6298's ``SRTT + 4 * RTTVAR``, from samples that go from a
copy's send to its answer, so they include the queueing the publisher's own backlog causes (the
bigger the backlog, the longer the RTO: the back-off). As Karn's algorithm says, only messages
sent once give samples.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["REORDER", "Pacer", "RttEstimator"]

#: How many sends later a recipient's answer must be for an earlier copy to count as lost.
REORDER = 3


@dataclass
class RttEstimator:
    """RFC 6298's smoothed round trip (``srtt``) and its variation (``rttvar``), in seconds.

    :attr:`rto` is None until the first sample; then ``srtt + max(granularity, 4 * rttvar)``,
    bounded by ``floor`` and ``ceiling``.
    """

    floor: float = 0.0
    ceiling: float = 5.0
    granularity: float = 0.001
    srtt: float | None = None
    rttvar: float = 0.0
    samples: int = 0

    def sample(self, rtt: float) -> None:
        """Take one measured round trip (negative values count as 0)."""
        rtt = max(0.0, rtt)
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:  # RFC 6298 2.3: alpha 1/8, beta 1/4; RTTVAR first, from the old SRTT
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.samples += 1

    @property
    def rto(self) -> float | None:
        """The retransmission timeout, or None with no sample yet."""
        if self.srtt is None:
            return None
        value = self.srtt + max(self.granularity, 4 * self.rttvar)
        return min(self.ceiling, max(self.floor, value))


class Paced(Protocol):
    """What the pacer needs of a delivery (see :class:`gilmsg.core.delivery.Delivery`)."""

    msg_id: str

    @property
    def silent(self) -> tuple[str, ...]: ...


@dataclass
class _Peer:
    rtt: RttEstimator
    heard: float | None = None  #: when it last answered anything
    count: int = 0  #: sends to it so far
    #: msg_id -> (send number, delivery) of the copies it has not answered, oldest first.
    waiting: OrderedDict[str, tuple[int, Paced]] = field(default_factory=OrderedDict)


class Pacer:
    """Per-recipient observations of one publisher: round trips, last answer, send order."""

    def __init__(self, ceiling: float = 5.0, reorder: int = REORDER) -> None:
        self.ceiling = ceiling
        self.reorder = reorder
        self._peers: dict[str, _Peer] = {}

    def _peer(self, name: str) -> _Peer:
        peer = self._peers.get(name)
        if peer is None:
            peer = self._peers[name] = _Peer(RttEstimator(ceiling=self.ceiling))
        return peer

    def rto(self, name: str) -> float | None:
        """``name``'s retransmission timeout (None until it answered a message sent once)."""
        peer = self._peers.get(name)
        return peer.rtt.rto if peer is not None else None

    def estimator(self, name: str) -> RttEstimator:
        """``name``'s estimator (created on first use)."""
        return self._peer(name).rtt

    def floor(self, recipients: Iterable[str]) -> float:
        """The least wait before a timer re-send to ``recipients``: the largest known RTO."""
        return max((self.rto(r) or 0.0 for r in recipients), default=0.0)

    def sent(self, delivery: Paced, recipients: Iterable[str]) -> None:
        """A copy of ``delivery`` went out for ``recipients`` (those yet to answer)."""
        for name in recipients:
            peer = self._peer(name)
            peer.count += 1
            peer.waiting.pop(delivery.msg_id, None)
            peer.waiting[delivery.msg_id] = (peer.count, delivery)

    def heard(self, name: str, at: float) -> None:
        """``name`` sent a valid answer at ``at`` (a repeat counts: it is alive)."""
        peer = self._peer(name)
        peer.heard = at if peer.heard is None else max(peer.heard, at)

    def answered(self, name: str, delivery: Paced, at: float, rtt: float | None,
                 live: Callable[[Paced], bool]) -> list[Paced]:
        """``name`` answered ``delivery`` for the first time at ``at``; ``rtt`` its sample
        (None: the message was sent more than once, no sample). Returns the deliveries it has
        overtaken: sent to it :attr:`reorder` sends or more before this one, unanswered, and
        still ``live`` (forgotten here; :meth:`sent` registers their next copy)."""
        self.heard(name, at)
        peer = self._peer(name)
        if rtt is not None:
            peer.rtt.sample(rtt)
        entry = peer.waiting.pop(delivery.msg_id, None)
        overtaken: list[Paced] = []
        if entry is None:
            return overtaken
        number = entry[0]
        while peer.waiting:
            msg_id, (older, other) = next(iter(peer.waiting.items()))
            if not live(other) or name not in other.silent:
                del peer.waiting[msg_id]
            elif older <= number - self.reorder:
                del peer.waiting[msg_id]
                overtaken.append(other)
            else:
                break
        return overtaken

    def quiet(self, names: Iterable[str], at: float) -> bool:
        """True if one of ``names`` has answered nothing for its RTO (or never answered)."""
        for name in names:
            peer = self._peers.get(name)
            rto = peer.rtt.rto if peer is not None else None
            if peer is None or peer.heard is None or rto is None or at - peer.heard >= rto:
                return True
        return False

    def in_transit_until(self, names: Iterable[str]) -> float | None:
        """When the first of ``names`` would turn quiet if it answered nothing more."""
        times = []
        for name in names:
            peer = self._peers.get(name)
            if peer is None or peer.heard is None or peer.rtt.rto is None:
                return None
            times.append(peer.heard + peer.rtt.rto)
        return min(times) if times else None

    def forget(self, delivery: Paced, recipients: Iterable[str]) -> None:
        """``delivery`` is over: stop tracking its copies."""
        for name in recipients:
            peer = self._peers.get(name)
            if peer is not None:
                peer.waiting.pop(delivery.msg_id, None)

    def waiting(self, name: str) -> int:
        """How many copies sent to ``name`` it has not answered (for tests and metrics)."""
        peer = self._peers.get(name)
        return len(peer.waiting) if peer is not None else 0

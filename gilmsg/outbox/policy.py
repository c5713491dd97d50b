"""What the outbox owes to whom, and when to try again: the decisions, with no I/O and no clock.

Standard library only, like ``gilmsg/core``: the store (:mod:`gilmsg.outbox.store`) keeps rows
and asks these functions what to do with them; the runner (:mod:`gilmsg.outbox.runner`) carries
the answers out through a :class:`gilmsg.link.Link`. Times are wall-clock seconds (several
processes share one outbox, so a monotonic clock would mean nothing to the others), always
passed in.

The rules:

* A message is **owed** to each of its recipients until that recipient's valid signed ACK is
  recorded. It is ``pending`` while it owes anyone, ``delivered`` once it owes no one,
  ``expired`` once its expiry passed first, ``dropped`` when an operator said so (with a
  reason). Nothing is ever deleted: the last three states are kept and reported.
* An **attempt** is one :class:`~gilmsg.core.delivery.Delivery` through a link: the stored
  bytes are sent and re-sent on the link's short schedule for :data:`ATTEMPT_WINDOW` seconds.
  Between attempts the outbox waits :func:`retry_delay` (1 s, 2 s, 4 s ... never more than
  :data:`RETRY_CEILING`), except that a new subscriber on the sending endpoint makes every
  pending message due at once (the absent recipient may be back).
* An attempt is **leased** to one process for its window plus :data:`LEASE_GRACE`: another
  runner does not send that message meanwhile. A process killed mid-attempt leaves a lease
  that simply runs out; the next runner takes the message over. Which process sends does not
  matter to a recipient: the bytes (and so the msg_id and digest it acknowledges) are the same.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Default time a message is kept trying before it is marked expired: three days.
DEFAULT_EXPIRY = 3 * 24 * 3600.0
#: First wait between attempts, doubled after each failed attempt ...
RETRY_FIRST = 1.0
#: ... up to this ceiling (seconds).
RETRY_CEILING = 30.0
#: How long one attempt re-sends on the link's own schedule before it counts as failed.
ATTEMPT_WINDOW = 5.0
#: Extra time a lease lasts beyond its attempt, so a slow process keeps what it is sending.
LEASE_GRACE = 5.0


class Status(enum.Enum):
    """Where a stored message is."""

    PENDING = "pending"  #: owed to at least one recipient, retried
    DELIVERED = "delivered"  #: every recipient's valid ACK is recorded
    EXPIRED = "expired"  #: its expiry passed with recipients still owed
    #: every recipient answered, and at least one answered ``rejected`` (reason kept): no
    #: redelivery to a recipient that refused it
    REJECTED = "rejected"
    DROPPED = "dropped"  #: an operator gave up on it (the reason is kept)


@dataclass
class Entry:
    """One stored message as the decisions see it (the envelope itself is not needed here).

    ``acked``: recipient -> wall time its ACK was recorded; ``recipients``: every recipient
    named, in order.
    """

    msg_id: str
    topic: str
    recipients: tuple[str, ...]
    created: float
    expires: float
    status: Status = Status.PENDING
    acked: dict[str, float] = field(default_factory=dict)
    attempts: int = 0
    next_attempt: float = 0.0
    lease_owner: str | None = None
    lease_until: float = 0.0
    last_error: str | None = None
    reason: str | None = None
    finished: float | None = None
    #: recipient -> the reason of its signed ``rejected`` ACK (it is owed nothing more)
    rejected: dict[str, str] = field(default_factory=dict)
    #: what each recipient's ACK must say: ``received`` (or ``processed``) or ``processed``
    require: str = "received"

    @property
    def owed(self) -> tuple[str, ...]:
        """Recipients whose ACK (at the required level) is not recorded yet and who did not
        reject the message, in the order they were named."""
        return tuple(r for r in self.recipients if r not in self.acked and r not in self.rejected)

    def leased(self, now: float, alive: Callable[[str], bool] | None = None) -> bool:
        """Is some process sending it right now (a lease that has not run out)?

        ``alive(owner)``: False when the lease holder is known to be dead (a process of this
        host that no longer exists): its lease is void at once.
        """
        if self.lease_owner is None or now >= self.lease_until:
            return False
        return alive is None or alive(self.lease_owner)


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: 1, 2, 4 ... capped at 30."""
    if attempts <= 0:
        return 0.0
    return min(RETRY_FIRST * 2.0 ** min(attempts - 1, 30), RETRY_CEILING)


def is_due(entry: Entry, now: float, joined: bool = False,
           alive: Callable[[str], bool] | None = None) -> bool:
    """Should an attempt start now? ``joined``: a subscriber appeared since the last look."""
    if entry.status is not Status.PENDING or not entry.owed or entry.leased(now, alive):
        return False
    if now >= entry.expires:
        return False  # expire it instead
    return joined or now >= entry.next_attempt


def should_expire(entry: Entry, now: float) -> bool:
    """Has a pending message's expiry passed (and nobody is sending it)?"""
    return entry.status is Status.PENDING and now >= entry.expires and not entry.leased(now)


def status_after_acks(entry: Entry) -> Status:
    """The status once the ACKs in ``entry.acked`` are recorded."""
    if entry.status is Status.PENDING and not entry.owed:
        return Status.REJECTED if entry.rejected else Status.DELIVERED
    return entry.status


def after_attempt(entry: Entry, now: float, error: str | None) -> Entry:
    """Close an attempt at ``now``: the lease ends; if anyone is still owed, wait the backoff.

    ``error``: what the attempt ended with (a Timeout's text ...), kept as ``last_error``.
    """
    entry.lease_owner, entry.lease_until = None, 0.0
    entry.status = status_after_acks(entry)
    if entry.status in (Status.DELIVERED, Status.REJECTED):
        entry.finished = now
        entry.last_error = None if entry.status is Status.DELIVERED else error
    else:
        entry.attempts += 1
        entry.next_attempt = now + retry_delay(entry.attempts)
        entry.last_error = error
    return entry


def lease_owner(host: str, pid: int, token: str) -> str:
    """The lease holder's name: ``host:pid:token`` (the token tells two openers apart)."""
    return f"{host}:{pid}:{token}"


def owner_alive(owner: str, host: str, pid_exists: Callable[[int], bool]) -> bool:
    """False only when ``owner`` is a process of ``host`` that no longer exists.

    Owners on other hosts (a shared file system) are presumed alive until their lease ends.
    """
    parts = owner.split(":")
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return True
    return pid_exists(int(parts[1]))


def check_expiry(seconds: Any) -> float:
    """A positive number of seconds; raises ValueError otherwise."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(f"expiry must be a positive number of seconds, not {seconds!r}")
    return float(seconds)


@dataclass(frozen=True)
class Stats:
    """What monitoring wants: counts by status, the oldest pending age, backlog per recipient."""

    counts: Mapping[str, int]
    oldest_pending_age: float | None
    backlog: Mapping[str, int]
    oldest_by_recipient: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (ages rounded to milliseconds)."""
        return {
            "pending": self.counts.get("pending", 0),
            "delivered": self.counts.get("delivered", 0),
            "expired": self.counts.get("expired", 0),
            "dropped": self.counts.get("dropped", 0),
            "rejected": self.counts.get("rejected", 0),
            "oldest_pending_age": (None if self.oldest_pending_age is None
                                   else round(self.oldest_pending_age, 3)),
            "backlog": dict(sorted(self.backlog.items())),
            "oldest_by_recipient": {k: round(v, 3)
                                    for k, v in sorted(self.oldest_by_recipient.items())},
        }


def stats(entries: Iterable[Entry], now: float) -> Stats:
    """Summarise ``entries`` at ``now``."""
    counts: dict[str, int] = {s.value: 0 for s in Status}
    backlog: dict[str, int] = {}
    oldest: dict[str, float] = {}
    oldest_pending: float | None = None
    for entry in entries:
        counts[entry.status.value] += 1
        if entry.status is not Status.PENDING:
            continue
        age = max(0.0, now - entry.created)
        oldest_pending = age if oldest_pending is None else max(oldest_pending, age)
        for who in entry.owed:
            backlog[who] = backlog.get(who, 0) + 1
            oldest[who] = max(oldest.get(who, 0.0), age)
    return Stats(counts, oldest_pending, backlog, oldest)


def owed_rows(entries: Sequence[Entry]) -> list[tuple[str, Entry]]:
    """``(recipient, entry)`` for every pending message and recipient it is owed to."""
    return [(who, e) for e in entries if e.status is Status.PENDING for who in e.owed]

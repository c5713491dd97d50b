"""The outbox runner: re-sends what an outbox owes through a :class:`~gilmsg.link.Link`.

Each step leases the messages that are due (see :mod:`gilmsg.outbox.policy`), hands each to
the link as a :class:`~gilmsg.core.delivery.Delivery` limited to one attempt window (the link
re-sends on its own short schedule and at once to new subscribers, and counts only valid signed
ACKs from the recipients still owed), and records the outcome when the attempt resolves. Between
steps it waits on the link for a new subscriber: a recipient coming back makes everything
pending due at once. The runner sends from its own identity's endpoint; recipients check the
original publisher's signature, which the stored bytes carry unchanged.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gilmsg import config as gconfig
from gilmsg import monitoring
from gilmsg.core.delivery import Delivery
from gilmsg.errors import GilmsgError, OutboxError, Rejected, Timeout
from gilmsg.outbox import policy
from gilmsg.outbox.policy import Entry, Status
from gilmsg.outbox.store import OutboxStore

log = logging.getLogger("gilmsg.outbox")

#: Longest wait between two looks at the outbox file (another process may have stored).
IDLE_POLL = 1.0
#: Wait between looks while attempts are in flight (their outcome is recorded after it).
BUSY_POLL = 0.05
#: How often a running runner records that it is active (``Store.runner_seen``).
HEARTBEAT = 10.0


@dataclass
class StepReport:
    """What one :meth:`Runner.step` did."""

    started: list[str] = field(default_factory=list)
    delivered: list[str] = field(default_factory=list)
    retrying: list[Entry] = field(default_factory=list)
    expired: list[Entry] = field(default_factory=list)


@dataclass
class Totals:
    """What a :meth:`Runner.run` did in all."""

    attempts: int = 0
    delivered: int = 0
    expired: int = 0
    failed_attempts: int = 0


class Runner:
    """Drains one outbox store through this process's link.

    Args:
        store: the outbox.
        config: the fedmsg configuration of the identity to send from.
        window: seconds one attempt lasts (the link re-sends within it).
        batch: most messages started per step.

    Raises:
        ConfigError, CertificateError: the identity, its endpoint, the CA are unusable.
    """

    def __init__(self, store: OutboxStore, config: Mapping[str, Any],
                 window: float = policy.ATTEMPT_WINDOW, batch: int = 1000) -> None:
        from gilmsg.crypto import signing
        from gilmsg.link import link_for

        self.store = store
        self.window = window
        self.batch = batch
        self.link = link_for(config)
        self.link.listen_now()
        self._validator = signing.validator_for(config)
        self._validator.check()
        self._verify = functools.partial(self._validator.validate,
                                         accept_sha1=gconfig.accept_sha1(config))
        self._inflight: dict[str, tuple[Any, float, frozenset[str]]] = {}
        self.totals = Totals()
        self._beat = float("-inf")  # monotonic time of the last heartbeat

    @property
    def inflight(self) -> int:
        """Attempts started and not yet recorded."""
        return len(self._inflight)

    def step(self, joined: bool = False) -> StepReport:
        """Record finished attempts, expire what is due, start the attempts that are due.

        Raises:
            OutboxError: the file became unusable (the attempts in flight are left to finish;
                their leases run out and another runner resumes them).
        """
        report = StepReport()
        self._harvest(report)
        now = time.time()
        if time.monotonic() - self._beat >= HEARTBEAT:  # "gilmsg-outbox stats": last runner
            self.store.runner_seen(now)
            self._beat = time.monotonic()
        for entry in self.store.expire(now):
            report.expired.append(entry)
            self.totals.expired += 1
            monitoring.outbox_expired()
            log.warning("outbox: %s on %s expired after %d attempts, still owed to %s",
                        entry.msg_id, entry.topic, entry.attempts, ", ".join(entry.owed))
        room = self.batch - len(self._inflight)
        if room <= 0:
            return report
        for stored in self.store.claim(now, self.window + policy.LEASE_GRACE, joined, room):
            entry = stored.entry
            if entry.msg_id in self._inflight:  # cannot happen: our own lease; be safe
                continue
            started = time.monotonic()
            already = {who: 0.0 for who in entry.acked}  # their repeat ACKs are not warnings
            asked = tuple(r for r in entry.recipients if r not in entry.rejected)
            delivery = Delivery(entry.msg_id, stored.digest, entry.topic, asked,
                                started, started + self.window, acks=already,
                                require=entry.require)
            wall = time.time()
            future = self.link.start(delivery, stored.frames, self._verify)
            self._inflight[entry.msg_id] = (future, wall, frozenset(already))
            report.started.append(entry.msg_id)
            self.totals.attempts += 1
        return report

    def _harvest(self, report: StepReport) -> None:
        for msg_id, (future, wall, already) in list(self._inflight.items()):
            if not future.done():
                continue
            del self._inflight[msg_id]
            error: str | None = None
            acks: Mapping[str, float] = {}
            rejected: Mapping[str, str] = {}
            if future.cancelled():
                error = "cancelled"
            else:
                exc = future.exception()
                if exc is None:
                    acks = future.result().acks
                elif isinstance(exc, Timeout):
                    acks = exc.acked
                    error = f"no ACK within {self.window:g}s from {', '.join(exc.missing)}"
                elif isinstance(exc, Rejected):  # no redelivery to who rejected it
                    acks, rejected = exc.acked, exc.rejected
                    error = "; ".join(f"rejected by {who}: {why}"
                                      for who, why in rejected.items())
                else:
                    error = str(exc)
            fresh = {who: wall + at for who, at in acks.items() if who not in already}
            entry = self.store.finish_attempt(msg_id, fresh, error, time.time(), rejected)
            if entry is None:
                continue
            if entry.status is Status.REJECTED:
                log.warning("outbox: %s rejected: %s", msg_id, entry.last_error)
            if entry.status is Status.DELIVERED:
                report.delivered.append(msg_id)
                self.totals.delivered += 1
                log.info("outbox: %s delivered (attempt %d)", msg_id, entry.attempts + 1)
            elif entry.status is Status.PENDING:
                report.retrying.append(entry)
                self.totals.failed_attempts += 1
                log.debug("outbox: %s still owed to %s; next attempt in %.0fs", msg_id,
                         ", ".join(entry.owed), max(0.0, entry.next_attempt - time.time()))

    def run(self, stop: threading.Event, until_empty: bool = False,
            on_step: Any = None) -> Totals:
        """Step until ``stop`` is set (or, ``until_empty``, nothing is pending any more).

        ``on_step(report)`` is called after each step that did something.
        """
        waiter = getattr(self.store, "waiter", None)
        wake = _Wakeup(self.link, waiter()) if waiter is not None else None
        try:
            return self._loop(stop, until_empty, on_step, wake)
        finally:
            if wake is not None:
                wake.close()

    def _loop(self, stop: threading.Event, until_empty: bool, on_step: Any,
              wake: _Wakeup | None) -> Totals:
        seen = 0
        joined = False
        while not stop.is_set():
            try:
                report = self.step(joined)
            except OutboxError as exc:
                log.error("outbox runner: %s", exc)
                raise
            if on_step is not None and (report.started or report.delivered or report.retrying
                                        or report.expired):
                on_step(report)
            if until_empty and not self._inflight and self.store.next_due() is None:
                break
            if self._inflight:
                timeout = BUSY_POLL
            else:
                due = self.store.next_due()
                timeout = IDLE_POLL if due is None else min(IDLE_POLL,
                                                            max(0.0, due - time.time()))
            if stop.is_set():
                break
            try:
                if wake is not None:
                    count = wake.wait(max(timeout, 0.001))
                else:
                    count = self.link.wait_join(seen, max(timeout, 0.001))
            except GilmsgError:
                break
            joined, seen = count > seen, count
        return self.totals

    def abandon(self) -> None:
        """Stop the attempts in flight (their leases run out; another runner resumes them)."""
        for msg_id in list(self._inflight):
            self.link.cancel(msg_id)
        self._inflight.clear()


class _Wakeup:
    """Wakes an idle runner when a subscriber joins **or** a store commits (PostgreSQL).

    Two daemon threads: one waits on the link's joins, one on the store's ``LISTEN`` (a
    notification is sent by each commit that stored messages, never by a rollback), so a
    message committed in a caller's transaction is claimed at once rather than at the next
    poll. A notification that lands between a wake-up and the step is not lost: the step reads
    every row committed before it.
    """

    def __init__(self, link: Any, listen: Any) -> None:
        self._link = link
        self._listen = listen
        self._event = threading.Event()
        self._closed = threading.Event()
        self.joins = 0
        self._threads = [threading.Thread(target=self._watch_joins, daemon=True,
                                          name="gilmsg-outbox-joins"),
                         threading.Thread(target=self._watch_commits, daemon=True,
                                          name="gilmsg-outbox-listen")]
        for thread in self._threads:
            thread.start()

    def _watch_joins(self) -> None:
        while not self._closed.is_set():
            try:
                count = self._link.wait_join(self.joins, 0.5)
            except GilmsgError:
                return
            if count > self.joins:
                self.joins = count
                self._event.set()

    def _watch_commits(self) -> None:
        while not self._closed.is_set():
            if self._listen(0.5):
                self._event.set()

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for a join or a commit; the join count so far.

        Raises:
            GilmsgError: the link is closed (as :meth:`Link.wait_join` would).
        """
        if getattr(self._link, "closed", False):
            raise GilmsgError("the runner's link is closed")
        self._event.wait(timeout)
        self._event.clear()
        return self.joins

    def close(self) -> None:
        """Stop both threads and the listening connection."""
        self._closed.set()
        for thread in self._threads:
            thread.join(2.0)
        close = getattr(self._listen, "close", None)
        if close is not None:
            close()

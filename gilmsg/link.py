"""One background thread per publishing identity: it drives the core with a transport.

A :class:`Link` owns a transport :class:`~gilmsg.transport.base.Publisher` and a
:class:`~gilmsg.core.delivery.Machine`. It turns what the transport hears into core events
(ACKs, once their signature is checked; new subscribers; the clock) and carries out the core's
actions (re-send frames, resolve a delivery's :class:`~concurrent.futures.Future`). Callers in
any thread hand it deliveries and get futures back; nothing here knows which transport it
drives, or what the protocol's rules are.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from gilmsg import config as gconfig
from gilmsg import monitoring
from gilmsg import transport as gtransport
from gilmsg.core import causes, wire
from gilmsg.core import delivery as core
from gilmsg.core.admission import reason_kind
from gilmsg.core.delivery import Delivery, Machine, Report
from gilmsg.errors import GilmsgError, Timeout
from gilmsg.logsummary import RefusalLog
from gilmsg.transport.base import Publisher, Transport, send_ack

# The logger of the link's ACK verdicts kept its old name: operators filter on it.
log = logging.getLogger("gilmsg.transport")

#: Every ACK this process refused, summarised: the first of each reason at once, then one line
#: per interval with the counts (anyone with a certificate can send thousands a second).
refused_acks = RefusalLog(log, "ACKs")

#: Longest sleep of an idle link thread.
IDLE_POLL = 1.0

#: ``verify(envelope)`` returns a verdict with ``ok``, ``signer`` and ``reason``.
Verify = Callable[[Mapping[str, Any]], Any]


class Link:
    """The transport and the thread of one publishing identity in this process.

    Create it with :func:`link_for`; it lives until the process exits.

    Raises:
        ConfigError: the identity's endpoint cannot be bound (or connected).
    """

    def __init__(self, transport: Transport, publishing: gconfig.Publishing, ack_topic: str,
                 ack_endpoints: Sequence[str], config: Mapping[str, Any]) -> None:
        self.publishing = publishing
        self._config = config  # for the transport's own keys, read when it opens
        self._transport: Transport = transport
        self._lock = threading.Lock()  # the machine, the deliveries in it, _futures, _i
        self._machine = Machine()
        self._futures: dict[str, tuple[Future, Verify]] = {}
        self._ack_topics: list[str] = [ack_topic]
        self._ack_endpoints: list[str] = list(ack_endpoints)
        self._listening = False
        # Under _lock: listen()'s changes and the last one the listener has; the thread's poll
        # (until when, watching subscribers?), None unless it is about to sleep or sleeping.
        self._listen_version, self._synced_version = 0, -1
        self._sleep: tuple[float, bool] | None = None
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_pending = False  # woken, commands not drained yet: no second wake-up
        self._i = 0
        self._plain_sent = False  # the first plain publish waits post_init_sleep
        self._joins = threading.Condition()  # counts new subscribers, for wait_join()
        self._join_count = 0
        self._join_waiters = 0
        self._stopped = threading.Event()
        self._pub: Publisher | None = None
        ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"gilmsg-link-{publishing.name}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    # -- any thread ------------------------------------------------------------------------

    @property
    def address(self) -> str | None:
        """The endpoint actually bound or connected."""
        return self._pub.address if self._pub is not None else None

    @property
    def closed(self) -> bool:
        """True once the link's thread has stopped."""
        return self._stopped.is_set()

    def listen(self, ack_topic: str, endpoints: Sequence[str]) -> None:
        """Also hear ACKs on ``ack_topic`` from ``endpoints`` (idempotent, cheap when known)."""
        with self._lock:
            new_topic = ack_topic not in self._ack_topics
            new_endpoints = [e for e in endpoints if e not in self._ack_endpoints]
            if not new_topic and not new_endpoints:
                return
            if new_topic:
                self._ack_topics.append(ack_topic)
            self._ack_endpoints.extend(new_endpoints)
            self._listen_version += 1
        self._command("listen", None)

    def listen_now(self) -> None:
        """Open the ACK listener now (else the first delivery does), so it is connected early."""
        if not self._listening:
            self._command("listen", True)

    def next_i(self) -> int:
        """The next value of fedmsg's per-publisher counter ``i``."""
        with self._lock:
            self._i += 1
            return self._i

    def send(self, frames: Sequence[bytes], ack: bool = False) -> None:
        """Send frames once; with ``ack``, where the transport sends ACKs (ack_endpoints)."""
        pub = self._pub
        if pub is None or self.closed:
            raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
        send_ack(pub, frames) if ack else pub.send(frames)

    def remember_route(self, msg_id: str, route: str) -> None:
        """ACKs sent here for ``msg_id`` go to ``route`` (transport metadata of the received
        message, such as AMQP's ``reply_to``); ignored by transports that need no routing."""
        # optional for old transport modules
        getattr(self._transport, "remember_route", lambda *_: None)(msg_id, route)

    def send_plain(self, frames: Sequence[bytes], post_init_sleep: float) -> None:
        """A plain publish; like fedmsg, this identity's first one waits ``post_init_sleep``."""
        with self._lock:
            first, self._plain_sent = not self._plain_sent, True
        if first and post_init_sleep > 0:
            time.sleep(post_init_sleep)
        self.send(frames)

    def wait_subscriber(self, topic: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until some peer subscribes to a prefix of ``topic``.

        True at once if one already has. False means a message sent now would reach nobody
        (with ``active``: no relay is connected). Says nothing about who will really get it.
        """
        if self._pub is None or self.closed:
            raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
        return self._pub.wait_subscriber(topic, timeout)

    def start(self, delivery: Delivery, frames: Sequence[bytes], verify: Verify) -> Future:
        """Send ``frames`` and re-send them until ``delivery`` is over; returns its future.

        The future's result is the :class:`Report`; its exception the
        :class:`~gilmsg.errors.Timeout` (or another :class:`GilmsgError`); it is cancelled by
        :meth:`cancel`. ``verify`` checks an ACK envelope's signature.
        """
        future: Future = Future()
        with self._lock:
            self._futures[delivery.msg_id] = (future, verify)
            # With the listener in place the message leaves from this thread, at once; else
            # the thread sends it once the listener is (the ACKs need somewhere to arrive).
            direct = (self._pub is not None and not self.closed and self._listening
                      and self._synced_version == self._listen_version)
        if direct:
            self._go(delivery, list(frames))
        else:
            self._command("deliver", (delivery, list(frames)))
        return future

    def cancel(self, msg_id: str) -> None:
        """Stop re-sending ``msg_id`` and cancel its future (what arrived stays in its delivery)."""
        self._feed(core.Cancelled(msg_id, time.monotonic()))
        with self._lock:  # not in the machine yet: its deliver command is still queued
            entry = self._futures.pop(msg_id, None)
        if entry is not None:
            entry[0].cancel()

    def snapshot(self, delivery: Delivery) -> Delivery:
        """A copy of ``delivery`` taken under the link's lock (its fields change in the thread)."""
        with self._lock:
            return dataclasses.replace(
                delivery, acks=dict(delivery.acks), rejected=dict(delivery.rejected),
                heard=dict(delivery.heard), refused=dict(delivery.refused),
                rejected_at=dict(delivery.rejected_at), statuses=dict(delivery.statuses))

    def wait_join(self, seen: int, timeout: float) -> int:
        """Wait up to ``timeout`` s for a subscriber to join after the ``seen``-th; the count.

        Returns the number of joins noticed so far (pass it back as ``seen`` next time).
        Joins are watched while someone waits here, even with no delivery pending (the
        durable outbox re-sends at once to a recipient that comes back).
        """
        with self._joins:
            self._join_waiters += 1
            try:
                if self._join_count <= seen and self._pub is not None:
                    self._pub.wake()  # the thread starts watching subscribers
                self._joins.wait_for(lambda: self._join_count > seen or self.closed, timeout)
                return self._join_count
            finally:
                self._join_waiters -= 1

    @property
    def pending(self) -> int:
        """How many deliveries are waiting for ACKs."""
        with self._lock:
            return len(self._machine)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread and close the transport (pending messages get a short linger)."""
        if self.closed or not self._thread.is_alive():
            return
        self._command("stop", None)
        self._thread.join(timeout)

    # -- the link's own thread -------------------------------------------------------------

    def _command(self, kind: str, payload: Any) -> None:
        if self.closed:
            raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
        self._queue.put((kind, payload))  # before the flag is read: see _drain_commands
        if self._pub is not None and not self._wake_pending:
            self._wake_pending = True
            self._pub.wake()

    def _feed(self, event: core.Event, verdict: Any = None) -> None:
        with self._lock:
            actions = self._machine.handle(event)
        self._apply(actions, verdict)

    def _apply(self, actions: list[core.Action], verdict: Any = None) -> None:
        for action in actions:
            if isinstance(action, core.Send):
                assert self._pub is not None
                self._pub.send(action.frames)
                monitoring.resent()
            elif isinstance(action, core.Resolve):
                done = action.delivery  # ACKs heard by this delivery (not an outbox's earlier)
                monitoring.delivery_over(done.state.value,
                                         {w: t for w, t in done.acks.items() if w in done.heard})
                with self._lock:
                    entry = self._futures.pop(action.delivery.msg_id, None)
                if entry is not None:
                    _resolve(entry[0], self._explained(action.result, action.delivery.topic))
            elif isinstance(action, core.IgnoredAck):
                reason = getattr(verdict, "reason", "")
                kind = action.outcome.value + (f" ({reason_kind(reason)})" if reason else "")
                refused_acks.refused(kind, f"ignored ACK for {action.ack.msg_id} from "
                                           f"{getattr(verdict, 'signer', action.signer)}: "
                                           f"{action.outcome.value} {reason}".rstrip())
                monitoring.ack_refused(action.outcome.value)

    def _explained(self, result: Any, topic: str) -> Any:
        """A Timeout saying why each recipient is missing, from what the transport heard of
        the subscribers (see :mod:`gilmsg.core.causes`); other results unchanged."""
        if not isinstance(result, Timeout):
            return result
        reach = getattr(self._pub, "reach", None)
        try:
            known = reach(topic, tuple(self._ack_topics)) if reach is not None else None
        except GilmsgError:
            known = None
        return result.with_causes(causes.causes(result.missing, result.answers, known))

    def _run(self, ready: threading.Event) -> None:
        try:
            self._pub = self._transport.open_publisher(self.publishing, self._config)
        except BaseException as exc:  # handed to the constructor's caller
            self._start_error = exc
            self._stopped.set()
            ready.set()
            return
        ready.set()
        pub = self._pub
        try:
            while True:
                now = time.monotonic()
                with self._lock:
                    wakeup = self._machine.next_wakeup(now)
                    watch = len(self._machine) > 0 or self._join_waiters > 0
                    left = IDLE_POLL if wakeup is None else wakeup - now
                    timeout = min(IDLE_POLL, max(0.0, left))
                    self._sleep = (now + timeout, watch)
                heard = pub.poll(timeout, watch)
                self._sleep = None  # (one store: atomic; _go reads it under the lock)
                if not self._drain_commands(pub):
                    return
                if heard.joined:
                    self._feed(core.SubscriberJoined(time.monotonic()))
                    with self._joins:
                        self._join_count += 1
                        self._joins.notify_all()
                for frames in heard.frames:
                    self._on_ack_frames(frames)
                now = time.monotonic()
                with self._lock:  # a Tick before anything is due would change nothing
                    due = self._machine.next_wakeup(now)
                if due is not None and due <= now:
                    self._feed(core.Tick(now))
        except Exception as exc:  # a bug here must not leave publishers waiting forever
            log.exception("gilmsg link thread failed")
            self._fail_all(GilmsgError(f"gilmsg link thread failed: {exc}"))
        finally:
            self._fail_all(GilmsgError(f"gilmsg link {self.publishing.name!r} is closed"))
            self._pub = None
            pub.close()

    def _fail_all(self, error: GilmsgError) -> None:
        """Stop for good: every delivery still waiting ends with ``error``."""
        self._stopped.set()
        now = time.monotonic()
        with self._lock:
            for delivery in list(self._machine):  # their state says FAILED
                self._machine.handle(core.Cancelled(delivery.msg_id, now, error))
                monitoring.delivery_over("failed", delivery.acks)
            entries, self._futures = list(self._futures.values()), {}
        for future, _verify in entries:
            _resolve(future, error)

    def _drain_commands(self, pub: Publisher) -> bool:
        self._wake_pending = False  # before draining: a command queued after this wakes us
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                return True
            if kind == "stop":
                return False
            if kind == "listen" and (self._listening or payload):
                self._sync_listener(pub)
            elif kind == "deliver":
                self._sync_listener(pub)  # listen before the message goes out
                self._go(*payload)

    def _go(self, delivery: Delivery, frames: list[bytes]) -> None:
        """Send a delivery's first copy (from any thread) and hand it to the machine."""
        pub = self._pub
        with self._lock:  # checked and registered at once: cancel() sees one or other
            if pub is None or delivery.msg_id not in self._futures:  # cancelled already
                return
            now = time.monotonic()
            actions = self._machine.handle(core.Sent(delivery, frames, now))
            due, plan = self._machine.next_wakeup(now), self._sleep
            # The thread is woken only if it sleeps past what is due (else it plans with it).
            wake = plan is not None and (not plan[1] or (due is not None and due < plan[0]))
        pub.send(frames)  # from this thread, whichever it is
        monitoring.delivery_started()
        self._apply(actions)
        if wake and not self._wake_pending:
            self._wake_pending = True
            pub.wake()

    def _sync_listener(self, pub: Publisher) -> None:
        with self._lock:
            topics, endpoints = list(self._ack_topics), list(self._ack_endpoints)
            version = self._listen_version
        pub.listen(topics, endpoints)
        with self._lock:
            self._listening = True
            self._synced_version = version

    def _on_ack_frames(self, frames: list[bytes]) -> None:
        decoded = wire.decode(frames)
        if decoded is None:
            return
        _topic, envelope = decoded
        acks = wire.parse_acks(envelope)
        if acks is None or envelope.get("topic") not in self._ack_topics:
            return  # the frame topic is not signed; the envelope's is
        with self._lock:
            wanted = [a for a in acks
                      if a.msg_id in self._futures and self._machine.wants(a.msg_id)]
            entry = self._futures.get(wanted[0].msg_id) if wanted else None
        if entry is None:  # not ours: no crypto spent on it
            return
        now = time.monotonic()
        try:
            verdict = entry[1](envelope)
        except GilmsgError as exc:  # CA or CRL unusable: the publishes cannot succeed
            for ack in wanted:
                self._feed(core.Cancelled(ack.msg_id, now, exc))
            return
        except Exception:  # a verifier bug on hostile input: refuse that ACK, keep the link
            log.exception("gilmsg: checking an ACK for %s failed; ignored", wanted[0].msg_id)
            for ack in wanted:
                self._feed(core.AckReceived(ack, None, now))
            return
        signer, claimed = (verdict.signer, None) if verdict.ok else (None, verdict.signer)
        refusal = None if verdict.ok else verdict.reason
        if len(acks) == 1 and not isinstance(envelope["msg"].get(wire.BATCH_FIELD), list):
            self._feed(core.AckReceived(acks[0], signer, now, claimed, refusal), verdict)
        else:
            self._feed(core.AcksReceived(acks, signer, now, claimed, refusal), verdict)


def _resolve(future: Future, result: Report | BaseException | None) -> None:
    if future.done():
        return
    if result is None:
        future.cancel()
    elif isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


_links: dict[tuple[str, gconfig.Publishing], Link] = {}
_links_lock = threading.Lock()


def link_for(config: Mapping[str, Any]) -> Link:
    """The process-wide :class:`Link` for this config's transport and publishing identity.

    Started on first use; its transport reads its own keys from the config that started it.

    Raises:
        ConfigError: the identity has no endpoint, or none of its endpoints can be bound.
    """
    publishing = gconfig.publishing(config)
    transport = gtransport.module_for(config)
    ack_topic = gconfig.ack_topic(config)
    ack_endpoints = gconfig.ack_listen_endpoints(config, skip=publishing.name)
    key = (transport.__name__, publishing)
    with _links_lock:
        link = _links.get(key)
        if link is None or link.closed:
            link = _links[key] = Link(transport, publishing, ack_topic, ack_endpoints, config)
    link.listen(ack_topic, ack_endpoints)
    link.listen(gconfig.batch_ack_topic(config), ack_endpoints)  # version 4 batches
    return link


@atexit.register
def close_all() -> None:
    """Close every link (registered at exit; bounded to about a second in all)."""
    with _links_lock:
        links = list(_links.values())
        _links.clear()
    deadline = time.monotonic() + 1.0
    for link in links:
        link.close(max(0.0, deadline - time.monotonic()))

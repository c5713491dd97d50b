"""The ZeroMQ adapter: one background thread per process identity that owns every socket.

A :class:`Link` binds (or, in ``active`` mode, connects) the publishing socket, listens for ACKs
on one SUB socket connected to the rest of the bus, re-sends pending messages on the
:class:`~gilmsg.delivery.Backoff` schedule and whenever a new subscriber appears, and resolves
the publishes waiting on it. Callers in any thread talk to it through a queue; ZeroMQ sockets are
never touched outside the link's own thread.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from gilmsg import config as gconfig
from gilmsg import message
from gilmsg.delivery import Delivery, Ledger, Outcome, Report
from gilmsg.errors import ConfigError, GilmsgError, Timeout

log = logging.getLogger(__name__)

#: Reconnect quickly to peers that start late: the bus is local or a LAN.
RECONNECT_IVL_MS = 10
RECONNECT_IVL_MAX_MS = 50
#: Queue depth per peer before ZeroMQ drops (fedmsg cannot set this; we can).
HWM = 100_000
#: How long queued outgoing messages may delay process exit.
EXIT_LINGER_MS = 200
#: ACK frames processed per wake-up before timers get a turn.
ACK_BATCH = 256
#: Longest sleep of an idle link thread (it then discards XPUB notices nobody needs).
IDLE_POLL_MS = 1000
#: Largest frame the publishing socket accepts from its peers (they send only subscriptions,
#: i.e. topic prefixes); and the most bytes of distinct prefixes it keeps track of.
MAX_SUBSCRIPTION_BYTES = 64 << 10
MAX_PREFIX_BYTES = 1 << 20
#: Largest ACK frame accepted (a real one is 3-6 KiB: certificate, signature, body), and the
#: ACK listener's queue per peer: what a hostile peer can make it buffer is their product.
MAX_ACK_FRAME_BYTES = 64 << 10
ACK_RCVHWM = 1000


#: Connection-health settings: fedmsg config key -> default, in seconds (0 switches one off).
#: ZeroMQ heartbeats (ZMTP PING/PONG) make a connection that stalls, e.g. behind TCP
#: retransmissions growing to a minute on a lossy link, be dropped and re-made within seconds;
#: then the publisher re-sends to the new connection at once.
LINK_DEFAULTS: dict[str, float] = {
    "gilmsg_heartbeat_ivl": 1.0,  # ZMQ_HEARTBEAT_IVL: a PING every this often
    "gilmsg_heartbeat_timeout": 3.0,  # ZMQ_HEARTBEAT_TIMEOUT: nothing heard this long after a
    #                                   PING: the connection is dropped and re-made
    "gilmsg_heartbeat_ttl": 3.0,  # ZMQ_HEARTBEAT_TTL: the peer drops it after this silence
    "gilmsg_connect_timeout": 2.0,  # ZMQ_CONNECT_TIMEOUT: a connection attempt (SYNs lost,
    #                                 their retransmissions backing off) is abandoned and
    #                                 started afresh after this long
    "gilmsg_tcp_user_timeout": 10.0,  # ZMQ_TCP_MAXRT (TCP_USER_TIMEOUT): data unacknowledged
    #                                   this long kills the connection
    "gilmsg_tcp_keepalive_idle": 30.0,  # TCP keepalive probes after this idle time (then every
    #                                     10 s, 3 lost probes kill the connection)
}


@dataclass(frozen=True)
class LinkOptions:
    """The connection-health options of :data:`LINK_DEFAULTS`, in seconds; 0 means off."""

    heartbeat_ivl: float = LINK_DEFAULTS["gilmsg_heartbeat_ivl"]
    heartbeat_timeout: float = LINK_DEFAULTS["gilmsg_heartbeat_timeout"]
    heartbeat_ttl: float = LINK_DEFAULTS["gilmsg_heartbeat_ttl"]
    connect_timeout: float = LINK_DEFAULTS["gilmsg_connect_timeout"]
    tcp_user_timeout: float = LINK_DEFAULTS["gilmsg_tcp_user_timeout"]
    tcp_keepalive_idle: float = LINK_DEFAULTS["gilmsg_tcp_keepalive_idle"]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LinkOptions:
        """Read the ``gilmsg_heartbeat_*`` / ``gilmsg_tcp_*`` keys (defaults where absent).

        Raises:
            ConfigError: a value is not a number of seconds in [0, 3600].
        """
        values = {}
        for key, default in LINK_DEFAULTS.items():
            value = config.get(key, default)
            if value is None:
                value = default
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 <= value <= 3600):
                raise ConfigError(f"config key {key!r} must be a number of seconds from 0 to "
                                  f"3600, not {value!r}")
            values[key.removeprefix("gilmsg_")] = float(value)
        return cls(**values)


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def tune(sock: zmq.Socket, options: LinkOptions | None = None) -> None:
    """Socket options gilmsg uses on every socket it owns (``options``: defaults if None)."""
    options = options or LinkOptions()
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    if options.heartbeat_ivl > 0:
        sock.setsockopt(zmq.HEARTBEAT_IVL, _ms(options.heartbeat_ivl))
        if options.heartbeat_timeout > 0:
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, _ms(options.heartbeat_timeout))
        if options.heartbeat_ttl > 0:  # sent in deciseconds: at least 0.1 s
            sock.setsockopt(zmq.HEARTBEAT_TTL, max(100, _ms(options.heartbeat_ttl)))
    if options.connect_timeout > 0:
        sock.setsockopt(zmq.CONNECT_TIMEOUT, _ms(options.connect_timeout))
    if options.tcp_user_timeout > 0:
        sock.setsockopt(zmq.TCP_MAXRT, _ms(options.tcp_user_timeout))
    if options.tcp_keepalive_idle > 0:
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, max(1, round(options.tcp_keepalive_idle)))
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 10)
        sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 3)


class Reconnector:
    """Re-connects the endpoints of a connecting socket that libzmq gave up on.

    libzmq 4.3.5 drops a connection on a protocol error (a frame over ``MAXMSGSIZE``, a peer
    that does not speak ZMTP, a failed handshake) and, unlike after a network error or a
    heartbeat timeout, never connects to that endpoint again: one bad frame from whoever had
    bound a recipient's endpoint for a moment would silence that recipient for good. Its socket
    monitor says ``DISCONNECTED`` either way, followed by ``CONNECT_RETRIED`` only when libzmq
    will retry; an endpoint left without a retry for :attr:`GRACE` seconds is disconnected and
    connected again here. The bad frame costs that connection for about ``GRACE`` seconds, never
    the endpoint.

    Owned by the thread that owns the socket: register :attr:`monitor` in that thread's poller,
    call :meth:`on_events` when it is readable and :meth:`reconnect_due` when :meth:`next_due`
    has come.
    """

    #: Seconds a dropped connection may go without a retry before it is re-made here.
    GRACE = 0.1
    _EVENTS = (zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED | zmq.EVENT_CONNECTED
               | zmq.EVENT_CONNECT_DELAYED)

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.monitor = sock.get_monitor_socket(self._EVENTS)
        self._dropped: dict[str, float] = {}  # endpoint (as libzmq reports it) -> since when
        self.reconnects = 0  #: how many endpoints were re-connected here

    def on_events(self, now: float) -> None:
        """Read every pending monitor event (never blocks)."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            endpoint = event["endpoint"].decode("utf-8", "replace")
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._dropped.setdefault(endpoint, now)
            else:
                self._dropped.pop(endpoint, None)

    def next_due(self) -> float | None:
        """When :meth:`reconnect_due` has something to do (monotonic seconds), or None."""
        return min(self._dropped.values()) + self.GRACE if self._dropped else None

    def reconnect_due(self, now: float) -> None:
        """Disconnect and connect again every endpoint dropped without a retry for GRACE."""
        for endpoint, since in list(self._dropped.items()):
            if now - since < self.GRACE:
                continue
            del self._dropped[endpoint]
            log.warning("gilmsg: connection to %s dropped after a protocol error (oversize or "
                        "malformed frame); connecting again", endpoint)
            try:
                self.sock.disconnect(endpoint)
            except zmq.ZMQError:  # libzmq forgot it already
                pass
            try:
                self.sock.connect(endpoint)
                self.reconnects += 1
            except zmq.ZMQError as exc:
                log.error("gilmsg: cannot connect to %s again: %s", endpoint, exc)

    def close(self) -> None:
        """Stop monitoring (before the socket is closed)."""
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)


@dataclass
class _Waiter:
    delivery: Delivery
    frames: list[bytes]
    validate: Callable[[Mapping[str, Any]], Any]
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class Link:
    """The sockets and the thread of one publishing identity in this process.

    Create it with :func:`link_for`; it lives until the process exits.
    """

    def __init__(
        self, publishing: gconfig.Publishing, ack_topic: str, ack_endpoints: Sequence[str],
        options: LinkOptions | None = None,
    ) -> None:
        self.publishing = publishing
        self.options = options or LinkOptions()
        # What the ACK listener should hear (grows through listen()), and what it does hear.
        self._ack_topics: list[str] = [ack_topic]
        self._ack_endpoints: list[str] = list(ack_endpoints)
        self._heard_topics: set[str] = set()
        self._heard_endpoints: set[str] = set()
        self.address: str | None = None  #: the endpoint actually bound or connected
        self._ctx = zmq.Context()
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._lock = threading.Lock()
        self._ledger = Ledger()
        self._i = 0
        self._stopped = threading.Event()
        self._sub: zmq.Socket | None = None  # the ACK listener, opened by the first deliver
        #: Watchers of the sockets that connect (the ACK listener; the publisher when active).
        self._reconnectors: dict[zmq.Socket, Reconnector] = {}
        # The publishing socket is shared under _pub_lock, except while the link thread polls it
        # (for subscription notices, only while deliveries are pending): then others queue.
        self._pub: zmq.Socket | None = None
        self._pub_lock = threading.Lock()
        self._pub_polled = True
        # Topic prefixes someone subscribes to now (XPUB_VERBOSE reports every subscription,
        # and an unsubscription when the last subscriber of a prefix leaves). Under _pub_lock.
        self._prefixes: set[bytes] = set()
        self._prefix_bytes = 0
        self._poller: zmq.Poller | None = None
        ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"gilmsg-link-{publishing.name}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._start_error is not None:
            self._thread.join()
            self._ctx.term()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise self._start_error

    # -- API for any thread ------------------------------------------------------------------

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
        self._command("listen", None)

    def next_i(self) -> int:
        """The next value of fedmsg's per-publisher counter ``i``."""
        with self._lock:
            self._i += 1
            return self._i

    def send(self, frames: list[bytes]) -> None:
        """Send frames once; returns at once (fire-and-forget, like fedmsg).

        Sent from the calling thread when the socket is free (no thread hand-over: this is the
        ACK path of every recipient), else queued for the link's thread.
        """
        with self._pub_lock:
            if self._pub is not None and not self._pub_polled:
                self._pub.send_multipart(frames)
                return
        self._command("send", frames)

    def wait_subscriber(self, topic: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until some peer subscribes to a prefix of ``topic``.

        True at once if one already has. False means a message sent now would reach nobody
        (with ``active``: no relay is connected). Says nothing about who will really get it.
        """
        wanted = topic.encode("utf-8")
        deadline = time.monotonic() + timeout
        while True:
            with self._pub_lock:
                pub = self._pub
                if pub is None:
                    raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
                own = not self._pub_polled  # else the link thread reads the notices
                if own:
                    self._read_notices(pub)
                if any(wanted.startswith(prefix) for prefix in self._prefixes):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if own:  # holding the lock: the link thread's sends wait at most 50 ms
                    pub.poll(int(min(remaining, 0.05) * 1000) + 1)
                    continue
            time.sleep(min(remaining, 0.005))

    def deliver(
        self,
        delivery: Delivery,
        frames: list[bytes],
        validate: Callable[[Mapping[str, Any]], Any],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Report:
        """Send ``frames`` and re-send them until every recipient of ``delivery`` acknowledged.

        ``validate`` checks an ACK envelope's signature and returns a verdict with ``ok`` and
        ``signer``. Returns a :class:`Report`; raises :class:`Timeout` at ``delivery.deadline``.
        An interruption (KeyboardInterrupt ...) propagates with an ``acked`` attribute added:
        ``{recipient: seconds}`` of the ACKs that had arrived.
        """
        waiter = _Waiter(delivery, frames, validate)
        with self._lock:  # registered here: the link thread drops it if we gave up already
            self._ledger.add(delivery)
        interrupted: BaseException | None = None
        try:
            self._command("deliver", waiter)
            waiter.finished.wait(max(delivery.deadline - monotonic(), 0.0))
        except BaseException as exc:
            interrupted = exc
            raise
        finally:  # also on KeyboardInterrupt: stop re-sending a message nobody waits for
            with self._lock:
                self._ledger.remove(delivery.msg_id)
                acks, missing, sends = dict(delivery.acks), delivery.missing, delivery.sends
                rejected = {who: why for who, why in delivery.rejected.items() if who in missing}
            if interrupted is not None:
                interrupted.acked = acks  # type: ignore[attr-defined]
        if waiter.error is not None:
            raise waiter.error
        if missing:
            raise Timeout(
                delivery.msg_id,
                delivery.topic,
                acks,
                missing,
                delivery.deadline - delivery.started,
                rejected,
            )
        return Report(delivery.msg_id, delivery.topic, acks, sends)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the thread and close the sockets (pending messages get a short linger)."""
        if self._stopped.is_set() or not self._thread.is_alive():
            return
        self._command("stop", None)
        self._thread.join(timeout)

    # -- the link's own thread ---------------------------------------------------------------

    def _command(self, kind: str, payload: Any) -> None:
        if self._stopped.is_set():
            raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
        self._queue.put((kind, payload))
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # pipe full: the thread is awake anyway
            pass

    def _open_publisher(self) -> zmq.Socket:
        pub = self._ctx.socket(zmq.XPUB)
        tune(pub, self.options)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        errors = []
        for address in self.publishing.addresses:
            try:
                getattr(pub, self.publishing.method)(address)
            except zmq.ZMQError as exc:
                errors.append(f"{address}: {exc}")
                continue
            self.address = address
            return pub
        pub.close(0)
        raise ConfigError(
            f"cannot {self.publishing.method} endpoints[{self.publishing.name!r}]: "
            + "; ".join(errors)
        )

    def _sync_ack_listener(self) -> None:
        """Open the ACK listener if needed; subscribe and connect whatever it lacks."""
        if self._sub is None:
            self._sub = self._ctx.socket(zmq.SUB)
            tune(self._sub, self.options)
            self._sub.setsockopt(zmq.LINGER, 0)
            # An ACK is a few KiB: libzmq cuts off a peer sending a larger frame before buffering
            # it, and gives that endpoint up: the Reconnector connects it again.
            self._sub.setsockopt(zmq.MAXMSGSIZE, MAX_ACK_FRAME_BYTES)
            self._sub.setsockopt(zmq.RCVHWM, ACK_RCVHWM)
            assert self._poller is not None
            self._poller.register(self._sub, zmq.POLLIN)
            self._watch(self._sub)
        with self._lock:
            topics = [t for t in self._ack_topics if t not in self._heard_topics]
            endpoints = [e for e in self._ack_endpoints if e not in self._heard_endpoints]
        for topic in topics:
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
            self._heard_topics.add(topic)
        for endpoint in endpoints:
            self._heard_endpoints.add(endpoint)
            try:
                self._sub.connect(endpoint)
            except zmq.ZMQError as exc:
                log.error("gilmsg: cannot listen for ACKs from endpoint %r: %s", endpoint, exc)

    def _watch(self, sock: zmq.Socket) -> None:
        watcher = self._reconnectors[sock] = Reconnector(sock)
        assert self._poller is not None
        self._poller.register(watcher.monitor, zmq.POLLIN)

    def _run(self, ready: threading.Event) -> None:
        try:
            pub = self._open_publisher()
        except BaseException as exc:  # handed to the constructor's caller
            self._start_error = exc
            self._stopped.set()
            ready.set()
            return
        with self._pub_lock:
            self._pub = pub
        ready.set()
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        self._poller = poller
        if self.publishing.method == "connect":  # to the relay: the same libzmq give-up applies
            with self._pub_lock:  # other threads may be sending on it already
                self._watch(pub)
        watching_pub = False
        waiters: dict[str, _Waiter] = {}
        try:
            while True:
                now = time.monotonic()
                with self._lock:
                    wakeup = self._ledger.next_wakeup(now)
                timeout = IDLE_POLL_MS
                for watcher in self._reconnectors.values():
                    due = watcher.next_due()
                    if due is not None:
                        wakeup = due if wakeup is None else min(wakeup, due)
                if wakeup is not None:
                    timeout = min(timeout, max(0, int((wakeup - now) * 1000) + 1))
                if bool(waiters) != watching_pub:  # notices matter only to pending deliveries
                    watching_pub = bool(waiters)
                    if watching_pub:
                        poller.register(pub, zmq.POLLIN)
                    else:
                        poller.unregister(pub)
                with self._pub_lock:
                    self._pub_polled = watching_pub
                events = dict(poller.poll(timeout))
                with self._pub_lock:
                    self._pub_polled = False
                if self._wake_r in events and not self._drain_commands(pub, waiters):
                    return
                if pub in events and self._new_subscriber(pub):
                    self._resend(pub, waiters, force=True)
                elif not watching_pub:  # nobody waits: just keep libzmq's notice queue short
                    self._new_subscriber(pub)
                if self._sub is not None and self._sub in events:
                    self._read_acks(self._sub, waiters)
                if self._reconnectors:
                    now = time.monotonic()
                    for watcher in self._reconnectors.values():
                        if watcher.monitor in events:
                            watcher.on_events(now)
                        if watcher.sock is pub:  # shared with senders in other threads
                            with self._pub_lock:
                                watcher.reconnect_due(now)
                        else:
                            watcher.reconnect_due(now)
                self._resend(pub, waiters, force=False)
        except Exception as exc:  # a bug here must not leave publishers waiting forever
            log.exception("gilmsg link thread failed")
            self._stopped.set()
            pending = list(waiters.values())
            while True:
                try:
                    kind, payload = self._queue.get_nowait()
                except queue.Empty:
                    break
                if kind == "deliver":
                    pending.append(payload)
            for waiter in pending:
                waiter.error = GilmsgError(f"gilmsg link thread failed: {exc}")
                waiter.finished.set()
        finally:
            self._stopped.set()
            with self._pub_lock:
                for watcher in self._reconnectors.values():
                    watcher.close()
                self._pub = None
                pub.close(EXIT_LINGER_MS)
            if self._sub is not None:
                self._sub.close(0)
            self._ctx.term()
            # The wake pipe stays open: a racing _command must not write to a recycled fd.

    def _drain_commands(self, pub: zmq.Socket, waiters: dict[str, _Waiter]) -> bool:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except queue.Empty:
                return True
            if kind == "stop":
                return False
            if kind == "send":
                with self._pub_lock:
                    pub.send_multipart(payload)
            elif kind == "listen":
                if self._sub is not None:
                    self._sync_ack_listener()
            elif kind == "deliver":
                self._sync_ack_listener()  # listen before the message goes out
                delivery = payload.delivery
                now = time.monotonic()
                with self._lock:
                    live = self._ledger.get(delivery.msg_id) is delivery
                    if live:
                        delivery.sent(now)
                if not live:  # the caller timed out or was interrupted before we got here
                    continue
                waiters[delivery.msg_id] = payload
                with self._pub_lock:
                    pub.send_multipart(payload.frames)

    def _new_subscriber(self, pub: zmq.Socket) -> bool:
        """Read XPUB's subscription notices; True if someone (re)subscribed."""
        with self._pub_lock:
            return self._read_notices(pub)

    def _read_notices(self, pub: zmq.Socket) -> bool:
        """:meth:`_new_subscriber` for a caller holding ``_pub_lock``."""
        joined = False
        while True:
            try:
                notice = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return joined
            if notice[:1] == b"\x01":
                joined = True
                prefix = notice[1:]
                if (prefix not in self._prefixes
                        and self._prefix_bytes + len(prefix) <= MAX_PREFIX_BYTES):
                    self._prefixes.add(prefix)
                    self._prefix_bytes += len(prefix)
            elif notice[:1] == b"\x00":
                if notice[1:] in self._prefixes:
                    self._prefixes.discard(notice[1:])
                    self._prefix_bytes -= len(notice) - 1

    def _read_acks(self, sub: zmq.Socket, waiters: dict[str, _Waiter]) -> None:
        for _ in range(ACK_BATCH):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            decoded = message.decode(frames)
            if decoded is None:
                continue
            _topic, envelope = decoded
            ack = message.parse_ack(envelope)
            if ack is None or envelope.get("topic") not in self._ack_topics:
                continue  # the frame topic is not signed; the envelope's is
            waiter = waiters.get(ack.msg_id)
            if waiter is None:  # not ours: no crypto spent on it
                continue
            try:
                verdict = waiter.validate(envelope)
            except GilmsgError as exc:  # CA or CRL unusable: the publish cannot succeed
                waiter.error = exc
                waiter.finished.set()
                continue
            signer = verdict.signer if verdict.ok else None
            now = time.monotonic()
            with self._lock:
                delivery, outcome = self._ledger.on_ack(signer, ack, now)
                done = delivery is not None and delivery.done
            if outcome not in (Outcome.ACCEPTED, Outcome.REPEAT, Outcome.UNKNOWN_MESSAGE,
                               Outcome.LATE):
                log.warning(
                    "ignored ACK for %s from %s: %s %s",
                    ack.msg_id, verdict.signer, outcome.value, verdict.reason,
                )
            if done:
                waiter.finished.set()

    def _resend(self, pub: zmq.Socket, waiters: dict[str, _Waiter], force: bool) -> None:
        now = time.monotonic()
        for msg_id, waiter in list(waiters.items()):
            delivery = waiter.delivery
            with self._lock:
                live = self._ledger.get(msg_id) is delivery
                due = live and (
                    delivery.resend_due(now)
                    or (force and not delivery.done and not delivery.expired(now))
                )
                if due:
                    delivery.sent(now)
                if live and delivery.expired(now):
                    waiter.finished.set()
            if not live:
                del waiters[msg_id]
            elif due:
                with self._pub_lock:
                    pub.send_multipart(waiter.frames)


_links: dict[gconfig.Publishing, Link] = {}
_links_lock = threading.Lock()


def link_for(config: Mapping[str, Any]) -> Link:
    """The process-wide :class:`Link` for this config's publishing identity, started if needed.

    Its sockets get the :class:`LinkOptions` of the config that started it.

    Raises:
        ConfigError: the identity has no endpoint, or none of its endpoints can be bound, or a
            ``gilmsg_heartbeat_*`` / ``gilmsg_tcp_*`` key is not a number of seconds.
    """
    publishing = gconfig.publishing(config)
    options = LinkOptions.from_config(config)
    ack_topic = gconfig.ack_topic(config)
    ack_endpoints = gconfig.subscribe_endpoints(config, skip=publishing.name)
    with _links_lock:
        link = _links.get(publishing)
        if link is None or link._stopped.is_set():
            link = _links[publishing] = Link(publishing, ack_topic, ack_endpoints, options)
            return link
    link.listen(ack_topic, ack_endpoints)
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

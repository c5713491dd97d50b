"""The ZeroMQ transport, fedmsg's own: the only module of gilmsg that imports ``zmq``.

A :class:`ZmqPublisher` binds (or, in ``active`` mode, connects) an XPUB socket, which also
reports subscriptions, and listens for ACKs on one SUB socket connected to the rest of the bus.
ZeroMQ sockets are not thread-safe: the publishing socket is shared under a lock, except while
the link's thread polls it for subscription notices; then other threads' sends are queued and
the poll is woken up to send them.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from gilmsg.config import Publishing, registry
from gilmsg.core.subscriptions import Subscriptions
from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.errors import ConfigError, GilmsgError
from gilmsg.transport.base import Heard

log = logging.getLogger(__name__)

#: Reconnect quickly to peers that start late: the bus is local or a LAN.
RECONNECT_IVL_MS = 10
RECONNECT_IVL_MAX_MS = 50
#: Queue depth per peer before ZeroMQ drops (fedmsg cannot set this; we can).
HWM = 100_000
#: How long queued outgoing messages may delay process exit.
EXIT_LINGER_MS = 200
#: ACK frames read per poll before timers get a turn.
ACK_BATCH = 256
#: Messages a receiver reads from one socket per poll (the others get their turn after).
RECEIVE_BATCH = 16


#: Largest frame the publishing socket accepts from its peers (they send only subscriptions,
#: i.e. topic prefixes); and the most bytes of distinct prefixes it keeps track of.
MAX_SUBSCRIPTION_BYTES = 64 << 10
MAX_PREFIX_BYTES = 1 << 20
#: Largest ACK frame accepted (a real one is 3-6 KiB: certificate, signature, body), and the
#: ACK listener's queue per peer: what a hostile peer can make it buffer is their product.
MAX_ACK_FRAME_BYTES = 64 << 10
ACK_RCVHWM = 1000


#: fedmsg.d key: the most bytes a receiver (``tail_messages``, ``gilmsg-tail``) queues per
#: peer before it stops reading from that peer, and its default (32 MiB). ZeroMQ counts its
#: queue in messages, so the queue is ``backlog // MAX_FRAME_BYTES`` messages deep: every frame
#: is at most MAX_FRAME_BYTES (larger ones are cut off unread), hence the bound holds in bytes.
RECEIVE_BACKLOG_KEY = "gilmsg.receive_backlog_bytes"
RECEIVE_BACKLOG_DEFAULT = 32 << 20


def receive_hwm(config: Mapping[str, Any]) -> int:
    """The RCVHWM (messages) of a receiving socket: :data:`RECEIVE_BACKLOG_KEY` bytes' worth.

    Raises:
        ConfigError: the value is not a whole number of bytes from MAX_FRAME_BYTES to 16 GiB.
    """
    key, value = registry.lookup(config, RECEIVE_BACKLOG_KEY)
    if isinstance(value, bool) or not isinstance(value, int) or not (
            MAX_FRAME_BYTES <= value <= 16 << 30):
        raise ConfigError(f"config key {key!r} must be a whole number of bytes "
                          f"from {MAX_FRAME_BYTES} (one frame) to {16 << 30}, not {value!r}")
    return value // MAX_FRAME_BYTES


#: Connection-health settings: config key -> default, in seconds (0 switches one off); each
#: declared (with its meaning) in :mod:`gilmsg.config.registry`. ZeroMQ heartbeats (ZMTP
#: PING/PONG) make a connection that stalls, e.g. behind TCP retransmissions growing to a minute
#: on a lossy link, be dropped and re-made within seconds; then the publisher re-sends to the new
#: connection at once.
LINK_DEFAULTS: dict[str, float] = {
    f"gilmsg.{name}": registry.BY_NAME[f"gilmsg.{name}"].default
    for name in ("heartbeat_ivl", "heartbeat_timeout", "heartbeat_ttl", "connect_timeout",
                 "tcp_user_timeout", "tcp_keepalive_idle")
}


@dataclass(frozen=True)
class LinkOptions:
    """The connection-health options of :data:`LINK_DEFAULTS`, in seconds; 0 means off."""

    heartbeat_ivl: float = LINK_DEFAULTS["gilmsg.heartbeat_ivl"]
    heartbeat_timeout: float = LINK_DEFAULTS["gilmsg.heartbeat_timeout"]
    heartbeat_ttl: float = LINK_DEFAULTS["gilmsg.heartbeat_ttl"]
    connect_timeout: float = LINK_DEFAULTS["gilmsg.connect_timeout"]
    tcp_user_timeout: float = LINK_DEFAULTS["gilmsg.tcp_user_timeout"]
    tcp_keepalive_idle: float = LINK_DEFAULTS["gilmsg.tcp_keepalive_idle"]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LinkOptions:
        """Read the ``gilmsg.heartbeat_*`` / ``gilmsg.tcp_*`` ... keys (defaults where absent;
        the old spellings ``gilmsg.heartbeat_ivl`` ... too).

        Raises:
            ConfigError: a value is not a number of seconds in [0, 3600].
        """
        values = {}
        for key, default in LINK_DEFAULTS.items():
            spelling, value = registry.lookup(config, key)
            if value is None:
                value = default
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 <= value <= 3600):
                raise ConfigError(f"config key {spelling!r} must be a number of seconds from 0 "
                                  f"to 3600, not {value!r}")
            values[key.removeprefix("gilmsg.")] = float(value)
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
        #: The endpoints connected now (as libzmq reports them), for monitoring.
        self.connected: set[str] = set()

    def on_events(self, now: float) -> None:
        """Read every pending monitor event (never blocks)."""
        while True:
            try:
                event, endpoint = _monitor_event(self.monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            if event == zmq.EVENT_DISCONNECTED:
                self._dropped.setdefault(endpoint, now)
                self.connected.discard(endpoint)
            else:
                self._dropped.pop(endpoint, None)
                if event == zmq.EVENT_CONNECTED:
                    self.connected.add(endpoint)

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


def _monitor_event(frames: list[bytes]) -> tuple[int, str]:
    """``(event, endpoint)`` of a socket-monitor message (libzmq's v1 format: a 16-bit event
    and a 32-bit value, then the endpoint). ``zmq.utils.monitor`` would import asyncio: 20 ms."""
    (event,) = struct.unpack_from("=H", frames[0])
    return event, frames[1].decode("utf-8", "replace")


class ZmqPublisher:
    """:class:`gilmsg.transport.base.Publisher` over ZeroMQ (XPUB out, SUB for ACKs)."""

    def __init__(self, publishing: Publishing, config: Mapping[str, Any]) -> None:
        self.publishing = publishing
        self.options = LinkOptions.from_config(config)
        self.address: str | None = None
        self._ctx = zmq.Context()
        self._lock = threading.Lock()  # the publishing socket, _polled, _subscriptions
        self._polled = False
        self._outbox: queue.SimpleQueue[Sequence[bytes]] = queue.SimpleQueue()
        self._subscriptions = Subscriptions(MAX_PREFIX_BYTES)
        self._topics: set[str] = set()
        self._endpoints: set[str] = set()
        self._sub: zmq.Socket | None = None  # the ACK listener, opened by the first listen()
        try:
            self._pub: zmq.Socket | None = self._open()
        except BaseException:
            self._ctx.term()
            raise
        # The wake pipe is never closed: a racing wake() must not write to a recycled fd.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._watching = False
        #: Watchers of the sockets that connect (the ACK listener; the publisher when active).
        self._reconnectors: dict[zmq.Socket, Reconnector] = {}
        if publishing.method == "connect":  # to the relay: the same libzmq give-up applies
            self._watch(self._pub)

    def _open(self) -> zmq.Socket:
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

    # -- any thread ------------------------------------------------------------------------

    def send(self, frames: Sequence[bytes]) -> None:
        """Send now from this thread if the socket is free, else hand it to the polling thread."""
        with self._lock:
            if self._pub is None:
                raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
            if not self._polled:
                self._pub.send_multipart(frames)
                return
        self._outbox.put(frames)
        self.wake()

    def wake(self) -> None:
        """Make the link thread's poll return."""
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # pipe full: the thread is awake anyway
            pass

    def wait_subscriber(self, topic: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until some peer subscribes to a prefix of ``topic``."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pub = self._pub
                if pub is None:
                    raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
                own = not self._polled  # else the link thread reads the notices
                if own:
                    self._read_notices(pub)
                if self._subscriptions.covers(topic):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if own:  # holding the lock: the link thread's sends wait at most 50 ms
                    pub.poll(int(min(remaining, 0.05) * 1000) + 1)
                    continue
            time.sleep(min(remaining, 0.005))

    def reach(self, topic: str, ignore: tuple[str, ...] = ()) -> str:
        """What the subscriptions heard so far say of ``topic``: ``none``, ``elsewhere`` or
        ``covered`` (see :meth:`gilmsg.core.subscriptions.Subscriptions.reach`)."""
        with self._lock:
            return self._subscriptions.reach(topic, ignore)

    # -- the link's thread -----------------------------------------------------------------

    def listen(self, topics: Sequence[str], endpoints: Sequence[str]) -> None:
        """Open the ACK listener if needed; subscribe and connect whatever it lacks."""
        if self._sub is None:
            self._sub = self._ctx.socket(zmq.SUB)
            tune(self._sub, self.options)
            self._sub.setsockopt(zmq.LINGER, 0)
            # An ACK is a few KiB: libzmq cuts off a peer sending a larger frame before buffering
            # it, and gives that endpoint up: the Reconnector connects it again.
            self._sub.setsockopt(zmq.MAXMSGSIZE, MAX_ACK_FRAME_BYTES)
            self._sub.setsockopt(zmq.RCVHWM, ACK_RCVHWM)
            self._poller.register(self._sub, zmq.POLLIN)
            self._watch(self._sub)
        for topic in topics:
            if topic not in self._topics:
                self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
                self._topics.add(topic)
        for endpoint in endpoints:
            if endpoint in self._endpoints:
                continue
            self._endpoints.add(endpoint)
            try:
                self._sub.connect(endpoint)
            except zmq.ZMQError as exc:
                log.error("gilmsg: cannot listen for ACKs from endpoint %r: %s", endpoint, exc)

    def poll(self, timeout: float, watch_subscribers: bool) -> Heard:
        """Wait for ACKs, a subscriber (when watched) or a wake-up; send what others queued."""
        pub = self._pub
        assert pub is not None
        if watch_subscribers != self._watching:  # notices matter only to pending deliveries
            self._watching = watch_subscribers
            if watch_subscribers:
                self._poller.register(pub, zmq.POLLIN)
            else:
                self._poller.unregister(pub)
        due = [d for d in (w.next_due() for w in self._reconnectors.values()) if d is not None]
        if due:
            timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
        with self._lock:
            self._polled = watch_subscribers
        events = dict(self._poller.poll(max(0, int(timeout * 1000) + 1) if timeout else 0))
        with self._lock:
            self._polled = False
            self._flush(pub)
            # Unwatched, the notices are only read to keep libzmq's queue of them short.
            joined = self._read_notices(pub) and watch_subscribers
        if self._wake_r in events:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass
        if self._reconnectors:
            now = time.monotonic()
            for watcher in self._reconnectors.values():
                if watcher.monitor in events:
                    watcher.on_events(now)
                if watcher.sock is pub:  # shared with senders in other threads
                    with self._lock:
                        watcher.reconnect_due(now)
                else:
                    watcher.reconnect_due(now)
        frames: list[list[bytes]] = []
        if self._sub is not None and self._sub in events:
            for _ in range(ACK_BATCH):
                try:
                    frames.append(self._sub.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
        return Heard(frames, joined)

    def close(self) -> None:
        """Close both sockets and the context (queued messages get a short linger)."""
        with self._lock:
            for watcher in self._reconnectors.values():
                watcher.close()
            pub, self._pub = self._pub, None
            if pub is not None:
                self._flush(pub)
                pub.close(EXIT_LINGER_MS)
        if self._sub is not None:
            self._sub.close(0)
        self._ctx.term()

    def _watch(self, sock: zmq.Socket) -> None:
        watcher = self._reconnectors[sock] = Reconnector(sock)
        self._poller.register(watcher.monitor, zmq.POLLIN)

    def _flush(self, pub: zmq.Socket) -> None:
        while True:
            try:
                pub.send_multipart(self._outbox.get_nowait())
            except queue.Empty:
                return

    def _read_notices(self, pub: zmq.Socket) -> bool:
        """Read XPUB's subscription notices (caller holds the lock); True if someone joined."""
        joined = False
        while True:
            try:
                notice = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return joined
            joined = self._subscriptions.notice(notice) or joined


def open_publisher(publishing: Publishing, config: Mapping[str, Any]) -> ZmqPublisher:
    """Bind (or connect) ``publishing``'s endpoint. Raises ConfigError if none can be used."""
    return ZmqPublisher(publishing, config)


class ZmqSubscription:
    """:class:`gilmsg.transport.base.Subscription`: one SUB socket per endpoint, as fedmsg.

    Frames over 1 MiB are cut off unread (they would be dropped anyway) and the connection is
    made again at once; the sockets use the connection-health keys of :class:`LinkOptions`.

    Each socket queues at most ``gilmsg.receive_backlog_bytes`` (:func:`receive_hwm`) from its
    peer. A reader slower than its peers fills that queue; ZeroMQ then stops reading from the
    connection (TCP backpressure): the peer's own queue for it grows up to its high-water mark,
    beyond which the peer drops what it sends, and heartbeats unanswered meanwhile make either
    side re-make the connection. What was dropped is not acknowledged, so its publisher sends
    it again (within ``ack_timeout``; an outbox until delivered).
    """

    def __init__(self, endpoints: Sequence[tuple[str, str]], topic: str,
                 config: Mapping[str, Any]) -> None:
        options = LinkOptions.from_config(config)
        hwm = receive_hwm(config)
        self._ctx = zmq.Context()
        self._poller = zmq.Poller()
        self._subs: dict[zmq.Socket, tuple[str, str]] = {}
        self._watchers: dict[zmq.Socket, Reconnector] = {}  # by monitor socket
        try:
            for name, endpoint in endpoints:
                sub = self._ctx.socket(zmq.SUB)
                self._subs[sub] = (name, endpoint)
                tune(sub, options)
                sub.setsockopt(zmq.LINGER, 0)
                sub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
                sub.setsockopt(zmq.RCVHWM, hwm)
                sub.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
                watcher = Reconnector(sub)
                self._watchers[watcher.monitor] = watcher
                self._poller.register(watcher.monitor, zmq.POLLIN)
                sub.connect(endpoint)
                self._poller.register(sub, zmq.POLLIN)
        except BaseException:
            self.close()
            raise

    @property
    def connected(self) -> int:
        """How many endpoints are connected now (as far as the last :meth:`receive` heard)."""
        return sum(len(w.connected) for w in list(self._watchers.values()))

    def receive(self, timeout: float) -> list[tuple[str, str, list[bytes]]]:
        """Up to :data:`RECEIVE_BATCH` messages from each socket that has some (in their order),
        waiting up to ``timeout`` seconds."""
        due = [d for d in (w.next_due() for w in self._watchers.values()) if d is not None]
        if due:
            timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
        out = []
        for sock, _ in self._poller.poll(int(timeout * 1000) + (1 if due else 0)):
            if sock in self._watchers:
                self._watchers[sock].on_events(time.monotonic())
                continue
            name, endpoint = self._subs[sock]
            out.append((name, endpoint, sock.recv_multipart()))
            for _ in range(RECEIVE_BATCH - 1):  # what is queued already: one poll for all
                if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    break
                out.append((name, endpoint, sock.recv_multipart(zmq.NOBLOCK)))
        if due:
            now = time.monotonic()
            for watcher in self._watchers.values():
                watcher.reconnect_due(now)
        return out

    def close(self) -> None:
        """Close every socket and the context."""
        for watcher in self._watchers.values():
            watcher.close()
        self._watchers = {}
        for sub in self._subs:
            sub.close(0)
        self._subs = {}
        self._ctx.term()


def remember_route(msg_id: str, route: str) -> None:
    """Ignored: ZeroMQ sends every ACK on the ACK topic, which the publisher hears
    (:meth:`gilmsg.transport.base.Transport.remember_route`)."""


def subscribe(endpoints: Sequence[tuple[str, str]], topic: str,
              config: Mapping[str, Any]) -> ZmqSubscription:
    """Subscribe to ``topic`` on every ``(name, endpoint)``."""
    return ZmqSubscription(endpoints, topic, config)

"""The publishing side of the ZeroMQ transport: :class:`ZmqPublisher` (XPUB out, SUB for ACKs).

ZeroMQ sockets are not thread-safe: the publishing socket is used only under a lock, and never
polled. Any thread sends on it directly; the link's thread reads its subscription notices after
each of its polls (which it bounds by :data:`NOTICE_POLL_S` while someone waits for joins).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import zmq

from gilmsg.config import Publishing, ack_endpoints
from gilmsg.core.subscriptions import Subscriptions
from gilmsg.errors import ConfigError, GilmsgError
from gilmsg.transport.base import Heard
from gilmsg.transport.zmq.options import (
    ACK_RCVHWM,
    EXIT_LINGER_MS,
    MAX_ACK_FRAME_BYTES,
    MAX_SUBSCRIPTION_BYTES,
    LinkOptions,
    tune,
)
from gilmsg.transport.zmq.reconnector import Reconnector

log = logging.getLogger("gilmsg.transport.zmq")

#: ACK frames read per poll before timers get a turn.
ACK_BATCH = 256
#: The most bytes of distinct subscription prefixes the publisher keeps track of.
MAX_PREFIX_BYTES = 1 << 20
#: Seconds between two reads of the subscription notices while joins are watched: how late a
#: newly joined subscriber may be noticed (the publishing socket is never polled, so that any
#: thread can send on it at once).
NOTICE_POLL_S = 0.01


class ZmqPublisher:
    """:class:`gilmsg.transport.base.Publisher` over ZeroMQ (XPUB out, SUB for ACKs)."""

    def __init__(self, publishing: Publishing, config: Mapping[str, Any]) -> None:
        self.publishing = publishing
        self.options = LinkOptions.from_config(config)
        self.address: str | None = None
        self._ctx = zmq.Context()
        self._lock = threading.Lock()  # the publishing socket, _subscriptions, _join_heard
        self._join_heard = False  # a join was read and not reported by poll() yet
        self._subscriptions = Subscriptions(MAX_PREFIX_BYTES)
        self._topics: set[str] = set()
        self._endpoints: set[str] = set()
        self._sub: zmq.Socket | None = None  # the ACK listener, opened by the first listen()
        self._acks: zmq.Socket | None = None  # gilmsg.ack_endpoints: where ACKs leave instead
        self._pub: zmq.Socket | None = None
        try:
            self._pub = self._open()
            own_acks = ack_endpoints(config, publishing.name)
            if publishing.method == "bind" and own_acks:
                self._acks = self._ctx.socket(zmq.PUB)
                self._attach(self._acks, "bind", own_acks, "gilmsg.ack_endpoints")
        except BaseException:
            if self._pub is not None:
                self._pub.close(0)
            self._ctx.term()
            raise
        # The wake pipe is never closed: a racing wake() must not write to a recycled fd.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._poller.register(self._wake_r, zmq.POLLIN)
        #: Watchers of the sockets that connect (the ACK listener; the publisher when active).
        self._reconnectors: dict[zmq.Socket, Reconnector] = {}
        if publishing.method == "connect":  # to the relay: the same libzmq give-up applies
            self._watch(self._pub)

    def _open(self) -> zmq.Socket:
        pub = self._ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        self.address = self._attach(pub, self.publishing.method, self.publishing.addresses,
                                    "endpoints")
        return pub

    def _attach(self, sock: zmq.Socket, method: str, addresses: Sequence[str],
                table: str) -> str:
        """Tune ``sock`` and bind (or connect) it to the first usable of ``addresses``; that
        address. If none can be used, ``sock`` is closed and a ConfigError names ``table``."""
        tune(sock, self.options)
        errors = []
        for address in addresses:
            try:
                getattr(sock, method)(address)
            except zmq.ZMQError as exc:
                errors.append(f"{address}: {exc}")
                continue
            return address
        sock.close(0)
        raise ConfigError(f"cannot {method} {table}[{self.publishing.name!r}]: "
                          + "; ".join(errors))

    # -- any thread ------------------------------------------------------------------------

    def send(self, frames: Sequence[bytes]) -> None:
        """Send now, from this thread (frames leave in the order of the calls)."""
        with self._lock:
            if self._pub is None:
                raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
            self._pub.send_multipart(frames)

    def send_ack(self, frames: Sequence[bytes]) -> None:
        """Send an ACK: on this name's ``gilmsg.ack_endpoints`` socket if it has one, else as
        :meth:`send` (frames leave in the order of the calls)."""
        with self._lock:
            if self._pub is None:
                raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
            (self._acks or self._pub).send_multipart(frames)

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
                self._read_notices(pub)
                if self._subscriptions.covers(topic):
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, NOTICE_POLL_S))

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
        """Wait for ACKs or a wake-up, at most :data:`NOTICE_POLL_S` while subscribers are
        watched; then read the subscription notices (a join is reported when watched)."""
        pub = self._pub
        assert pub is not None
        if watch_subscribers:
            timeout = min(timeout, NOTICE_POLL_S)
        due = [d for d in (w.next_due() for w in self._reconnectors.values()) if d is not None]
        if due:
            timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
        events = dict(self._poller.poll(max(0, int(timeout * 1000) + 1) if timeout else 0))
        with self._lock:
            # Unwatched, the notices are only read to keep libzmq's queue of them short.
            self._read_notices(pub)
            joined, self._join_heard = self._join_heard and watch_subscribers, False
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
                pub.close(EXIT_LINGER_MS)
            if self._acks is not None:
                self._acks.close(EXIT_LINGER_MS)
        if self._sub is not None:
            self._sub.close(0)
        self._ctx.term()

    def _watch(self, sock: zmq.Socket) -> None:
        watcher = self._reconnectors[sock] = Reconnector(sock)
        self._poller.register(watcher.monitor, zmq.POLLIN)

    def _read_notices(self, pub: zmq.Socket) -> None:
        """Read XPUB's subscription notices (caller holds the lock); a join is kept in
        ``_join_heard`` for the link thread's :meth:`poll`, whichever thread read it."""
        while int(pub.get(zmq.EVENTS)) & zmq.POLLIN:
            if self._subscriptions.notice(pub.recv(zmq.NOBLOCK)):
                self._join_heard = True


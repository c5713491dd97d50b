"""An in-process transport: endpoints are names in a dict, frames are Python lists.

It shows the seam (:mod:`gilmsg.transport.base`) with nothing else in the way, and lets tests
drive the whole publish / acknowledge path in one process without sockets: set the config key
``gilmsg.transport = "memory"``. Semantics follow the parts of ZeroMQ PUB/SUB gilmsg relies on:
a subscriber gets what is published after it subscribed, topic prefixes filter, a subscriber may
connect before the publisher binds, and a publisher learns about every new subscription.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from gilmsg.config import Publishing
from gilmsg.errors import ConfigError, GilmsgError
from gilmsg.transport.base import Heard

_lock = threading.Lock()  # the two tables below; taken before any Condition, never after
_bound: dict[str, MemoryPublisher] = {}
_connected: dict[str, list[_Inbox]] = {}


class _Inbox:
    """What one subscriber receives, from the endpoints it connected to."""

    def __init__(self, prefixes: Sequence[bytes], cond: threading.Condition,
                 ignore: Collection[bytes] = ()) -> None:
        self.prefixes = list(prefixes)
        self.ignore = frozenset(ignore)
        self.names: dict[str, str] = {}
        self.cond = cond
        self.items: deque[tuple[str, str, list[bytes]]] = deque()

    def offer(self, endpoint: str, frames: Sequence[bytes]) -> None:
        topic = bytes(frames[0])
        if topic not in self.ignore and any(topic.startswith(p) for p in self.prefixes):
            with self.cond:
                self.items.append((self.names.get(endpoint, ""), endpoint, list(frames)))
                self.cond.notify_all()

    def connect(self, name: str, endpoint: str) -> None:
        """Caller holds ``_lock``."""
        self.names[endpoint] = name
        _connected.setdefault(endpoint, []).append(self)
        publisher = _bound.get(endpoint)
        if publisher is not None:
            publisher._joined()

    def disconnect(self) -> None:
        """Caller holds ``_lock``."""
        for endpoint in self.names:
            inboxes = _connected.get(endpoint, [])
            if self in inboxes:
                inboxes.remove(self)


class MemoryPublisher:
    """:class:`gilmsg.transport.base.Publisher` in memory."""

    def __init__(self, publishing: Publishing) -> None:
        if publishing.method != "bind":
            raise ConfigError("the memory transport has no relay: 'active' is not supported")
        self.publishing = publishing
        self._cond = threading.Condition()
        self._woken = False
        self._joins = False
        self._acks: _Inbox | None = None
        self._closed = False
        self.address: str | None = None
        with _lock:
            for address in publishing.addresses:
                if address not in _bound:
                    _bound[address] = self
                    self.address = address
                    if _connected.get(address):
                        self._joined()
                    return
        raise ConfigError(f"cannot bind endpoints[{publishing.name!r}]: every address is in use")

    def _joined(self) -> None:
        with self._cond:
            self._joins = True
            self._cond.notify_all()

    def send(self, frames: Sequence[bytes]) -> None:
        """Hand ``frames`` to every subscriber connected to this endpoint now."""
        with _lock:
            if self._closed:
                raise GilmsgError(f"gilmsg link {self.publishing.name!r} is closed")
            for inbox in list(_connected.get(self.address or "", [])):
                inbox.offer(self.address or "", frames)

    def listen(self, topics: Sequence[str], endpoints: Sequence[str]) -> None:
        """Hear ``topics`` from ``endpoints`` too."""
        with _lock:
            if self._acks is None:
                self._acks = _Inbox([], self._cond)
            for topic in topics:
                if topic.encode() not in self._acks.prefixes:
                    self._acks.prefixes.append(topic.encode())
            for endpoint in endpoints:
                if endpoint not in self._acks.names:
                    self._acks.connect("", endpoint)

    def poll(self, timeout: float, watch_subscribers: bool) -> Heard:
        """Wait for ACK frames, a join (when watched) or :meth:`wake`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                ready = self._woken or (self._acks is not None and self._acks.items)
                if ready or (watch_subscribers and self._joins):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            frames = [item[2] for item in self._acks.items] if self._acks is not None else []
            if self._acks is not None:
                self._acks.items.clear()
            joined, self._joins = self._joins and watch_subscribers, False
            self._woken = False
        return Heard(frames, joined)

    def wake(self) -> None:
        """Make :meth:`poll` return."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def wait_subscriber(self, topic: str, timeout: float) -> bool:
        """True once some subscriber of this endpoint takes a prefix of ``topic``."""
        wanted = topic.encode("utf-8")
        deadline = time.monotonic() + timeout
        while True:
            with _lock:
                inboxes = list(_connected.get(self.address or "", []))
            if any(wanted.startswith(p) for inbox in inboxes for p in inbox.prefixes):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    def close(self) -> None:
        """Unbind and stop listening."""
        with _lock:
            self._closed = True
            if _bound.get(self.address or "") is self:
                del _bound[self.address or ""]
            if self._acks is not None:
                self._acks.disconnect()


def open_publisher(publishing: Publishing, config: Mapping[str, Any]) -> MemoryPublisher:
    """Bind ``publishing``'s first free address (no config key of its own)."""
    return MemoryPublisher(publishing)


class MemorySubscription:
    """:class:`gilmsg.transport.base.Subscription` in memory."""

    def __init__(self, endpoints: Sequence[tuple[str, str]], topic: str,
                 ignore: Collection[str] = ()) -> None:
        self._inbox = _Inbox([topic.encode("utf-8")], threading.Condition(),
                             [t.encode("utf-8") for t in ignore])
        with _lock:
            for name, endpoint in endpoints:
                self._inbox.connect(name, endpoint)

    def receive(self, timeout: float) -> list[tuple[str, str, list[bytes]]]:
        """What arrived, waiting up to ``timeout`` seconds for something."""
        with self._inbox.cond:
            if not self._inbox.items:
                self._inbox.cond.wait(timeout)
            items = list(self._inbox.items)
            self._inbox.items.clear()
        return items

    def close(self) -> None:
        """Disconnect from every endpoint."""
        with _lock:
            self._inbox.disconnect()


def remember_route(msg_id: str, route: str) -> None:
    """Ignored: the memory transport sends every ACK on the ACK topic, which the publisher hears
    (:meth:`gilmsg.transport.base.Transport.remember_route`)."""


def subscribe(endpoints: Sequence[tuple[str, str]], topic: str,
              config: Mapping[str, Any], ignore: Collection[str] = ()) -> MemorySubscription:
    """Subscribe to ``topic`` on every ``(name, endpoint)``, never taking the messages whose
    topic is one of ``ignore``."""
    return MemorySubscription(endpoints, topic, ignore)

"""The receiving side of the ZeroMQ transport: :class:`ZmqSubscription`, one SUB socket per
endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import zmq

from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.transport.zmq.options import LinkOptions, receive_hwm, tune
from gilmsg.transport.zmq.reconnector import Reconnector


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
        """One message from each socket that has one, waiting up to ``timeout`` seconds."""
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


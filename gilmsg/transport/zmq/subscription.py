"""The receiving side of the ZeroMQ transport: :class:`ZmqSubscription`, one SUB socket per
endpoint, drained continuously by a reader thread into a buffer bounded in bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import zmq

from gilmsg.config import registry
from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.logsummary import RefusalLog
from gilmsg.transport.zmq.options import (
    RECEIVE_BACKLOG_KEY,
    LinkOptions,
    receive_hwm,
    tune,
)
from gilmsg.transport.zmq.reconnector import Reconnector

log = logging.getLogger("gilmsg.transport.zmq")

#: Seconds the reader thread waits in one poll: how soon it sees :meth:`ZmqSubscription.close`.
READER_POLL_S = 0.05
#: Messages the reader takes from one socket before it looks at the others again.
READ_BATCH = 256
#: Seconds :meth:`ZmqSubscription.close` waits for the reader thread to end.
JOIN_TIMEOUT_S = 5.0


def open_sub(ctx: zmq.Context, topic: str, options: LinkOptions) -> zmq.Socket:
    """A SUB socket with gilmsg's options (:func:`tune`: its ``RCVHWM`` is the generic
    :data:`~gilmsg.transport.zmq.options.HWM`), the 1 MiB frame limit and ``topic``; not
    connected yet."""
    sub = ctx.socket(zmq.SUB)
    try:
        tune(sub, options)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        sub.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
    except BaseException:
        sub.close(0)
        raise
    return sub


class _Peer:
    """What the reader thread buffered from one endpoint (guarded by the subscription's lock)."""

    __slots__ = ("name", "endpoint", "queue", "bytes")

    def __init__(self, name: str, endpoint: str) -> None:
        self.name = name
        self.endpoint = endpoint
        self.queue: deque[list[bytes]] = deque()
        self.bytes = 0


class ZmqSubscription:
    """:class:`gilmsg.transport.base.Subscription`: one SUB socket per endpoint, as fedmsg.

    A reader thread owns the sockets, their poller and their :class:`Reconnector`\\ s, and
    drains every socket as fast as messages arrive, so libzmq's own queue never fills: a full
    one makes libzmq stop reading the connection and answer no heartbeat, and libzmq 4.3.5 can
    then abort the process when the connection is dropped (``stream_engine_base.cpp``,
    zeromq/libzmq issues 4364, 3937, 4767). What it reads waits in a buffer per peer holding at
    most ``gilmsg.receive_backlog_bytes`` (the frames' bytes; a message that arrives while its
    peer's buffer is empty is always taken). A message that would exceed it is **dropped**
    there, unparsed and unchecked, and counted (:attr:`dropped`; logged through
    :class:`gilmsg.logsummary.RefusalLog`: the first at once, then a summary line a minute).
    Nothing dropped was acknowledged, so a gilmsg publisher naming this recipient sends it
    again (until its ``ack_timeout``; an outbox until delivered); a message nobody re-sends
    (plain fedmsg, or naming other recipients) is lost, as behind any full fedmsg queue.

    A message whose topic frame is one of ``ignore`` (for a recipient tailing the whole bus: the
    other recipients' ACKs) is dropped by the reader thread as it arrives, unparsed and
    uncounted in the backlog, and never wakes the application (:attr:`ignored` counts them).

    Frames over 1 MiB are cut off unread and the connection is made again at once; the sockets
    use the connection-health keys of :class:`LinkOptions`.
    """

    def __init__(self, endpoints: Sequence[tuple[str, str]], topic: str,
                 config: Mapping[str, Any], ignore: Collection[str] = ()) -> None:
        options = LinkOptions.from_config(config)
        receive_hwm(config)  # validates the bound
        #: The bytes buffered per peer at most (``gilmsg.receive_backlog_bytes``).
        self.limit = int(registry.lookup(config, RECEIVE_BACKLOG_KEY)[1])
        self.dropped = 0  #: messages dropped at the bound so far
        self.ignored = 0  #: messages dropped for their topic (``ignore``) so far
        self._ignore = frozenset(t.encode("utf-8") for t in ignore)
        self._drops = RefusalLog(log, "messages")
        self._cond = threading.Condition()
        self._connected = 0
        self._stop = False
        self._error: BaseException | None = None
        self._ctx = zmq.Context()
        self._poller = zmq.Poller()
        self._peers: dict[zmq.Socket, _Peer] = {}
        self._watchers: dict[zmq.Socket, Reconnector] = {}  # by monitor socket
        self._thread: threading.Thread | None = None
        try:
            for name, endpoint in endpoints:
                sub = open_sub(self._ctx, topic, options)
                self._peers[sub] = _Peer(name, endpoint)
                watcher = Reconnector(sub)
                self._watchers[watcher.monitor] = watcher
                self._poller.register(watcher.monitor, zmq.POLLIN)
                sub.connect(endpoint)
                self._poller.register(sub, zmq.POLLIN)
            # From here on only the reader thread touches the sockets, until close() joined it.
            self._thread = threading.Thread(target=self._run, name="gilmsg-subscription",
                                            daemon=True)
            self._thread.start()
        except BaseException:
            self.close()
            raise

    @property
    def connected(self) -> int:
        """How many endpoints are connected now (as far as the reader thread last heard)."""
        with self._cond:
            return self._connected

    def buffered(self) -> int:
        """The bytes buffered now, over every peer (read by the application or not yet)."""
        with self._cond:
            return sum(peer.bytes for peer in self._peers.values())

    def receive(self, timeout: float) -> list[tuple[str, str, list[bytes]]]:
        """The oldest buffered message of each peer that has one, waiting up to ``timeout``
        seconds for one.

        Raises:
            RuntimeError: the reader thread failed (its error is the cause) or was closed.
        """
        with self._cond:
            self._cond.wait_for(self._readable, max(0.0, timeout))
            if self._error is not None:
                raise RuntimeError("gilmsg: the subscription's reader failed") from self._error
            if self._stop:
                raise RuntimeError("gilmsg: the subscription is closed")
            out = []
            for peer in self._peers.values():
                if peer.queue:
                    frames = peer.queue.popleft()
                    peer.bytes -= _size(frames)
                    out.append((peer.name, peer.endpoint, frames))
            return out

    def _readable(self) -> bool:
        return (self._stop or self._error is not None
                or any(peer.queue for peer in self._peers.values()))

    def _run(self) -> None:
        """Reader thread: poll, drain, re-connect, until :meth:`close`; an error is kept for
        :meth:`receive` to raise."""
        try:
            while not self._stop:
                self._round()
        except BaseException as exc:  # noqa: BLE001 - handed to the application's thread
            log.error("gilmsg: the subscription's reader failed: %r", exc)
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _round(self) -> None:
        """One poll of every socket: events read, messages buffered, due re-connections made."""
        timeout = READER_POLL_S
        due = [d for d in (w.next_due() for w in self._watchers.values()) if d is not None]
        if due:
            timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
        events = self._poller.poll(int(timeout * 1000) + 1)
        watched = False
        for sock, _ in events:
            if sock in self._watchers:
                self._watchers[sock].on_events(time.monotonic())
                watched = True
            else:
                self._drain(sock)
        if due:
            now = time.monotonic()
            for watcher in self._watchers.values():
                watcher.reconnect_due(now)
        if watched:
            count = sum(len(w.connected) for w in self._watchers.values())
            with self._cond:
                self._connected = count

    def _drain(self, sock: zmq.Socket) -> None:
        """Reader thread: take up to :data:`READ_BATCH` messages from ``sock`` into its peer's
        buffer, dropping those beyond the bound and those ``ignore`` names."""
        peer = self._peers[sock]
        taken = []
        ignored = 0
        for _ in range(READ_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frames[0] in self._ignore:
                ignored += 1
            else:
                taken.append(frames)
        self.ignored += ignored  # written by this thread only
        if not taken:
            return
        dropped = []
        with self._cond:
            for frames in taken:
                size = _size(frames)
                if peer.queue and peer.bytes + size > self.limit:
                    dropped.append(size)
                    continue
                peer.queue.append(frames)
                peer.bytes += size
            self.dropped += len(dropped)
            queued = peer.bytes
            if len(dropped) < len(taken):
                self._cond.notify_all()
        for size in dropped:
            self._drops.refused(
                "receive backlog full",
                f"receive backlog from {peer.name or '?'} ({peer.endpoint}) full ({queued} bytes "
                f"buffered, {RECEIVE_BACKLOG_KEY} {self.limit}): a message of {size} bytes "
                f"dropped unread and unacknowledged (a gilmsg publisher naming this recipient "
                f"sends it again)")

    def close(self) -> None:
        """Stop the reader thread (waiting up to :data:`JOIN_TIMEOUT_S`), then close every
        socket and the context. A :meth:`receive` waiting meanwhile raises RuntimeError."""
        with self._cond:
            if self._stop:
                return
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():  # pragma: no cover - a poll is bounded by READER_POLL_S
                log.error("gilmsg: the subscription's reader did not stop; sockets left open")
                return
        for watcher in self._watchers.values():
            watcher.close()
        self._watchers = {}
        for sub in self._peers:
            sub.close(0)
        self._ctx.term()
        self._drops.flush()


def _size(frames: list[bytes]) -> int:
    return sum(len(frame) for frame in frames)

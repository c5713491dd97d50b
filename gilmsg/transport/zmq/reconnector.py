"""Re-connecting what libzmq gave up on: :class:`Reconnector` watches a connecting socket's
monitor and connects again an endpoint dropped after a protocol error.
"""

from __future__ import annotations

import logging
import struct

import zmq

log = logging.getLogger("gilmsg.transport.zmq")


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


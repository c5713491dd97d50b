"""gilmsg's socket options and reconnection on the sockets ``fedmsg-hub`` receives on.

moksha's ZeroMQ extension receives through ``txzmq.ZmqSubConnection`` (one connection per
subscribe endpoint, shared by every consumer of the hub), with none of what gilmsg's own
sockets have: ZeroMQ heartbeats, a frame-size limit, a bounded queue, and reconnection of the
endpoints libzmq 4.3.5 gives up on after a protocol error. A :class:`gilmsg.GilmsgConsumer`
calls :func:`install` before it subscribes; from then on the hub's ZeroMQ extension makes its
connections with :class:`GilmsgSubConnection`, which applies
:func:`gilmsg.transport.zmq.tune` (the ``gilmsg.heartbeat_*`` / ``gilmsg.tcp_*`` /
``gilmsg.connect_timeout`` keys), ``MAXMSGSIZE`` (:data:`gilmsg.core.wire.MAX_FRAME_BYTES`) and
``RCVHWM``, and runs a
:class:`gilmsg.transport.zmq.Reconnector` from the Twisted reactor thread (the thread that owns
the socket). Connections a consumer created earlier (one without gilmsg) are given the same
options and re-made at once. A hub without any gilmsg consumer never imports this module.

``RCVHWM`` is the generic :data:`gilmsg.transport.zmq.HWM`: the reactor thread reads each
socket empty as soon as it is readable (``txzmq``), so libzmq's queue holds only what arrives
while the reactor is busy, and :class:`Backlog` bounds what follows. A bound inside libzmq
would do harm: a full queue makes libzmq stop reading the connection and answer no heartbeat,
and libzmq 4.3.5 can abort the process when that connection is then dropped
(``docs/protocol.rst``). In ``moksha.blocking_mode`` only, where ``consume()`` runs in the
reactor thread and no queue follows, ``RCVHWM`` stays ``gilmsg.receive_backlog_bytes`` / 1 MiB
messages: memory stays bounded, but a ``consume()`` slower than the bus for
``gilmsg.heartbeat_timeout`` can meet that abort.

:class:`Backlog` bounds the consumer's own queue (moksha's ``incoming``, unbounded) in bytes.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

import txzmq
import zmq
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer  # type: ignore[import-untyped]

from gilmsg import monitoring
from gilmsg.core import wire
from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.transport.zmq import (
    HWM,
    RECEIVE_BACKLOG_DEFAULT,
    RECEIVE_BACKLOG_KEY,
    LinkOptions,
    Reconnector,
    receive_hwm,
    tune,
)

log = logging.getLogger(__name__)

#: The name of the readiness check (``/ready``) on the hub's receiving connections.
READY_CHECK = "hub-connections"


class HubReconnector(Reconnector):
    """A :class:`~gilmsg.transport.zmq.Reconnector` whose :attr:`connected` holds the endpoints
    with a finished ZMTP handshake (not merely a TCP connection: a stopped or non-ZMTP peer
    accepts those), and that logs each connection lost and made."""

    _EVENTS = Reconnector._EVENTS | zmq.EVENT_HANDSHAKE_SUCCEEDED

    def on_events(self, now: float) -> None:
        """Read every pending monitor event (never blocks)."""
        while True:
            try:
                frames = self.monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            (event,) = struct.unpack_from("=H", frames[0])
            endpoint = frames[1].decode("utf-8", "replace")
            if event == zmq.EVENT_DISCONNECTED:
                self._dropped.setdefault(endpoint, now)
                if endpoint in self.connected:
                    self.connected.discard(endpoint)
                    log.info("gilmsg: hub connection to %s lost", endpoint)
                continue
            self._dropped.pop(endpoint, None)
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED and endpoint not in self.connected:
                self.connected.add(endpoint)
                log.info("gilmsg: hub connected to %s", endpoint)


@implementer(IReadDescriptor)
class _Watch:
    """Runs a :class:`HubReconnector` in the reactor: its monitor socket's FD is a reader."""

    def __init__(self, sock: zmq.Socket, reactor: Any) -> None:
        self.reactor = reactor
        self.reconnector = HubReconnector(sock)
        self._fd = self.reconnector.monitor.get(zmq.FD)
        self._due: Any = None  # the pending reactor.callLater, if any
        reactor.addReader(self)
        self.doRead()  # events queued before the reader existed (the FD is edge-triggered)

    def fileno(self) -> int:
        return int(self._fd)

    def doRead(self) -> None:  # noqa: N802 - Twisted's name
        """Reactor thread: read the monitor's events; schedule the re-connections due."""
        self.reconnector.on_events(time.monotonic())
        self._schedule()

    def _schedule(self) -> None:
        due = self.reconnector.next_due()
        if due is None or (self._due is not None and self._due.active()):
            return
        self._due = self.reactor.callLater(max(0.0, due - time.monotonic()), self._run_due)

    def _run_due(self) -> None:
        self._due = None
        self.reconnector.reconnect_due(time.monotonic())
        self._schedule()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        """The reactor stopped watching the FD (shutdown): nothing to clean up."""

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        return "gilmsg-hub-monitor"


def harden(conn: Any, options: LinkOptions, hwm: int, reactor: Any) -> _Watch:
    """Apply gilmsg's options to ``conn``'s socket (before it connects) and watch it."""
    sock = conn.socket
    tune(sock, options)
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    sock.setsockopt(zmq.RCVHWM, hwm)
    return _Watch(sock, reactor)


class GilmsgSubConnection(txzmq.ZmqSubConnection):
    """``txzmq.ZmqSubConnection`` with gilmsg's socket options and a Reconnector.

    :func:`connection_class` makes a subclass carrying the hub's options; all its instances are
    listed in :attr:`watches` (for the readiness check).
    """

    options: LinkOptions = LinkOptions()
    hwm: int = RECEIVE_BACKLOG_DEFAULT // MAX_FRAME_BYTES
    watches: list[_Watch] = []
    _watch: _Watch | None = None

    def _connectOrBind(self, endpoints: Any) -> None:  # noqa: N802 - txzmq's name
        if self._watch is None:  # the first connect: before it, as tune() requires
            self._watch = harden(self, self.options, self.hwm, self.factory.reactor)
            self.watches.append(self._watch)
        super()._connectOrBind(endpoints)


def connection_class(config: Mapping[str, Any]) -> type[GilmsgSubConnection]:
    """A :class:`GilmsgSubConnection` subclass with ``config``'s options.

    Raises:
        ConfigError: a connection-health or ``gilmsg.receive_backlog_bytes`` value is wrong.
    """
    hwm = receive_hwm(config)  # validates the value
    if not _blocking(config):  # the reactor drains the sockets; Backlog bounds the rest
        hwm = HWM
    attrs = {"options": LinkOptions.from_config(config), "hwm": hwm, "watches": []}
    return type("GilmsgSubConnection", (GilmsgSubConnection,), attrs)


def _blocking(config: Mapping[str, Any]) -> bool:
    """moksha's ``moksha.blocking_mode``: ``consume()`` runs in the reactor thread."""
    value = config.get("moksha.blocking_mode", False)
    return value.strip().lower() in ("true", "yes", "on", "1") if isinstance(value, str) \
        else bool(value)


def install(hub: Any, config: Mapping[str, Any], own: set[str]) -> None:
    """Make ``hub``'s ZeroMQ extension receive through gilmsg's connections (idempotent).

    Call it before the consumer subscribes. ``own``: the endpoints the hub itself binds (its
    consumers' ACK sockets), left out of the readiness check "no endpoint connected".

    Raises:
        ConfigError: a socket option's config value is wrong.
    """
    try:
        from moksha.hub.zeromq import ZMQHubExtension
    except ImportError:  # pragma: no cover - fedmsg-hub runs moksha's ZeroMQ extension
        return
    from moksha.hub.reactor import reactor

    for ext in getattr(hub, "extensions", ()):
        if not isinstance(ext, ZMQHubExtension):
            continue
        cls = ext.connection_cls
        if not (isinstance(cls, type) and issubclass(cls, GilmsgSubConnection)):
            cls = ext.connection_cls = connection_class(config)
            for conn in list(ext.subscriber_factories.values()):
                _upgrade(conn, cls, reactor)
        _OWN.update(own)
        _watch_readiness(cls)


#: Endpoints the hub binds itself (its consumers' ACK sockets): a session with those says
#: nothing about the bus.
_OWN: set[str] = set()


def _upgrade(conn: Any, cls: type[GilmsgSubConnection], reactor: Any) -> None:
    """A connection made before gilmsg's class was installed: options, watch, connect again."""
    watch = harden(conn, cls.options, cls.hwm, reactor)
    cls.watches.append(watch)
    for endpoint in conn.endpoints:
        if endpoint.type == txzmq.ZmqEndpointType.connect:
            conn.socket.disconnect(endpoint.address)
            conn.socket.connect(endpoint.address)


def connected(cls: type[GilmsgSubConnection]) -> set[str]:
    """The endpoints ``cls``'s connections have a ZMTP session with now (the hub's own left
    out), as far as the reactor last read their monitors."""
    out: set[str] = set()
    for watch in list(cls.watches):
        out |= watch.reconnector.connected
    return out - _OWN


def _watch_readiness(cls: type[GilmsgSubConnection]) -> None:
    """The readiness check "no endpoint connected", as gilmsg-tail's (only once monitoring is
    enabled, i.e. with ``gilmsg.monitoring``)."""
    if not monitoring.enabled():
        return
    monitoring.add_check(READY_CHECK, lambda: None if connected(cls) else
                         "no endpoint connected")


class Backlog:
    """The bytes queued for a consumer's workers, bounded by ``gilmsg.receive_backlog_bytes``.

    The reactor thread asks :meth:`refuses` before a message is checked or acknowledged. While
    the queue holds the bound or more, a message that names this consumer among its recipients
    is refused: dropped before anything else happens to it (not acknowledged, not remembered
    as seen), so its publisher, which waits for this consumer's ACK, sends it again (until its
    ``ack_timeout``; an outbox until delivered). Other messages (plain fedmsg, a gilmsg message
    naming nobody or others) are queued regardless: nobody would send them again. A message
    admitted is counted by :meth:`add` and uncounted by :meth:`take` when a worker picks it up;
    the messages that name this consumer therefore find at most the bound plus one message
    queued ahead of them.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        receive_hwm(config)  # validates the value
        from gilmsg.config import registry

        self.limit = int(registry.lookup(config, RECEIVE_BACKLOG_KEY)[1])
        self.queued = 0  #: bytes queued now
        self.dropped = 0  #: messages refused at the bound so far
        self._lock = threading.Lock()

    def refuses(self, message: Mapping[str, Any], common_name: str) -> bool:
        """Reactor thread: True when ``message`` (moksha's wrapper) must be dropped unanswered
        now: the queue is full and the message names ``common_name`` among its recipients."""
        with self._lock:
            if self.queued < self.limit:
                return False
        body = message.get("body")
        if not isinstance(body, dict) or common_name not in (wire.recipients_of(body) or ()):
            return False
        with self._lock:
            self.dropped += 1
            drops = self.dropped
        if drops & (drops - 1) == 0:  # 1st, 2nd, 4th ...: not a line per message
            log.warning("gilmsg: consumer queue full (%d bytes queued, bound %d): %d messages "
                        "dropped unacknowledged so far; their publishers send them again",
                        self.queued, self.limit, drops)
        return True

    def add(self, size: int) -> int:
        """Count ``size`` bytes queued; returns ``size`` (to keep beside the message)."""
        with self._lock:
            self.queued += size
        return size

    def take(self, size: int) -> None:
        """A worker picked up a message of ``size`` bytes."""
        with self._lock:
            self.queued -= size

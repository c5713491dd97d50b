"""ZeroMQ socket options: what gilmsg sets on every socket it owns (:func:`tune`), the
connection-health keys (:class:`LinkOptions`), the size limits of frames and queues, and the
receive backlog bound (:func:`receive_hwm`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from gilmsg.config import registry
from gilmsg.core.wire import MAX_FRAME_BYTES
from gilmsg.errors import ConfigError

#: Reconnect quickly to peers that start late: the bus is local or a LAN.
RECONNECT_IVL_MS = 10
RECONNECT_IVL_MAX_MS = 50
#: Queue depth per peer before ZeroMQ drops (fedmsg cannot set this; we can).
HWM = 100_000
#: How long queued outgoing messages may delay process exit.
EXIT_LINGER_MS = 200


#: Largest frame the publishing socket accepts from its peers (they send only subscriptions,
#: i.e. topic prefixes).
MAX_SUBSCRIPTION_BYTES = 64 << 10
#: Largest ACK frame accepted (a real one is 3-6 KiB: certificate, signature, body), and the
#: ACK listener's queue per peer: what a hostile peer can make it buffer is their product.
MAX_ACK_FRAME_BYTES = 64 << 10
ACK_RCVHWM = 1000


#: fedmsg.d key: the most bytes a receiver (``tail_messages``, ``gilmsg-tail``) buffers per
#: peer, beyond which what arrives is dropped unread (:class:`ZmqSubscription`), and its
#: default (32 MiB). Its sockets keep RCVHWM at :data:`HWM`: a full libzmq queue stops reading
#: the connection, which libzmq 4.3.5 can turn into an abort (docs/protocol.rst).
RECEIVE_BACKLOG_KEY = "gilmsg.receive_backlog_bytes"
RECEIVE_BACKLOG_DEFAULT = 32 << 20


def receive_hwm(config: Mapping[str, Any]) -> int:
    """:data:`RECEIVE_BACKLOG_KEY` in whole frames of MAX_FRAME_BYTES (validated): the RCVHWM
    of a hub's receiving socket in ``moksha.blocking_mode`` only.

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


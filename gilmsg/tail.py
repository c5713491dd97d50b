"""``gilmsg.tail_messages``: fedmsg's tail_messages that acknowledges before it yields."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import zmq

from gilmsg import config as gconfig
from gilmsg import message, transport
from gilmsg.recipient import Recipient

#: How often (ms) the receive loop wakes up with nothing to read, so signals are handled.
POLL_MS = 500


def tail_messages(
    topic: str = "",
    passive: bool = False,
    ack: bool = True,
    show_acks: bool = True,
    **config: Any,
) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """Yield ``(name, endpoint, topic, envelope)`` for every message on the bus, as fedmsg does.

    Connects one SUB socket to every endpoint of the configuration (``passive`` is accepted and
    ignored, as in fedmsg). Before a gilmsg message that names this process's certificate Common
    Name (or names no recipients) is yielded, a signed ACK has been sent. Each gilmsg msg_id is
    yielded once however often it is re-sent; repeats are acknowledged again. With
    ``validate_signatures`` true, messages whose signature does not hold are dropped (and logged).
    ``ack=False`` watches without acknowledging and needs no identity. ``show_acks=False``
    drops ACK traffic unread (fedmsg yields it; with many recipients it is most of the bus).
    Frames over 1 MiB are cut off unread (the connection is re-made at once); the sockets use
    the connection-health keys of :class:`gilmsg.transport.LinkOptions`.

    Raises:
        ConfigError, CertificateError: at the first ``next()``, if ``ack`` is true and this
            process's identity, endpoint or certificate is missing or unusable.
    """
    cfg = gconfig.load(config)
    recipient = Recipient(cfg, ack=ack)
    ack_topic = recipient.ack_topic.encode("utf-8")
    options = transport.LinkOptions.from_config(cfg)
    ctx = zmq.Context()
    poller = zmq.Poller()
    subs: dict[zmq.Socket, tuple[str, str]] = {}
    watchers: dict[zmq.Socket, transport.Reconnector] = {}  # by monitor socket
    try:
        for name, endpoints in (cfg.get("endpoints") or {}).items():
            if name == "relay_inbound":
                continue
            for endpoint in [endpoints] if isinstance(endpoints, str) else endpoints:
                sub = ctx.socket(zmq.SUB)
                transport.tune(sub, options)
                sub.setsockopt(zmq.LINGER, 0)
                # Larger frames are dropped by message.decode anyway: libzmq cuts the sender
                # off before buffering one, and the Reconnector connects to it again.
                sub.setsockopt(zmq.MAXMSGSIZE, message.MAX_FRAME_BYTES)
                sub.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
                watcher = transport.Reconnector(sub)
                watchers[watcher.monitor] = watcher
                poller.register(watcher.monitor, zmq.POLLIN)
                sub.connect(endpoint)
                subs[sub] = (name, endpoint)
                poller.register(sub, zmq.POLLIN)
        while True:
            now = time.monotonic()
            due = [d for d in (w.next_due() for w in watchers.values()) if d is not None]
            timeout = POLL_MS if not due else max(0, min(POLL_MS, int((min(due) - now) * 1000) + 1))
            for sock, _ in poller.poll(timeout):
                if sock in watchers:
                    watchers[sock].on_events(time.monotonic())
                    continue
                name, endpoint = subs[sock]
                frames = sock.recv_multipart()
                if not show_acks and frames[0] == ack_topic:
                    continue
                decoded = message.decode(frames)
                if decoded is None:
                    continue
                msg_topic, envelope = decoded
                if recipient.handle(msg_topic, envelope):
                    yield name, endpoint, msg_topic, envelope
            if due:
                now = time.monotonic()
                for watcher in watchers.values():
                    watcher.reconnect_due(now)
    finally:
        for watcher in watchers.values():
            watcher.close()
        for sub in subs:
            sub.close(0)
        ctx.term()


__all__ = ["tail_messages"]

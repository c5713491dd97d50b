"""A gilmsg-aware bridge between two buses (fedmsg over ZeroMQ and AMQP, or any two transports).

It forwards every message of each bus to the other, byte for byte (signed envelopes are never
changed, so they verify on the other side as on their own), and carries each ACK back to the
bus its message came from, to the publisher that waits for it. It holds no key and signs
nothing: an ACK that crosses it is the recipient's own signed envelope, so a publisher counts
only recipients that really acknowledged. With the recipient down, the publisher times out
naming it, bridge or not. Both buses must trust the same CA (a certificate is what a publisher
checks, whichever bus the ACK came through).

How an ACK finds its way back:

* message from bus A forwarded to B: the bridge is its sender on B, so B's recipients
  acknowledge there as to any publisher (over AMQP, routed to the bridge, the message's
  ``reply_to``; over ZeroMQ, on their own endpoints); the bridge, subscribed to all of B, hears
  the ACK and sends it on A from its own endpoint, which A's publishers listen to as to any
  endpoint of their configuration;
* only ACKs for msg_ids the bridge forwarded are carried, each to the bus the message came
  from; the copy of a forwarded message that comes back (its own AMQP subscription sees it) is
  not forwarded again.

It goes through the transport seam only (:mod:`gilmsg.transport.base`): a publisher and a
subscription per bus. ``gilmsg-bridge`` (:mod:`gilmsg.commands.bridge`) runs one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gilmsg import config as gconfig
from gilmsg import transport as gtransport
from gilmsg.core import wire
from gilmsg.errors import ConfigError, GilmsgError
from gilmsg.transport.base import send_ack

log = logging.getLogger(__name__)

#: msg_ids whose origin the bridge remembers (to route their ACKs and drop their echoes).
REMEMBERED = 100_000
#: How long one receive or poll waits before the threads look at the stop flag, in seconds.
POLL_S = 0.2


@dataclass
class Counts:
    """What the bridge carried, per direction (``"a->b"`` / ``"b->a"``)."""

    messages: dict[str, int] = field(default_factory=lambda: {"a->b": 0, "b->a": 0})
    acks: dict[str, int] = field(default_factory=lambda: {"a->b": 0, "b->a": 0})
    echoes: int = 0


class _Side:
    """One bus: its config, its transport, the bridge's publisher and subscription there."""

    def __init__(self, label: str, config: Mapping[str, Any]) -> None:
        self.label = label
        self.config = config
        self.transport = gtransport.module_for(config)
        self.ack_topic = gconfig.ack_topic(config)
        self.ack_topic_bytes = self.ack_topic.encode("utf-8")
        #: Single ACKs and version 3 batches, and version 4 batches.
        self.ack_topics_bytes = {t.encode("utf-8") for t in gconfig.ack_topics(config)}
        self.publishing = gconfig.publishing(config)
        self.pub: Any = None
        self.sub: Any = None
        self.ready = threading.Event()
        self.error: BaseException | None = None


class Bridge:
    """Forwards messages and ACKs between the buses of config ``a`` and config ``b``.

    Each config names the bridge (``name``): its ``endpoints`` entry is where the bridge
    publishes on that bus (a bind address for ZeroMQ, the broker URL for AMQP). No
    ``certnames`` entry is needed: the bridge signs nothing.

    Raises (from :meth:`start`):
        ConfigError: an endpoint cannot be bound or connected, a transport is unknown.
    """

    def __init__(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
        self.a = _Side("a", a)
        self.b = _Side("b", b)
        if self.a.ack_topic != self.b.ack_topic:  # the ACK's signed topic must be the origin's
            raise ConfigError(f"the two buses must share topic_prefix and environment: ACKs "
                              f"travel on {self.a.ack_topic!r} and {self.b.ack_topic!r}")
        self.counts = Counts()
        self._lock = threading.Lock()
        #: msg_id -> the side it came from.
        self._origin: OrderedDict[str, _Side] = OrderedDict()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def other(self, side: _Side) -> _Side:
        """The bus ``side`` forwards to."""
        return self.b if side is self.a else self.a

    def start(self, timeout: float = 30.0) -> None:
        """Open both publishers, then both subscriptions (each in its own thread); return once
        all are up, or raise what stopped one of them (everything is closed again then)."""
        for step in (self._run_publisher, self._run_subscription):
            events = []
            for side in (self.a, self.b):
                side.ready.clear()
                events.append(side)
                self._spawn(step, side)
            for side in events:
                if not side.ready.wait(timeout):
                    self.stop()
                    raise GilmsgError(f"bridge: bus {side.label} not up within {timeout}s")
                if side.error is not None:
                    self.stop()
                    raise side.error

    def _spawn(self, target: Any, side: _Side) -> None:
        thread = threading.Thread(target=target, args=(side,), daemon=True,
                                  name=f"gilmsg-bridge-{target.__name__}-{side.label}")
        self._threads.append(thread)
        thread.start()

    def _run_publisher(self, side: _Side) -> None:
        """Own the side's publisher: transports want one thread for poll() and close()."""
        try:
            side.pub = side.transport.open_publisher(side.publishing, side.config)
        except BaseException as exc:
            side.error = exc
            side.ready.set()
            return
        side.ready.set()
        try:
            while not self._stop.is_set():
                side.pub.poll(POLL_S, False)  # keeps the connection serviced
        except Exception:
            log.exception("bridge: publisher thread of bus %s failed", side.label)
            self._stop.set()
        finally:
            side.pub.close()

    def _run_subscription(self, side: _Side) -> None:
        """Hear everything on the side's bus (ACKs included) but what the bridge sends there."""
        endpoints = [(n, e) for n, e in gconfig.named_endpoints(side.config)
                     + gconfig.named_ack_endpoints(side.config) if n != side.publishing.name]
        try:
            side.sub = side.transport.subscribe(endpoints, "", side.config)
        except BaseException as exc:
            side.error = exc
            side.ready.set()
            return
        side.ready.set()
        try:
            while not self._stop.is_set():
                for _name, _endpoint, frames in side.sub.receive(POLL_S):
                    if bytes(frames[0]) in side.ack_topics_bytes:
                        self._ack_from(side, frames)
                    else:
                        self._message_from(side, frames)
        except Exception:
            log.exception("bridge: subscription thread of bus %s failed", side.label)
            self._stop.set()
        finally:
            side.sub.close()

    def _message_from(self, side: _Side, frames: list[bytes]) -> None:
        decoded = wire.decode(frames)
        if decoded is None:
            return
        msg_id = decoded[1]["msg_id"]
        with self._lock:
            origin = self._origin.get(msg_id)
            if origin is not None and origin is not side:  # our own copy, heard coming back
                self.counts.echoes += 1
                return
            self._origin[msg_id] = side
            self._origin.move_to_end(msg_id)
            while len(self._origin) > REMEMBERED:
                self._origin.popitem(last=False)
            self.counts.messages[f"{side.label}->{self.other(side).label}"] += 1
        self._send(self.other(side), frames)

    def _ack_from(self, side: _Side, frames: list[bytes]) -> None:
        """An ACK heard on ``side``: carried only to the bus its message came from."""
        decoded = wire.decode(frames)
        acks = wire.parse_acks(decoded[1]) if decoded is not None else None
        if not acks:
            return
        with self._lock:  # a batched ACK goes to each bus one of its messages came from
            origins = [o for o in {id(o): o for o in (self._origin.get(a.msg_id)
                                                      for a in acks)}.values()
                       if o is not None and o is not side]  # else not carried here
            for origin in origins:
                self.counts.acks[f"{side.label}->{origin.label}"] += 1
        for origin in origins:
            self._send(origin, [bytes(frames[0]), bytes(frames[1])], ack=True)

    def _send(self, side: _Side, frames: list[bytes], ack: bool = False) -> None:
        try:  # an ACK leaves where the bridge's ACKs are heard (gilmsg.ack_endpoints)
            send_ack(side.pub, frames) if ack else side.pub.send(frames)
        except GilmsgError as exc:
            log.warning("bridge: cannot send on bus %s: %s", side.label, exc)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a thread failed or :meth:`stop` was called; False after ``timeout``."""
        return self._stop.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop forwarding, close everything (bounded by ``timeout`` in all)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

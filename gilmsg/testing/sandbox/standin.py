"""The stand-in process: a real recipient acknowledging as one identity, as its spec says.

Run as ``python -m gilmsg.testing.sandbox`` by :class:`gilmsg.testing.sandbox.Sandbox`; it
prints one JSON event per line on stdout.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gilmsg import config as gconfig
from gilmsg.errors import ConfigError, GilmsgError, InvalidInput
from gilmsg.testing.sandbox.spec import StandInSpec, parse_standin

#: Fields never copied into stand-in events (long, and useless to a reader).
CREDENTIALS = ("signature", "certificate")


class _Decisions:
    """What a stand-in does with each msg_id: decided once at random, then kept (bounded)."""

    def __init__(self, spec: StandInSpec, seed: int | None, capacity: int = 10_000) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.capacity = capacity
        self.known: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, msg_id: str, now: float) -> tuple[str, float, bool]:
        """``(action, due time of its ACK, first time seen)``; action is ack, reject or drop."""
        if msg_id in self.known:
            action, due = self.known[msg_id]
            return action, due, False
        draw = self.rng.random()
        action = ("drop" if draw < self.spec.fail
                  else "reject" if draw < self.spec.fail + self.spec.reject else "ack")
        self.known[msg_id] = (action, now + self.spec.delay)
        if len(self.known) > self.capacity:
            self.known.popitem(last=False)
        return action, now + self.spec.delay, True


def run_standin(config: Mapping[str, Any], spec: StandInSpec,
                emit: Callable[[dict[str, Any]], None], *, seed: int | None = None,
                keep_running: Callable[[], bool] = lambda: True) -> None:
    """Receive and acknowledge as ``spec.name`` until ``keep_running()`` is false.

    Every copy of a message addressed to this identity (or to nobody) is answered as the spec
    says, like a real recipient answers every re-send; ``emit`` gets one ``received`` event per
    message (its first copy) and one ``ready`` event once the sockets are set up.

    Raises:
        ConfigError, CertificateError: the identity, endpoint or certificate is unusable.
    """
    from gilmsg import transport
    from gilmsg.core import wire as message
    from gilmsg.recipient import Recipient

    cfg = dict(config)
    cfg["name"] = spec.name
    recipient = Recipient(cfg, ack=True)
    me = recipient.common_name or spec.name
    decisions = _Decisions(spec, seed)
    due: list[tuple[float, int, str, dict[str, Any]]] = []  # ACKs waiting for their delay
    counter = 0
    endpoints = gconfig.subscribe_endpoints(cfg, skip=spec.name)
    sub = transport.module_for(cfg).subscribe([("", e) for e in endpoints], "", cfg)
    from gilmsg import monitoring

    monitoring.watch_subscription(sub)
    monitoring.set_consuming(True)
    try:
        own = (cfg.get("endpoints") or {}).get(spec.name)
        emit({"event": "ready", "name": me, "endpoint": own, "subscribed": endpoints})
        while keep_running():
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, _, action, envelope = heapq.heappop(due)
                _answer(recipient, action, envelope)
            timeout = 0.2 if not due else max(0.001, min(0.2, due[0][0] - now))
            for _name, _endpoint, frames in sub.receive(timeout):
                decoded = message.decode(frames)
                now = time.monotonic()  # the delay counts from the arrival, not from the poll
                if decoded is None:
                    continue
                topic, envelope = decoded
                if recipient.is_ack(topic):
                    continue
                msg_id = envelope.get("msg_id")
                if not recipient.check(envelope):  # Recipient logs the reason on stderr
                    emit({"event": "invalid", "msg_id": msg_id, "topic": topic})
                    continue
                addressed = message.is_gilmsg(envelope) and message.wants_ack_from(envelope, me)
                if not addressed or not isinstance(msg_id, str):
                    if isinstance(msg_id, str) and decisions.get(msg_id, now)[2]:
                        emit(_received(envelope, topic, "ignore", 0.0))
                    continue
                action, when, first = decisions.get(msg_id, now)
                monitoring.received(duplicate=not first)
                if first:
                    emit(_received(envelope, topic, action, spec.delay))
                if action == "drop":
                    continue
                if when <= now:
                    _answer(recipient, action, envelope)
                elif first:
                    counter += 1
                    heapq.heappush(due, (when, counter, action, dict(envelope)))
                # later copies before the delay is over are answered when it is
    finally:
        sub.close()


def _answer(recipient: Any, action: str, envelope: Mapping[str, Any]) -> None:
    if action == "reject":
        recipient.acknowledge(envelope, status="rejected",
                              reason="the sandbox stand-in rejects a share of its messages")
    else:
        recipient.acknowledge(envelope)


def _received(envelope: Mapping[str, Any], topic: str, action: str, delay: float
              ) -> dict[str, Any]:
    shown = {k: v for k, v in envelope.items() if k not in CREDENTIALS}
    return {"event": "received", "msg_id": envelope.get("msg_id"), "topic": topic,
            "action": action, "delay": delay, "envelope": shown}


def standin_main(argv: Sequence[str] | None = None) -> int:
    """``python -m gilmsg.testing.sandbox --config-filename F --spec NAME:OPTS [--parent PID]
    [--seed N]``.

    Exits 0 when stopped (SIGTERM/SIGINT, or its parent process went away), 4 for a
    configuration or certificate problem (one line on stderr), 2 for bad arguments.
    """
    import argparse
    import logging
    import signal

    parser = argparse.ArgumentParser(prog="gilmsg-standin")
    parser.add_argument("--config-filename", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--monitoring", default=None, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="standin: %(levelname)s: %(message)s")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def keep_running() -> bool:
        if args.parent is not None and os.getppid() != args.parent:
            return False  # the sandbox is gone: do not outlive it
        return not stop.is_set()

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
        sys.stdout.flush()

    try:
        spec = parse_standin(args.spec)
        cfg = gconfig.load(filename=args.config_filename)
        if args.monitoring:  # /live, /ready, /metrics of this stand-in (bound, or exit 4)
            from gilmsg import monitoring
            from gilmsg.monitoring.server import serve

            serve(args.monitoring)
            monitoring.watch_trust(cfg)
        run_standin(cfg, spec, emit, seed=args.seed, keep_running=keep_running)
    except (InvalidInput, ConfigError) as exc:
        print(f"gilmsg-standin: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidInput) else 4
    except GilmsgError as exc:
        print(f"gilmsg-standin: error: {exc}", file=sys.stderr)
        return 5
    return 0

"""A message's receipt ACK leaves before its settlement, whichever thread sends which.

In ``fedmsg-hub`` the reactor thread sends the batched receipt ACKs (``Recipient.tick``) while a
worker thread settles the message it consumed (``Recipient.finished``). Here the two threads
are reproduced in-process around a real :class:`~gilmsg.recipient.Recipient`, its real link and
real signatures, on 127.0.0.1; the tick is held inside its signature (a gate around the real
signer) so that the worker settles while the receipt is on its way, and the order the ACKs
reach a subscriber is read.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import zmq

from gilmsg.core import wire
from gilmsg.core.receiving import Deliver
from gilmsg.crypto import signing
from gilmsg.recipient import Recipient
from gilmsg.testing import DEFAULT_WAIT


class GatedSigner:
    """The recipient's real signer; its first signature waits until the test opens the gate."""

    def __init__(self, inner: signing.Signer) -> None:
        self.inner = inner
        self.common_name = inner.common_name
        self.entered = threading.Event()
        self.gate = threading.Event()
        self._first = True

    def sign(self, envelope: dict[str, Any], hash_name: str = "sha1") -> dict[str, Any]:
        if self._first:
            self._first = False
            self.entered.set()
            assert self.gate.wait(DEFAULT_WAIT)
        return self.inner.sign(envelope, hash_name)


class WatchedLock:
    """A lock that sets ``moved`` when a thread finds it taken and has to wait for it."""

    def __init__(self, moved: threading.Event) -> None:
        self._lock = threading.Lock()
        self.moved = moved
        self.waited = False

    def __enter__(self) -> bool:
        if not self._lock.acquire(blocking=False):
            self.waited = True
            self.moved.set()
            self._lock.acquire()
        return True

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_a_settlement_waits_for_the_tick_that_carries_its_receipt(make_bus):
    bus = make_bus(["pub", "r1"])
    recipient = Recipient(bus.config_for("r1"), ack_mode="processed")
    moved = threading.Event()  # the worker waits for the lock, or (out of order) is done
    lock = WatchedLock(moved)
    recipient._lock = lock  # type: ignore[assignment]
    gated = GatedSigner(recipient._signer)  # type: ignore[arg-type]
    recipient._signer = gated  # type: ignore[assignment]
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, recipient.ack_topic.encode())
    sub.connect(recipient.address)
    threads: list[threading.Thread] = []
    try:
        assert recipient._link is not None
        assert recipient._link.wait_subscriber(recipient.ack_topic, DEFAULT_WAIT)
        topic = f"{bus.config['topic_prefix']}.{bus.config['environment']}.test.t"
        envelope = signing.signer_for(bus.config_for("pub")).sign(
            wire.new_envelope(topic, {"n": 1}, 1, ["r1"]))
        delivered = recipient.receive(topic, envelope, batch=True)
        assert isinstance(delivered, Deliver) and recipient.batched == 1

        def settle() -> None:
            recipient.finished(delivered.handed)
            moved.set()

        threads.append(threading.Thread(target=recipient.tick, daemon=True))
        threads[0].start()
        assert gated.entered.wait(DEFAULT_WAIT)  # the tick took the receipt, is signing it
        threads.append(threading.Thread(target=settle, daemon=True))
        threads[1].start()
        assert moved.wait(DEFAULT_WAIT)
        gated.gate.set()
        for thread in threads:
            thread.join(DEFAULT_WAIT)
            assert not thread.is_alive()
        statuses = []
        for _ in range(2):
            assert sub.poll(DEFAULT_WAIT * 1000)
            ack = json.loads(sub.recv_multipart()[1])
            assert ack["msg"]["ack_msg_id"] == envelope["msg_id"]
            statuses.append(ack["msg"]["status"])
        assert statuses == ["received", "processed"]
        assert lock.waited  # the worker's decision waited for the tick's send
    finally:
        gated.gate.set()
        for thread in threads:
            thread.join(DEFAULT_WAIT)
        sub.close(0)
        ctx.term()

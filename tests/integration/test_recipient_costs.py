"""What repeat copies and other recipients' ACKs cost a recipient: real sockets, certificates.

* a repeat copy is answered with the ACK bytes signed the first time, and its signature is
  checked once per digest;
* ACKs on the bus that the application does not ask to see are dropped on their topic frame,
  with no signature check.
"""

from __future__ import annotations

import json
import threading
import time

import zmq

from gilmsg.core import wire
from gilmsg.crypto import signing
from gilmsg.recipient import Recipient
from gilmsg.tail import tail_messages
from gilmsg.testing import DEFAULT_WAIT


class Counting:
    """Wraps a Validator, counting the signatures it checks."""

    def __init__(self, inner: signing.Validator) -> None:
        self.inner = inner
        self.calls = 0
        self.lock = threading.Lock()

    def validate(self, envelope):
        with self.lock:
            self.calls += 1
        return self.inner.validate(envelope)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def signed_message(bus, sender: str, recipients, n: int = 1) -> dict:
    signer = signing.signer_for(bus.config_for(sender))
    topic = f"{bus.config['topic_prefix']}.{bus.config['environment']}.test.t"
    return signer.sign(wire.new_envelope(topic, {"n": n}, n, recipients))


def ack_listener(ctx: zmq.Context, recipient: Recipient) -> zmq.Socket:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, recipient.ack_topic.encode())
    sub.connect(recipient.address)
    return sub


def test_a_repeat_copy_is_answered_with_the_cached_ack_and_checked_once(make_bus):
    bus = make_bus(["pub", "r1"])
    recipient = Recipient(bus.config_for("r1", validate_signatures=True))
    counting = Counting(recipient._validator)
    recipient._validator = counting
    envelope = signed_message(bus, "pub", ["r1"])
    ctx = zmq.Context()
    sub = ack_listener(ctx, recipient)
    try:
        first = None
        deadline = time.monotonic() + DEFAULT_WAIT
        copies = 0
        while first is None:  # copies until the SUB is connected (slow joiner)
            assert time.monotonic() < deadline, "no ACK ever heard"
            delivered = recipient.handle(envelope["topic"], envelope)
            assert delivered == (copies == 0)  # handed over the first time only
            copies += 1
            if sub.poll(100):
                first = sub.recv_multipart()
        for _ in range(3):
            assert recipient.handle(envelope["topic"], dict(envelope)) is False
            assert sub.poll(DEFAULT_WAIT * 1000)
            again = sub.recv_multipart()
            assert again == first  # the very bytes: same signature, no new RSA operation
        ack = json.loads(first[1])
        assert ack["msg"]["ack_msg_id"] == envelope["msg_id"]
        assert counting.inner.validate(ack).ok
        assert counting.calls == 1  # the copy's signature was checked once for its digest
        # Other content under the same msg_id is another digest: checked and signed anew.
        other = signed_message(bus, "pub", ["r1"], n=2)
        other["msg_id"] = envelope["msg_id"]
        other = signing.signer_for(bus.config_for("pub")).sign(
            {k: v for k, v in other.items() if k not in wire.CREDENTIAL_FIELDS})
        recipient.handle(other["topic"], other)
        assert counting.calls == 2
        assert sub.poll(DEFAULT_WAIT * 1000)
        assert sub.recv_multipart() != first
    finally:
        sub.close(0)
        ctx.term()


def test_a_forged_repeat_of_a_valid_copy_still_carries_the_signed_content(make_bus):
    """A copy whose credentials were swapped but whose content was validly signed (same
    digest) is the authentic content: it is answered from the cache and not delivered again."""
    bus = make_bus(["pub", "r1"])
    recipient = Recipient(bus.config_for("r1", validate_signatures=True))
    envelope = signed_message(bus, "pub", ["r1"])
    assert recipient.handle(envelope["topic"], envelope) is True
    tampered = {**envelope, "signature": "AAAA"}
    assert recipient.handle(tampered["topic"], tampered) is False
    forged = {**envelope, "msg": {"n": 99}, "signature": "AAAA"}  # other content: checked
    assert recipient.handle(forged["topic"], forged) is False


def test_acks_not_shown_are_dropped_on_the_topic_without_a_signature_check(make_bus):
    bus = make_bus(["pub", "r1", "r2"])
    r2 = Recipient(bus.config_for("r2"))
    counting: list[Counting] = []
    original = Recipient.__init__

    def spying_init(self, *args, **kwargs):  # the tail's own Recipient, created at next()
        original(self, *args, **kwargs)
        if self._validator is not None:
            self._validator = Counting(self._validator)
            counting.append(self._validator)

    Recipient.__init__ = spying_init  # type: ignore[method-assign]
    feed = tail_messages(show_acks=False, **bus.config_for("r1", validate_signatures=True))
    got: list[dict] = []
    stop = threading.Event()

    def read() -> None:
        for _name, _endpoint, _topic, envelope in feed:
            got.append(envelope)
            if envelope.get("msg") == {"last": True} or stop.is_set():
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + DEFAULT_WAIT
        while not counting:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        Recipient.__init__ = original  # type: ignore[method-assign]
        # r2 acknowledges messages that are not r1's business (its ACKs reach r1's tail).
        for n in range(20):
            r2.handle("t", signed_message(bus, "pub", ["r2"], n))
        signer = signing.signer_for(bus.config_for("r2"))
        last = signer.sign(wire.new_envelope(
            f"{bus.config['topic_prefix']}.{bus.config['environment']}.test.last",
            {"last": True}, 99))
        while reader.is_alive():  # until the tail is connected to r2 and got the marker
            assert time.monotonic() < deadline, "the tail never heard r2"
            r2.handle("t", signed_message(bus, "pub", ["r2"], 1000))  # more ACKs
            r2._link.send(wire.encode(last["topic"], last))
            reader.join(0.1)
        assert got and all(not e["topic"].endswith(".gilmsg.ack") for e in got)
        # Only the plain messages were checked: no ACK reached a JSON parse or a validator.
        assert counting[0].calls == len(got) >= 1
    finally:
        Recipient.__init__ = original  # type: ignore[method-assign]
        stop.set()
        feed.close()

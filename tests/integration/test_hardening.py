"""Hostile bus input: ACK floods must not grow a publisher's memory, bad frames not cost a peer.

Real sockets and real certificates; the hostile peer is a raw ZeroMQ socket in the test process
bound at a service's configured endpoint, as anyone on the bus could do.
"""

from __future__ import annotations

import base64
import gc
import os
import sys
import threading
import time
import tracemalloc

import pytest
import zmq

import gilmsg
from gilmsg import config as gconfig
from gilmsg.core import wire
from gilmsg.crypto import signing
from gilmsg.errors import ConfigError
from gilmsg.testing import DEFAULT_WAIT


def _wait_ack_subscription(xpub: zmq.Socket, ack_topic: bytes, timeout: float = DEFAULT_WAIT):
    """Block until a peer subscribed to the ACK topic on our XPUB (a publisher's ACK listener)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not xpub.poll(remaining * 1000):
            raise AssertionError("no ACK listener subscribed to the hostile endpoint")
        if xpub.recv() == b"\x01" + ack_topic:
            return


def _publish_in_thread(bus, outcome: dict, seen: threading.Event, timeout: float = 60.0):
    def hook(envelope):
        outcome["envelope"] = envelope
        seen.set()

    def run():
        try:
            outcome["report"] = gilmsg.publish(
                topic="t", msg={"k": "v"}, modname="test", recipients=["r1"],
                ack_timeout=timeout, pre_fire_hook=hook, **bus.config_for("pub"))
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_ack_flood_with_huge_certificates_leaves_the_publisher_memory_bounded(make_bus, caplog):
    """4,000 ACKs for the msg_id being waited for, each with its own certificate field.

    1,000 fields are 40 KiB (refused unread: over MAX_CERTIFICATE_FIELD; the frames stay under
    the ACK listener's 64 KiB frame limit) and 3,000 are 15 KiB of base64 garbage (under the cap:
    parsed once, cached, evicted by the byte bound). Before these bounds the cache kept them all
    (about 85 MB). Bound stated here: the publisher's Python
    memory grows by at most CERT_CACHE_BYTES + 4 MiB, and the cache stays within its bounds.
    """
    # Each ignored ACK is logged at WARNING; pytest would keep 4,000 records in memory.
    caplog.set_level("ERROR", logger="gilmsg.transport")
    bus = make_bus(["pub", "r1", "mallory"])
    ack_topic = gconfig.ack_topic(bus.config)
    ctx = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.XPUB_VERBOSE, 1)
    xpub.setsockopt(zmq.SNDHWM, 0)  # no silent drops on our side: every ACK reaches the victim
    xpub.bind(bus.config["endpoints"]["mallory"][0])
    validator = signing.validator_for(bus.config_for("pub"))
    validator.forget_certificates()
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        outcome: dict = {}
        seen = threading.Event()
        thread = _publish_in_thread(bus, outcome, seen)
        assert seen.wait(DEFAULT_WAIT), outcome
        _wait_ack_subscription(xpub, ack_topic.encode())
        envelope = outcome["envelope"]
        body = wire.ack_body(envelope)
        rng = os.urandom
        for i in range(4000):
            size = 30 * 1024 if i % 4 == 0 else 11 * 1024  # base64: 40 KiB / 15 KiB
            forged = {"topic": ack_topic, "msg": body, "msg_id": f"2026-flood-{i}", "i": i,
                      "timestamp": 0, "username": "mallory", "crypto": "x509",
                      "signature": "AAAA\n",
                      "certificate": base64.encodebytes(rng(size)).decode("ascii")}
            xpub.send_multipart(wire.encode(ack_topic, forged))
        # Then a genuine ACK on the same connection: once it counts, the flood was processed.
        r1 = signing.Signer(str(bus.ssldir / "r1.key"), str(bus.ssldir / "r1.crt"))
        genuine = r1.sign(wire.new_envelope(ack_topic, body, 1))
        xpub.send_multipart(wire.encode(ack_topic, genuine))
        thread.join(60.0)
        assert not thread.is_alive()
        assert set(outcome["report"].acks) == {"r1"}, outcome
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
        xpub.close(0)
        ctx.term()
    entries, cached = validator.cache_size
    assert entries <= signing.CERT_CACHE_ENTRIES and cached <= signing.CERT_CACHE_BYTES
    assert grown <= signing.CERT_CACHE_BYTES + (4 << 20), (
        f"publisher memory grew {grown} bytes; cache {entries} entries, {cached} bytes")


def test_an_oversize_certificate_field_is_refused_before_parsing(make_bus):
    bus = make_bus(["pub", "r1"])
    r1 = signing.Signer(str(bus.ssldir / "r1.key"), str(bus.ssldir / "r1.crt"))
    signed = r1.sign(wire.new_envelope("org.gilmsg.test.x", {}, 1))
    validator = signing.Validator(bus.config["ca_cert_location"], bus.config["crl_location"])
    assert validator.validate(signed).ok  # control: the genuine one holds
    # The genuine certificate, padded with newlines (which base64 decoding ignores) past the cap.
    padded = {**signed, "certificate": signed["certificate"] + "\n" * signing.MAX_CERTIFICATE_FIELD}
    verdict = validator.validate(padded)
    assert not verdict.ok and "longer than" in verdict.reason
    assert validator.cache_size[0] == 1  # only the genuine one was ever parsed
    long_sig = {**signed, "signature": signed["signature"] + "\n" * signing.MAX_SIGNATURE_FIELD}
    assert "longer than" in validator.validate(long_sig).reason


IMPOSTOR = r"""
import sys, zmq
endpoint, topic, size = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
ctx = zmq.Context()
pub = ctx.socket(zmq.XPUB)
pub.setsockopt(zmq.XPUB_VERBOSE, 1)
pub.bind(endpoint)
print("bound", flush=True)
pub.setsockopt(zmq.RCVTIMEO, 20000)
while True:  # until the awaited subscription ("*": any) arrives
    notice = pub.recv()
    if notice[:1] == b"\x01" and (topic == b"*" or notice[1:] == topic):
        break
pub.send_multipart([notice[1:], b"x" * size])
pub.close(linger=5000)  # until the frame is out
ctx.term()
print("sent", flush=True)
"""


def test_one_oversize_frame_does_not_silence_a_recipient_for_good(make_bus):
    """The sequence of issue 8: r1 down, an impostor binds r1's endpoint and sends 1.1 MiB on the
    ACK topic, then the real r1 comes back: a publish to it gets a report, not a Timeout.

    With libzmq 4.3.5, MAXMSGSIZE made the ACK listener drop that endpoint for good.
    """
    bus = make_bus(["pub", "r1"])
    ack_topic = gconfig.ack_topic(bus.config)
    r1 = bus.spawn_tail("r1")
    first = gilmsg.publish(topic="t", msg={}, modname="test", recipients=["r1"], ack_timeout=30,
                           **bus.config_for("pub"))
    assert set(first.acks) == {"r1"}
    r1.stop()
    impostor = bus.spawn([sys.executable, "-c", IMPOSTOR, bus.config["endpoints"]["r1"][0],
                          ack_topic, str(wire.MAX_FRAME_BYTES + (100 << 10))])
    assert impostor.next_line() == "bound"
    assert impostor.next_line() == "sent", impostor.stderr
    assert impostor.wait() == 0
    bus.spawn_tail("r1")
    report = gilmsg.publish(topic="t", msg={}, modname="test", recipients=["r1"],
                            ack_timeout=30, **bus.config_for("pub"))
    assert set(report.acks) == {"r1"}


def test_a_tail_hears_a_publisher_again_after_an_oversize_frame(make_bus):
    """The same on a recipient's receive path: an impostor on the publisher's endpoint sends
    1.1 MiB to gilmsg-tail (whose SUB sockets cut off larger frames); once the real publisher is
    back, the tail receives and acknowledges its messages."""
    bus = make_bus(["pub", "r1"])
    r1 = bus.spawn_tail("r1")
    impostor = bus.spawn([sys.executable, "-c", IMPOSTOR, bus.config["endpoints"]["pub"][0],
                          "", str(wire.MAX_FRAME_BYTES + (100 << 10))])
    assert impostor.next_line() == "bound"
    assert impostor.next_line() == "sent", impostor.stderr
    assert impostor.wait() == 0
    report = gilmsg.publish(topic="t", msg={"n": 1}, modname="test", recipients=["r1"],
                            ack_timeout=30, **bus.config_for("pub"))
    assert set(report.acks) == {"r1"}
    line = r1.wait_for(lambda line: report.msg_id in line)
    assert '"n": 1' in line


def test_connection_health_options_come_from_the_config_and_reach_the_sockets():
    from gilmsg.transport import zmq as transport

    assert transport.LinkOptions.from_config({}) == transport.LinkOptions()
    options = transport.LinkOptions.from_config({"gilmsg_heartbeat_ivl": 0.5,
                                                 "gilmsg_tcp_user_timeout": 0})
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.SUB)
        transport.tune(sock, options)
        assert sock.getsockopt(zmq.HEARTBEAT_IVL) == 500
        assert sock.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 3000
        assert sock.getsockopt(zmq.CONNECT_TIMEOUT) == 2000
        assert sock.getsockopt(zmq.TCP_MAXRT) == 0  # switched off
        assert sock.getsockopt(zmq.TCP_KEEPALIVE) == 1
    finally:  # closes every socket first, at once: a failed assert must not hang in term()
        ctx.destroy(linger=0)


@pytest.mark.parametrize("value", [-1, "3", True, 1e9])
def test_a_bad_connection_health_value_is_a_config_error(make_bus, value):
    bus = make_bus(["pub", "r1"])
    with pytest.raises(ConfigError, match="gilmsg_heartbeat_timeout"):
        gilmsg.publish(topic="t", msg={}, recipients=["r1"], ack_timeout=1,
                       **bus.config_for("pub", gilmsg_heartbeat_timeout=value))


def test_a_hub_hears_a_publisher_again_after_an_oversize_frame(make_bus):
    """The hub's receiving sockets carry gilmsg's MAXMSGSIZE (gilmsg.consumers.hub_sockets): the
    frame is cut off, libzmq gives the endpoint up and the hub's Reconnector connects it again,
    so the consumer still acknowledges the real publisher afterwards."""
    from tests.integration.test_hub import start_hub

    bus = make_bus(["pub", "hub"])
    impostor = bus.spawn([sys.executable, "-c", IMPOSTOR, bus.config["endpoints"]["pub"][0],
                          "*", str(wire.MAX_FRAME_BYTES + (100 << 10))])
    assert impostor.next_line() == "bound"
    start_hub(bus)
    assert impostor.next_line() == "sent", impostor.stderr
    assert impostor.wait() == 0
    report = gilmsg.publish(topic="t", msg={}, modname="test", recipients=["hub"],
                            ack_timeout=30, **bus.config_for("pub"))
    assert set(report.acks) == {"hub"}

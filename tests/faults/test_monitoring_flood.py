"""``/metrics`` under a 10,000-frame hostile flood stays bounded in size and label count.

A raw XPUB socket bound at a configured endpoint ("raw") sprays, in turn: ACKs for a pending
publish with forged certificates and random reasons; ACKs validly signed by "raw" (not a
recipient) with random reasons; gilmsg messages with forged signatures to random recipients on
random topics; validly signed messages to random recipients on random topics; garbage frames.
The publishing side is this process (``gilmsg.monitoring.enable()``), the receiving side a real
``gilmsg-tail --monitoring``. Every forgery must be counted (so the flood was heard) under a
fixed label value, and neither exposition may grow with the flood.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
import uuid

import pytest
import zmq
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gilmsg import config as gconfig
from gilmsg import monitoring
from gilmsg.core import wire
from gilmsg.crypto import signing
from gilmsg.publish import publish_async
from gilmsg.testing.bus import free_port

pytestmark = pytest.mark.faults

FRAMES = 10_000
#: Bounds on the waits for the flood to be heard (it is processed in a few seconds).
HEAR_TIMEOUT = 120.0
#: What a bounded exposition may reach, whatever the flood (measured: see the test's output).
MAX_BYTES = 32 << 10
MAX_SAMPLES = 200

ALLOWED = {
    "status": set(monitoring.ACK_STATUSES) | {monitoring.OTHER},
    "reason": set(monitoring.REFUSAL_REASONS) | set(monitoring.ACK_REFUSAL_REASONS)
    | {monitoring.OTHER},
    "outcome": set(monitoring.DELIVERY_OUTCOMES) | {monitoring.OTHER},
    "recipient": {"r1", "absent", monitoring.OTHER},
    "identity": {"r1", "pub"},
    "le": None,  # histogram buckets: fixed by the code
}


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def assert_bounded(text: str, label: str, named: set[str] = frozenset()) -> None:
    """Bounded size and samples; every label value from a fixed set, recipients from those
    this process named (``named``: earlier tests of the same process named some too)."""
    got = parse(text)
    print(f"{label}: {len(text.encode())} bytes, {len(got)} samples")
    assert len(text.encode()) < MAX_BYTES and len(got) < MAX_SAMPLES, label
    for _name, labels in got:
        for key, value in labels:
            assert key in ALLOWED, (label, key, value)
            allowed = ALLOWED[key] if key != "recipient" else ALLOWED[key] | named
            assert allowed is None or value in allowed, (label, key, value)


def fake_credentials(envelope: dict) -> dict:
    return {**envelope, "crypto": "x509",
            "signature": base64.b64encode(os.urandom(256)).decode(),
            "certificate": base64.b64encode(os.urandom(900)).decode()}


def metrics_of(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_metrics_stay_bounded_under_a_hostile_flood(make_bus):
    registry = monitoring.enable()
    bus = make_bus(["pub", "r1", "raw"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tail = bus.spawn_tail("r1", "--monitoring", f"127.0.0.1:{port}")
    raw_cfg = bus.config_for("raw")
    signer = signing.signer_for(raw_cfg)
    ack_topic = gconfig.ack_topic(raw_cfg)
    ctx = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.SNDHWM, 0)
    xpub.bind(raw_cfg["endpoints"]["raw"][0])
    before = parse(generate_latest(registry).decode())
    pending = publish_async(topic="flood", msg={}, modname="floodtest",
                            recipients=["r1", "absent"], ack_timeout=HEAR_TIMEOUT,
                            **bus.config_for("pub"))
    try:
        heard = set()  # both the tail ("") and the publisher's ACK listener subscribed
        deadline = time.monotonic() + HEAR_TIMEOUT
        while not {b"", ack_topic.encode()} <= heard:
            assert time.monotonic() < deadline, f"subscriptions heard: {heard}"
            if xpub.poll(200):
                heard.add(xpub.recv()[1:])
        assert json.loads(tail.next_line())["msg_id"] == pending.msg_id  # tail consuming

        sent = {"forged acks": 0, "foreign acks": 0, "forged messages": 0,
                "foreign messages": 0, "garbage": 0}

        def counted(got, name, **labels) -> float:
            key = (name, tuple(sorted(labels.items())))
            return got.get(key, 0.0) - before.get(key, 0.0)

        def wait_heard() -> None:
            """Until every forgery sent so far was counted on both sides."""
            deadline = time.monotonic() + HEAR_TIMEOUT
            while True:
                mine = parse(generate_latest(registry).decode())
                theirs = parse(metrics_of(url))
                if (counted(mine, "gilmsg_acks_refused_total", reason="bad signature")
                        == sent["forged acks"]
                        and counted(mine, "gilmsg_acks_refused_total", reason="not a recipient")
                        == sent["foreign acks"]
                        and theirs.get(("gilmsg_messages_refused_total",
                                        (("reason", "bad signature"),)), 0)
                        == sent["forged messages"]
                        and theirs.get(("gilmsg_messages_received_total", ()), 0)
                        == sent["foreign messages"] + 1):
                    return
                assert time.monotonic() < deadline, (sent, mine, theirs)
                time.sleep(0.1)  # polling two counters that the flood moves

        # In rounds of 500 frames, each heard in full before the next (the publisher's ACK
        # listener queues at most 1000 frames per peer: a faster flood is dropped by ZeroMQ,
        # which is the point of that bound, but then nothing proves it was examined).
        for i in range(FRAMES):
            kind = i % 5
            junk = uuid.uuid4().hex
            if kind in (0, 1):
                body = {"ack_msg_id": pending.msg_id, "ack_digest": junk,
                        "status": ("received", "processed", "rejected")[i % 3],
                        "reason": f"reason {junk}"}
                ack = wire.new_envelope(ack_topic, body, i)
                envelope = fake_credentials(ack) if kind == 0 else signer.sign(ack)
                sent["forged acks" if kind == 0 else "foreign acks"] += 1
                xpub.send_multipart(wire.encode(ack_topic, envelope))
            elif kind in (2, 3):
                topic = f"org.gilmsg.test.flood{junk}.x{junk}"
                msg = wire.new_envelope(topic, {"n": i}, i, [f"who-{junk}"])
                envelope = fake_credentials(msg) if kind == 2 else signer.sign(msg)
                sent["forged messages" if kind == 2 else "foreign messages"] += 1
                xpub.send_multipart(wire.encode(topic, envelope))
            else:
                sent["garbage"] += 1
                xpub.send_multipart([f"org.gilmsg.{junk}".encode(), os.urandom(64)])
            if (i + 1) % 500 == 0:
                wait_heard()
        named = {v for (_n, labels) in before for k, v in labels if k == "recipient"}
        assert_bounded(generate_latest(registry).decode(), "publisher", named)
        assert_bounded(metrics_of(url), "gilmsg-tail")
    finally:
        pending.cancel()
        xpub.close(0)
        ctx.term()

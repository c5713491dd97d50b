"""``gilmsg.ack_endpoints``: ACKs on endpoints of their own, unseen by receivers of the whole bus.

Real ``gilmsg-tail`` recipients, a real publisher, raw ZeroMQ subscribers on 127.0.0.1 standing
for other receivers of the bus; certificates from the test CA.
"""

from __future__ import annotations

import time

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import gilmsg
from gilmsg import config as gconfig
from gilmsg.core import causes
from gilmsg.errors import ConfigError
from gilmsg.testing import DEFAULT_WAIT


def _whole_bus_receiver(ctx: zmq.Context, endpoints: list[str]) -> zmq.Socket:
    """A SUB socket subscribed to every topic, connected (handshake done) to ``endpoints``."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    for endpoint in endpoints:
        sub.connect(endpoint)
    try:
        for _ in endpoints:
            assert monitor.poll(DEFAULT_WAIT * 1000), "a receiver never connected"
            assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    finally:
        sub.disable_monitor()
        monitor.close(0)
    return sub


def _topics(sub: zmq.Socket, wait_s: float) -> list[bytes]:
    """The topic frames ``sub`` received, reading until nothing came for ``wait_s``."""
    got = []
    while sub.poll(int(wait_s * 1000)):
        got.append(sub.recv_multipart()[0])
    return got


def test_acks_leave_on_their_own_endpoints_and_no_whole_bus_receiver_gets_them(make_bus):
    bus = make_bus(["pub", "r1", "r2"], ack_endpoints=True)
    tails = [bus.spawn_tail(name) for name in ("r1", "r2")]
    cfg = bus.config_for("pub")
    first = gilmsg.publish(topic="t", msg={"n": 0}, modname="test", recipients=["r1", "r2"],
                           ack_timeout=30, **cfg)
    assert set(first.acks) == {"r1", "r2"}
    ctx = zmq.Context()
    try:
        main = _whole_bus_receiver(ctx, [bus.config["endpoints"][n][0] for n in ("r1", "r2")])
        acks = _whole_bus_receiver(
            ctx, [bus.config["gilmsg.ack_endpoints"][n][0] for n in ("r1", "r2")])
        for n in range(1, 4):
            report = gilmsg.publish(topic="t", msg={"n": n}, modname="test",
                                    recipients=["r1", "r2"], ack_timeout=30, **cfg)
            assert set(report.acks) == {"r1", "r2"}
        ack_topic = gconfig.ack_topic(cfg).encode()
        assert _topics(acks, 0.5).count(ack_topic) == 6  # 3 messages x 2 recipients
        assert _topics(main, 0.2) == []  # the recipients' endpoints carried none of them
    finally:
        ctx.destroy(0)
    for tail in tails:
        assert tail.next_line()  # each tail delivered the messages it acknowledged


def test_a_publisher_that_does_not_read_the_key_gets_a_timeout_never_a_false_success(make_bus):
    """A publisher configured without ``gilmsg.ack_endpoints`` (gilmsg 0.1.2, a stale config)
    listens on the ``endpoints`` entries: the recipient's ACKs never reach it."""
    bus = make_bus(["pub", "old", "r1"], ack_endpoints=True)
    bus.spawn_tail("r1")
    assert gilmsg.publish(topic="t", msg={}, modname="test", recipients=["r1"],
                          ack_timeout=30, **bus.config_for("pub")).acks  # r1 is answering
    cfg = bus.config_for("old", **{"gilmsg.ack_endpoints": {}})
    with pytest.raises(gilmsg.Timeout) as caught:
        gilmsg.publish(topic="t", msg={}, modname="test", recipients=["r1"], ack_timeout=1.0,
                       **cfg)
    assert caught.value.missing == ("r1",)
    assert caught.value.causes == {"r1": causes.NO_ACK}  # r1 was subscribed to it


def test_a_tail_that_shows_acks_connects_to_the_ack_endpoints(make_bus):
    bus = make_bus(["pub", "r1", "watcher"], ack_endpoints=True)
    bus.spawn_tail("r1")
    watcher = bus.spawn_tail("watcher", "--show-acks")
    cfg = bus.config_for("pub")
    ack_topic = gconfig.ack_topic(cfg)
    deadline = time.monotonic() + DEFAULT_WAIT
    while True:  # until the watcher is connected to r1's ACK endpoint: then it shows each ACK
        report = gilmsg.publish(topic="t", msg={}, modname="test", recipients=["r1"],
                                ack_timeout=30, **cfg)
        msg_id = report.msg_id
        try:
            watcher.wait_for(lambda line, m=msg_id: ack_topic in line and m in line, 1.0)
            return
        except AssertionError:
            assert time.monotonic() < deadline, "the watcher never showed r1's ACK"


def test_ack_endpoints_helpers():
    config = {"endpoints": {"a": ["tcp://127.0.0.1:1"], "b": "tcp://127.0.0.1:2",
                            "relay_inbound": ["tcp://127.0.0.1:3"]},
              "gilmsg.ack_endpoints": {"b": "tcp://127.0.0.1:12", "c": ["tcp://127.0.0.1:13"]}}
    assert gconfig.ack_endpoints(config, "a") == []
    assert gconfig.ack_endpoints(config, "b") == ["tcp://127.0.0.1:12"]
    assert gconfig.ack_listen_endpoints(config) == [
        "tcp://127.0.0.1:1", "tcp://127.0.0.1:12", "tcp://127.0.0.1:13"]
    assert gconfig.ack_listen_endpoints(config, skip="b") == [
        "tcp://127.0.0.1:1", "tcp://127.0.0.1:13"]
    assert gconfig.named_ack_endpoints(config) == [
        ("b", "tcp://127.0.0.1:12"), ("c", "tcp://127.0.0.1:13")]
    assert gconfig.ack_endpoints({**config, "gilmsg.transport": "amqp"}, "b") == []  # ignored
    with pytest.raises(ConfigError, match="must be a dict"):
        gconfig.ack_endpoints({"gilmsg.ack_endpoints": ["tcp://127.0.0.1:1"]}, "a")
    with pytest.raises(ConfigError, match="must list addresses"):
        gconfig.ack_endpoints({"gilmsg.ack_endpoints": {"a": [5]}}, "a")


def test_an_ack_endpoint_in_use_is_a_config_error_and_nothing_stays_bound(make_bus):
    bus = make_bus(["pub", "r1"], ack_endpoints=True)
    ctx = zmq.Context()
    holder = ctx.socket(zmq.PUB)
    holder.setsockopt(zmq.LINGER, 0)
    holder.bind(bus.config["gilmsg.ack_endpoints"]["pub"][0])
    try:
        with pytest.raises(ConfigError, match=r"cannot bind gilmsg.ack_endpoints\['pub'\]"):
            gilmsg.publish(topic="t", msg={}, modname="test", recipients=["r1"],
                           ack_timeout=1.0, **bus.config_for("pub"))
        again = ctx.socket(zmq.PUB)  # the main endpoint was released with the failure
        again.setsockopt(zmq.LINGER, 0)
        again.bind(bus.config["endpoints"]["pub"][0])
        again.close(0)
    finally:
        holder.close(0)
        ctx.term()

"""gilmsg over a lossy link between two network namespaces (root only; gilmsg.testing.lossy_link).

The publisher (``gilmsg-logger``) runs in one namespace, the recipient (``gilmsg-tail``) in the
other; every packet between them goes through a forwarder that drops a fraction of them. The
figures (10 runs x 50 messages, before and after heartbeats) are in ``bench/bench_lossy.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gilmsg.testing import DEFAULT_WAIT, free_port
from gilmsg.testing.lossy_link import LossyLink, unavailable

_why = unavailable()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"lossy link: {_why}")

BIN = Path(sys.executable).parent


def _across_the_link(make_bus, recipient: str):
    """``(link, bus)``: ``pub`` in namespace A and ``recipient`` in namespace B, no loss yet."""
    with LossyLink(loss=0.0) as link:
        bus = make_bus(["pub", recipient])
        bus.config["endpoints"] = {"pub": [f"tcp://{link.addr_a}:{free_port()}"],
                                   recipient: [f"tcp://{link.addr_b}:{free_port()}"]}
        bus.write_config()
        yield link, bus
        bus.close()  # before the namespaces go


@pytest.fixture
def lossy_bus(make_bus):
    """``(link, bus)``: services ``pub`` (namespace A) and ``r1`` (namespace B), no loss yet."""
    yield from _across_the_link(make_bus, "r1")


def _start(link, bus, ack_timeout):
    tail = bus.spawn(link.wrap(link.ns_b, [str(BIN / "gilmsg-tail"), "--config-filename",
                                           str(bus.config_file), "--name", "r1", "--json"]))
    logger = bus.spawn(link.wrap(link.ns_a, [
        str(BIN / "gilmsg-logger"), "--config-filename", str(bus.config_file), "--name", "pub",
        "--recipients", "r1", "--ack-timeout", str(ack_timeout), "--json-report"]),
        stdin=subprocess.PIPE)
    return tail, logger


def _say(logger, text):
    logger.proc.stdin.write(text + "\n")
    logger.proc.stdin.flush()
    return json.loads(logger.next_line(60.0))


def _received(tail, msg_ids, timeout=DEFAULT_WAIT):
    """Wait until the tail printed every msg_id in ``msg_ids``."""
    missing = set(msg_ids)
    while missing:
        line = tail.next_line(timeout)
        missing.discard(json.loads(line).get("msg_id"))


def test_no_false_positive_and_every_message_through_at_20_percent_loss(lossy_bus):
    link, bus = lossy_bus
    link.set_loss(0.2)
    tail, logger = _start(link, bus, ack_timeout=30)
    reports = [_say(logger, f"message {i}") for i in range(15)]
    delivered = [r["msg_id"] for r in reports if r["status"] == "delivered"]
    for r in reports:  # a failure is reported precisely, never as a success
        assert r["status"] == "delivered" or r["missing"] == ["r1"], r
    _received(tail, delivered)  # no false positive: each acknowledged message reached r1
    assert len(delivered) == len(reports), [r["status"] for r in reports]


def test_a_stalled_connection_is_replaced_within_seconds(lossy_bus):
    """Cut the link under idle, established connections: the heartbeats notice and reconnect.

    Without them TCP keeps the dead connections for minutes and nobody tries a new one: the
    forwarder would see no new SYN within the wait below.
    """
    link, bus = lossy_bus
    tail, logger = _start(link, bus, ack_timeout=30)
    first = _say(logger, "before the cut")
    assert first["status"] == "delivered", first
    while not link.forwarder.lines.empty():  # the SYNs of the first connections
        link.forwarder.next_line(0)
    link.set_loss(1.0)
    link.forwarder.wait_for(lambda line: line.startswith("syn"), DEFAULT_WAIT)
    link.set_loss(0.0)
    after = _say(logger, "after the cut")
    assert after["status"] == "delivered", after
    _received(tail, [first["msg_id"], after["msg_id"]])


# --------------------------------------------------------------------------------------------
# The same faults against a GilmsgConsumer in a stock fedmsg-hub (gilmsg.consumers.hub_sockets)


@pytest.fixture
def lossy_hub_bus(make_bus):
    """``(link, bus)``: ``pub`` in namespace A, a hub acknowledging as ``hub`` in B, no loss."""
    yield from _across_the_link(make_bus, "hub")


def _start_hub(link, bus, ack_timeout):
    from gilmsg.testing import HUB_READY_LOG
    from tests.integration.test_hub import EXAMPLE, EXAMPLE_SRC, wait_line

    path = bus.write_hub_config("hub", **{"gilmsg_example": True,
                                          "gilmsg_example.output": str(bus.root / "out.jsonl")})
    env = bus.env()
    env["PYTHONPATH"] = f"{EXAMPLE_SRC}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else \
        str(EXAMPLE_SRC)
    hub = bus.spawn(link.wrap(link.ns_b, [str(BIN / "fedmsg-hub"), "--config-filename",
                                          str(path), "--with-consumers", EXAMPLE]), env=env)
    wait_line(hub, HUB_READY_LOG)
    logger = bus.spawn(link.wrap(link.ns_a, [
        str(BIN / "gilmsg-logger"), "--config-filename", str(bus.config_file), "--name", "pub",
        "--recipients", "hub", "--ack-timeout", str(ack_timeout), "--json-report"]),
        stdin=subprocess.PIPE)
    return hub, logger


def _consumed(hub, msg_ids):
    from tests.integration.test_hub import wait_consumed

    for msg_id in msg_ids:
        wait_consumed(hub, msg_id)


def test_a_hub_acknowledges_every_message_at_20_percent_loss(lossy_hub_bus):
    link, bus = lossy_hub_bus
    link.set_loss(0.2)
    hub, logger = _start_hub(link, bus, ack_timeout=30)
    reports = [_say(logger, f"message {i}") for i in range(15)]
    for r in reports:  # a failure is reported precisely, never as a success
        assert r["status"] == "delivered" or r["missing"] == ["hub"], r
    delivered = [r["msg_id"] for r in reports if r["status"] == "delivered"]
    _consumed(hub, delivered)  # no false positive: each acknowledged message was consumed
    assert len(delivered) == len(reports), [r["status"] for r in reports]


def test_a_hubs_stalled_connection_is_replaced_within_seconds(lossy_hub_bus):
    """Cut the link under idle connections: the hub's heartbeats (gilmsg's, on moksha's
    receiving socket) notice and make a new connection. Stock moksha sets no heartbeats: the
    hub would keep its dead connection to ``pub`` and try no new one."""
    link, bus = lossy_hub_bus
    hub, logger = _start_hub(link, bus, ack_timeout=30)
    first = _say(logger, "before the cut")
    assert first["status"] == "delivered", first
    while not link.forwarder.lines.empty():  # the SYNs of the first connections
        link.forwarder.next_line(0)
    link.set_loss(1.0)
    # The hub (in B) connects again to pub (in A): only the hub's receiving socket goes B>A.
    link.forwarder.wait_for(lambda line: line == "syn B>A", DEFAULT_WAIT)
    link.set_loss(0.0)
    after = _say(logger, "after the cut")
    assert after["status"] == "delivered", after
    _consumed(hub, [first["msg_id"], after["msg_id"]])

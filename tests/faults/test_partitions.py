"""Network faults between real processes in two network namespaces (root only).

Namespace A holds the publisher (``gilmsg-logger``) and recipient ``near``; namespace B holds
recipient ``far``. Every packet between A and B goes through the userspace forwarder of
``gilmsg/testing/lossy_link.py`` (this kernel has no ``tc netem``), which drops, delays or blocks
what the test says; ``near`` is never cut off, so each report must name ``far``, and only ``far``,
exactly when ``far`` was unreachable. The one-way cut of the ACK path runs by default, the rest
with ``./run tests -m faults``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gilmsg.testing import DEFAULT_WAIT, free_port
from gilmsg.testing.lossy_link import LossyLink, unavailable
from tests.faults.checks import assert_once_each, await_delivered, delivered

_why = unavailable()
pytestmark = [pytest.mark.faults,
              pytest.mark.skipif(_why is not None, reason=f"network namespaces: {_why}")]

BIN = Path(sys.executable).parent


class Net:
    """The two namespaces, the bus and its three processes."""

    def __init__(self, link: LossyLink, bus, ack_timeout: float) -> None:
        self.link, self.bus = link, bus
        self.far_port = free_port()
        bus.config["endpoints"] = {"pub": [f"tcp://{link.addr_a}:{free_port()}"],
                                   "near": [f"tcp://{link.addr_a}:{free_port()}"],
                                   "far": [f"tcp://{link.addr_b}:{self.far_port}"]}
        bus.write_config()
        tail = [str(BIN / "gilmsg-tail"), "--config-filename", str(bus.config_file), "--json"]
        self.near = bus.spawn(link.wrap(link.ns_a, [*tail, "--name", "near"]))
        self.far = bus.spawn(link.wrap(link.ns_b, [*tail, "--name", "far"]))
        self.logger = bus.spawn(link.wrap(link.ns_a, [
            str(BIN / "gilmsg-logger"), "--config-filename", str(bus.config_file), "--name",
            "pub", "--recipients", "near far", "--ack-timeout", str(ack_timeout),
            "--json-report"]), stdin=subprocess.PIPE)

    def send(self, text: str) -> None:
        self.logger.proc.stdin.write(text + "\n")
        self.logger.proc.stdin.flush()

    def report(self, timeout: float = 90.0) -> dict:
        return json.loads(self.logger.next_line(timeout))

    def say(self, text: str) -> dict:
        self.send(text)
        return self.report()

    def clear_syns(self) -> None:
        while not self.link.forwarder.lines.empty():
            self.link.forwarder.next_line(0)


def _full(report: dict) -> None:
    assert report["status"] == "delivered", report
    assert set(report["acked"]) == {"near", "far"} and not report["missing"], report


def _far_missing(report: dict) -> None:
    assert report["status"] == "not_acknowledged", report
    assert report["missing"] == ["far"] and set(report["acked"]) == {"near"}, report


@pytest.fixture
def net(make_bus):
    """Factory: ``net(ack_timeout)`` -> a :class:`Net` whose first message got through."""
    links = []

    def make(ack_timeout: float) -> Net:
        link = LossyLink(loss=0.0)
        links.append(link)
        made = Net(link, make_bus(["pub", "near", "far"]), ack_timeout)
        links.append(made.bus)
        _full(made.say("warm-up"))
        return made

    yield make
    for item in reversed(links):
        item.close()  # the bus (its processes) before its namespaces


def test_one_way_partition_of_the_ack_path_is_a_reported_false_negative(net):
    """Only connections to far's endpoint (where its ACKs leave) are cut: far gets the message
    and its application sees it once, but the publisher cannot know: the report names far."""
    n = net(ack_timeout=4)
    n.link.block_port(n.far_port)
    report = n.say("only the ACK path is cut")
    _far_missing(report)
    await_delivered(n.far, [report["msg_id"]])  # it did arrive: a false negative, reported
    n.link.block_port(n.far_port, blocked=False)
    after = n.say("healed")
    _full(after)
    await_delivered(n.far, [after["msg_id"]])
    await_delivered(n.near, [report["msg_id"], after["msg_id"]])
    assert_once_each(n.near, n.far)


@pytest.mark.faults_full
def test_a_partition_that_heals_within_the_timeout(net):
    """A and B cut apart; healed only once far's side tried to reconnect (its connection
    timed out on heartbeats): the publish in flight still ends with both ACKs."""
    n = net(ack_timeout=30)
    n.clear_syns()
    n.link.set_loss(1.0)
    n.send("sent into the partition")
    n.link.forwarder.wait_for(lambda line: line.startswith("syn"), DEFAULT_WAIT)
    n.link.set_loss(0.0)
    report = n.report()
    _full(report)
    await_delivered(n.far, [report["msg_id"]])
    await_delivered(n.near, [report["msg_id"]])
    assert_once_each(n.near, n.far)


@pytest.mark.faults_full
def test_a_partition_that_outlasts_the_timeout(net):
    """Still cut when the timeout passes: the Timeout names far only; once healed, the next
    message goes through and the one far never acknowledged reached it at most once."""
    n = net(ack_timeout=4)
    n.link.set_loss(1.0)
    report = n.say("lost in the partition")
    _far_missing(report)
    n.link.set_loss(0.0)
    after = n.say("after the partition")
    _full(after)
    await_delivered(n.far, [after["msg_id"]])
    assert delivered(n.far)[report["msg_id"]] <= 1
    await_delivered(n.near, [report["msg_id"], after["msg_id"]])
    assert_once_each(n.near, n.far)


@pytest.mark.faults_full
def test_twenty_percent_loss_and_100ms_delay_end_in_full_delivery(net):
    """20 % of packets dropped and every packet held 100 ms, both ways (RTT >= 200 ms):
    redelivery turns it into full delivery within the 30 s timeout, each message once."""
    n = net(ack_timeout=30)
    n.link.set_delay(0.1)
    n.link.set_loss(0.2)
    reports = [n.say(f"lossy {i}") for i in range(20)]
    for report in reports:
        _full(report)
    ids = [r["msg_id"] for r in reports]
    await_delivered(n.far, ids)
    await_delivered(n.near, ids)
    assert_once_each(n.near, n.far)

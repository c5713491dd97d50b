"""A Timeout that says why, per missing recipient, each cause produced for real.

No subscriber connected; subscribers connected, none subscribed to this topic (ZeroMQ's XPUB
tells the publisher what its peers subscribe to); subscribed, no ACK; ACKs arrived and were
refused. The same words in ``Timeout``'s text, ``gilmsg-logger``'s line and ``--json-report``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

import gilmsg
from gilmsg import config as gconfig
from gilmsg.core import causes
from gilmsg.crypto import certs
from gilmsg.link import link_for
from gilmsg.testing import DevBus

BIN = Path(sys.executable).parent
LOGGER = str(BIN / "gilmsg-logger")
TOPIC_ARGS = {"topic": "test", "modname": "causetest"}
#: Bound on waiting for the publisher to hear a subscriber's subscription.
HEAR_TIMEOUT = 30.0


def full_topic(bus: DevBus) -> str:
    return gconfig.full_topic(bus.config_for("pub"), "test", "causetest")


def wait_reach(bus: DevBus, name: str, wanted: str, topic: str) -> None:
    """Wait until ``name``'s publishing link has heard subscriptions that give ``wanted``."""
    link = link_for(bus.config_for(name))
    deadline = time.monotonic() + HEAR_TIMEOUT
    while link._pub.reach(topic) != wanted:  # updated by the link's thread as notices come
        assert time.monotonic() < deadline, f"publisher never heard {wanted!r} subscriptions"
        time.sleep(0.02)


def timeout_of(bus: DevBus, recipients: list[str], ack_timeout: float = 0.5) -> gilmsg.Timeout:
    with pytest.raises(gilmsg.Timeout) as info:
        gilmsg.publish(msg={}, recipients=recipients, ack_timeout=ack_timeout,
                       **TOPIC_ARGS, **bus.config_for("pub"))
    return info.value


def logger_result(bus: DevBus, recipient: str, ack_timeout: str = "0.5") -> tuple[dict, str]:
    """gilmsg-logger as ``logger`` to ``recipient``: its --json-report object and stderr."""
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--json-report",
                      "--name", "logger", "-r", recipient, "--ack-timeout", ack_timeout,
                      "--modname", "causetest", "--topic", "test", "--message", "hello"])
    result = json.loads(proc.next_line())
    assert proc.wait() == 1, proc.stderr
    return result, proc.stderr


def assert_said_everywhere(err: gilmsg.Timeout, who: str, cause: str,
                           result: dict, stderr: str, ack_timeout: str = "0.5") -> None:
    assert err.causes == {who: cause}
    assert f"from {who} ({cause}) for " in str(err)
    assert result["causes"] == {who: cause}
    assert f"NOT acknowledged by {who}: no ACK within {ack_timeout}s; {who}: {cause} (" in \
        stderr


def test_no_subscriber_connected(make_bus):
    bus = make_bus(["pub", "logger", "r1"])  # nothing runs
    err = timeout_of(bus, ["r1"])
    result, stderr = logger_result(bus, "r1")
    assert_said_everywhere(err, "r1", causes.NO_SUBSCRIBER, result, stderr)


def test_subscribers_connected_none_subscribed_to_this_topic(make_bus):
    bus = make_bus(["pub", "logger", "r1"])
    other = gconfig.full_topic(bus.config_for("pub"), "elsewhere", "causetest")
    bus.spawn_tail("r1", "--topic", other)
    link_for(bus.config_for("pub"))  # bound: the tail connects to it
    wait_reach(bus, "pub", "elsewhere", full_topic(bus))
    err = timeout_of(bus, ["r1"])
    # The logger binds its endpoint as it starts; the tail (re)connects within ~50 ms and
    # subscribes: by the end of the 3 s the logger has heard it.
    result, stderr = logger_result(bus, "r1", ack_timeout="3")
    assert_said_everywhere(err, "r1", causes.NOT_SUBSCRIBED, result, stderr, "3")


def test_subscribed_no_ack(make_bus):
    bus = make_bus(["pub", "logger", "r1"])
    bus.spawn([str(BIN / "gilmsg-tail"), "--config-filename", str(bus.config_file), "--no-ack",
               "--json"])  # subscribes to everything, answers nothing
    link_for(bus.config_for("pub"))
    wait_reach(bus, "pub", "covered", full_topic(bus))
    err = timeout_of(bus, ["r1"])
    result, stderr = logger_result(bus, "r1")
    assert_said_everywhere(err, "r1", causes.NO_ACK, result, stderr)


def test_acks_arrived_and_were_refused(make_bus):
    bus = make_bus(["pub", "logger", "r1"])
    certs.revoke(bus.ssldir, "r1")
    bus.spawn_tail("r1", "--no-validate")  # answers, with a revoked certificate
    link_for(bus.config_for("pub"))
    wait_reach(bus, "pub", "covered", full_topic(bus))
    err = timeout_of(bus, ["r1"], ack_timeout=1.5)
    [(who, cause)] = err.causes.items()
    assert who == "r1" and cause.startswith("ACKs refused: ") and "revoked" in cause
    assert f"from r1 ({cause}) for " in str(err)
    assert "ACKs from r1 refused" not in str(err)  # said once, as the cause

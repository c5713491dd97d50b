"""Recipient groups (gilmsg.recipients) and early word about unknown recipient names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import gilmsg
from gilmsg.commands import _common
from gilmsg.errors import InvalidInput
from gilmsg.testing import Process


def test_strict_publish_refuses_before_sending(make_bus):
    bus = make_bus(["pub", "r1"], extra={"gilmsg.known_recipients": ["r1"],
                                         "gilmsg.strict_recipients": True})
    with pytest.raises(InvalidInput, match="r2: no identity of this bus"):
        gilmsg.publish(topic="t", msg={}, recipients=["r1", "r2"], ack_timeout=1,
                       **bus.config_for("pub"))


def test_publish_and_logger_reach_a_group(make_bus):
    bus = make_bus(["pub", "cli", "r1", "r2"], extra={"gilmsg.recipients": {"team": ["r1", "r2"]}})
    tails = [bus.spawn_tail("r1"), bus.spawn_tail("r2")]
    report = gilmsg.publish(topic="t", msg={"n": 1}, recipients=["@team"], ack_timeout=20,
                            **bus.config_for("pub"))
    assert set(report.acks) == {"r1", "r2"}
    for tail in tails:
        assert json.loads(tail.next_line())["gilmsg_recipients"] == ["r1", "r2"]
    logger = str(Path(sys.executable).parent / "gilmsg-logger")
    proc = bus.spawn([logger, "--config-filename", str(bus.config_file), "--name", "cli",
                      "-r", "@team", "--ack-timeout", "20", "--json-report", "--message", "hi"])
    assert proc.wait(60) == 0, proc.stderr
    assert list(json.loads(proc.next_line())["acked"]) == ["r1", "r2"]


def test_logger_unknown_group_is_a_usage_error(make_bus):
    bus = make_bus(["pub", "r1"])
    logger = str(Path(sys.executable).parent / "gilmsg-logger")
    proc = Process([logger, "--config-filename", str(bus.config_file), "--name", "pub",
                    "-r", "@team", "--message", "hi"], env=bus.env())
    assert proc.wait(60) == _common.EXIT_USAGE
    assert "no recipient group 'team' in config key 'gilmsg.recipients'" in proc.stderr
    assert "Traceback" not in proc.stderr

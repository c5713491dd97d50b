"""Recipient groups (gilmsg.recipients) and early word about unknown recipient names."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

import gilmsg
from gilmsg import groups
from gilmsg.commands import _common
from gilmsg.errors import InvalidInput
from gilmsg.testing import Process

CFG = {
    "certnames": {"pub": "pub"},
    "gilmsg.recipients": {"compose-done": ["archiver", "notifier"],
                          "all": ["@compose-done", "pager", "archiver"],
                          "loop": ["@loop2"], "loop2": ["@loop"], "none": []},
}


def test_groups_expand_in_order_without_repeats():
    assert groups.expand(["@compose-done"], CFG) == ["archiver", "notifier"]
    assert groups.expand(["pager", "@all"], CFG) == ["pager", "archiver", "notifier"]
    assert groups.expand(["a", "b"], {}) == ["a", "b"]  # no group named: config not read
    assert groups.expand("a b", CFG) == "a b"  # left for check_recipients to refuse


@pytest.mark.parametrize("recipients, words", [
    (["@nope"], "no recipient group 'nope' in config key 'gilmsg.recipients' (groups: all,"),
    (["@loop"], "recipient group 'loop' contains itself (loop -> loop2 -> loop)"),
    (["@none"], "recipient group 'none' is empty"),
])
def test_bad_groups_are_refused(recipients, words):
    with pytest.raises(InvalidInput) as info:
        groups.expand(recipients, CFG)
    assert words in str(info.value)


def test_unknown_names_only_when_the_config_lists_them():
    assert groups.unknown(["archiver", "pub", "archivr"], CFG) == ["archivr"]
    assert groups.unknown(["anything"], {"certnames": {"pub": "pub"}}) == []
    assert groups.unknown(["x", "y"], {"gilmsg.known_recipients": ["x"]}) == ["y"]


def test_unknown_name_warns_once_and_strict_refuses(caplog):
    cfg = {"gilmsg.known_recipients": ["x"]}
    with caplog.at_level(logging.WARNING, logger="gilmsg.groups"):
        assert groups.resolve(["x", "typo-once"], cfg) == ["x", "typo-once"]
        groups.resolve(["typo-once"], cfg)
    assert [r.getMessage() for r in caplog.records].count(
        "typo-once: no identity of this bus has that name (not in gilmsg.known_recipients, "
        "a group of gilmsg.recipients or certnames; a typo?)") == 1
    with pytest.raises(InvalidInput, match="refused in strict mode"):
        groups.resolve(["typo"], {**cfg, "gilmsg.strict_recipients": True})
    with pytest.raises(InvalidInput, match="refused in strict mode"):
        groups.resolve(["typo"], cfg, strict=True)


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

"""gilmsg 0.1.2's command line still works, and usage errors are one line (docs/migrating.rst)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gilmsg.commands import _common, logger, outbox, ping, tail

LOGGER = str(Path(sys.executable).parent / "gilmsg-logger")


def test_several_recipients_after_one_option_reach_each_of_them(make_bus):
    bus = make_bus(["cli", "r1", "r2"])
    tails = [bus.spawn_tail("r1"), bus.spawn_tail("r2")]
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--name", "cli",
                      "--recipients", "r1", "r2", "--ack-timeout", "20", "--json-report",
                      "--message", "hi"])
    assert proc.wait(60) == _common.EXIT_OK, proc.stderr
    assert sorted(json.loads(proc.next_line())["acked"]) == ["r1", "r2"]
    for one in tails:
        assert json.loads(one.next_line())["msg"] == {"log": "hi"}


@pytest.mark.parametrize("args, spread", [
    (["-r", "A", "B", "--ack-timeout", "3"], ["-r", "A", "-r", "B", "--ack-timeout", "3"]),
    (["--recipients=A", "B", "-q"], ["--recipients=A", "--recipients", "B", "-q"]),
    (["-r", "A", "-r", "B"], ["-r", "A", "-r", "B"]),
    (["-q", "-r", "A", "--", "B"], ["-q", "-r", "A", "--", "B"]),
])
def test_values_after_recipients_are_spread_over_the_option(args, spread):
    assert _common._spread_multi_values(logger.main, args) == spread


def test_a_command_without_spread_options_leaves_its_arguments_alone():
    assert _common._spread_multi_values(tail.main, ["--topic", "a", "b"]) == ["--topic", "a", "b"]


@pytest.mark.parametrize("command, prog, args, words", [
    (logger.main, "gilmsg-logger", ["--bogus"], "No such option '--bogus'"),
    (logger.main, "gilmsg-logger", ["--ack-timeout", "1e-9"], "must be at least 0.001"),
    (tail.main, "gilmsg-tail", ["--count", "x"], "'x' is not a valid integer"),
    (outbox.main, "gilmsg-outbox", ["nosuch"], "No such command 'nosuch'"),
    (ping.cli, "gilmsg-ping", ["--count", "0", "r1"], "--count"),
])
def test_a_usage_error_is_one_line_and_exit_2(command, prog, args, words):
    result = CliRunner().invoke(command, args, prog_name=prog)
    assert result.exit_code == _common.EXIT_USAGE, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and words in lines[0]
    assert lines[0].endswith(f"(see {prog} --help)")


def test_outbox_without_recipients_is_only_the_usage_error(tmp_path):
    result = CliRunner().invoke(logger.main, ["--outbox", str(tmp_path / "o.db"), "-m", "x",
                                              "--config-filename", str(tmp_path / "none.py")],
                                prog_name="gilmsg-logger")
    assert result.exit_code in (_common.EXIT_USAGE, _common.EXIT_CONFIG), result.stderr
    assert "note:" not in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("value, parts", [
    ("ping", ("gilmsg", "ping")),
    ("gilmsg.ping", ("gilmsg", "ping")),
    ("compose.rawhide.complete", ("compose", "rawhide.complete")),
])
def test_ping_topic_is_what_follows_prefix_and_environment(value, parts):
    assert ping.split_topic(value) == parts


def test_help_lists_every_exit_code_a_command_can_give():
    assert "6    --dedup-file" in CliRunner().invoke(tail.main, ["--help"]).output
    assert "or rejected" in CliRunner().invoke(logger.main, ["--help"]).output

"""gilmsg-ping: usage and Nagios rules in-process; live, dead, slow and revoked recipients with
the real command against stand-ins of a sandbox (real processes, real certificates)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gilmsg.commands import _common
from gilmsg.commands import ping as cli
from gilmsg.commands.ping import RecipientStats, nagios_status
from gilmsg.testing import Process
from gilmsg.testing.sandbox import Sandbox, parse_standins

PING = str(Path(sys.executable).parent / "gilmsg-ping")


# -- in-process --------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(cli.cli, list(args), prog_name="gilmsg-ping")


def test_help_lists_exit_codes_and_nagios_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Exit codes:" in result.output and "3 UNKNOWN" in result.output


@pytest.mark.parametrize("args, words", [
    ([], "name at least one recipient"),
    (["r1", "--timeout", "0"], "must be a positive number of seconds"),
    (["r1", "--count", "0"], "--count"),
    (["", "r1"], "empty recipient name"),
])
def test_usage_errors_exit_2(args, words):
    result = invoke(*args)
    assert result.exit_code == _common.EXIT_USAGE
    assert words in result.stderr and "Traceback" not in result.stderr


def test_nagios_mode_turns_usage_and_config_errors_into_unknown(capsys, tmp_path):
    for args in (["--nagios"], ["--nagios", "--config-filename", str(tmp_path / "nope.py"),
                                "r1"]):
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        assert info.value.code == cli.NAGIOS_UNKNOWN
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 1 and out[0].startswith("GILMSG-PING UNKNOWN - "), out


def stats(name: str, rtts: list[float], missed: int = 0, refused: str | None = None):
    return RecipientStats(name, rtts, missed, refused)


def test_nagios_states_and_perfdata():
    ok = stats("a", [0.002, 0.004])
    assert nagios_status([ok], None, None) == (
        0, "GILMSG-PING OK - 1/1 recipients OK: every recipient answered | "
           "'a_rtt'=3.000ms;;;0; 'a_answered'=2;;;0;2")
    state, line = nagios_status([ok, stats("b", [0.5], missed=1)], 100, None)
    assert state == cli.NAGIOS_WARNING
    assert "b: 1/2 probes missed" in line and "'b_rtt'=500.000ms;100;;0;" in line
    state, line = nagios_status([ok, stats("c", [], missed=2, refused="revoked")], None, None)
    assert state == cli.NAGIOS_CRITICAL and "c: ACK refused (revoked)" in line
    assert "'c_rtt'=U;;;0;" in line
    assert nagios_status([stats("d", [2.0])], 100, 1000)[0] == cli.NAGIOS_CRITICAL


# -- real processes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path_factory.mktemp("ping"),
                      parse_standins(["live", "slow:delay=0.2", "rev:revoked", "gone:absent",
                                      "dying"]),
                      services=["monitor"], relay=False)
    sandbox.start(timeout=60)
    yield sandbox
    sandbox.stop()


def ping(box: Sandbox, *args: str) -> tuple[int, list[str], str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = Process([PING, "--config-filename", str(box.config_file), "--name", "monitor",
                    *args], env=env)
    code = proc.wait(60)
    lines = []
    while not proc.lines.empty():
        lines.append(proc.next_line(0))
    return code, lines, proc.stderr


def test_live_slow_and_revoked_recipients_are_told_apart(box):
    code, lines, _ = ping(box, "--json", "--count", "2", "--interval", "0", "--timeout", "2",
                          "live", "slow", "rev", "gone")
    assert code == _common.EXIT_NOT_ACKNOWLEDGED
    probes = [json.loads(line) for line in lines[:2]]
    summary = {s["recipient"]: s for s in json.loads(lines[2])["summary"]}
    for p in probes:
        assert p["results"]["live"]["answered"] and p["results"]["slow"]["answered"]
        assert p["results"]["slow"]["rtt_ms"] >= 200  # it waits 0.2 s before acknowledging
        assert not p["results"]["gone"]["answered"] and p["results"]["gone"]["refused"] is None
        assert not p["results"]["rev"]["answered"]
        assert "certificate is revoked" in p["results"]["rev"]["refused"]
    assert summary["live"]["answered"] == summary["live"]["sent"] == 2
    assert summary["gone"]["answered"] == 0 and summary["rev"]["answered"] == 0


def test_every_recipient_answering_exits_0_with_a_summary(box):
    code, lines, stderr = ping(box, "--count", "2", "--interval", "0.05", "live", "slow")
    assert code == 0, stderr
    assert lines[0] == "PING live slow: 2 probe(s), timeout 2s"
    assert lines[1].startswith("probe 1: live ") and " ms, slow " in lines[1]
    assert lines[-2].startswith("live: 2/2 answered, rtt min/avg/max ")
    assert lines[-1].startswith("slow: 2/2 answered, rtt min/avg/max ")


def test_revoked_is_said_once_per_recipient_not_per_copy(box):
    code, lines, stderr = ping(box, "--timeout", "1", "rev")
    assert code == 1
    assert lines[1].startswith("probe 1: rev ACK REFUSED (") and "revoked" in lines[1]
    assert lines[-1].startswith("rev: 0/1 answered; ACK refused: ")
    assert "ignored ACK" not in stderr  # the publisher's per-copy warnings are folded in


def test_nagios_mode_ok_warning_critical(box):
    code, lines, _ = ping(box, "--nagios", "live")
    assert code == cli.NAGIOS_OK and len(lines) == 1
    assert lines[0].startswith("GILMSG-PING OK - 1/1 recipients OK") and "'live_rtt'=" in lines[0]
    code, lines, _ = ping(box, "--nagios", "--warning", "150", "live", "slow")
    assert code == cli.NAGIOS_WARNING and "slow: rtt " in lines[0], lines
    code, lines, _ = ping(box, "--nagios", "--timeout", "1", "live", "gone")
    assert code == cli.NAGIOS_CRITICAL and "gone: no answer" in lines[0], lines


def test_a_recipient_that_dies_stops_answering(box):
    code, _, stderr = ping(box, "dying")
    assert code == 0, stderr
    box.stop_one("dying")
    code, lines, _ = ping(box, "--timeout", "1", "dying")
    assert code == 1 and lines[1] == "probe 1: dying NO ANSWER"


def test_a_typo_is_reported_at_once_and_strict_refuses_it(box):
    code, _, stderr = ping(box, "--timeout", "0.5", "live", "lvie")
    assert code == 1
    assert "gilmsg-ping: WARNING: lvie: no identity of this bus has that name" in stderr
    code, _, stderr = ping(box, "--strict", "live", "lvie")
    assert code == _common.EXIT_USAGE and "refused in strict mode" in stderr

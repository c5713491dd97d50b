"""Walls a newcomer hit (issue 22, walls 3 and 5): messages that say what to do, and the
rough edges of bad input, each with the real command or the real library call."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import gilmsg
from gilmsg.core import wire
from gilmsg.testing import DevBus

BIN = Path(sys.executable).parent
TIMEOUT = 60


def command(bus: DevBus, prog: str, *args: str, input: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / prog), *args], capture_output=True, text=True, cwd=bus.root,
                          env=bus.env(), timeout=TIMEOUT, input=input)


def one_error_line(run: subprocess.CompletedProcess, prog: str) -> str:
    """The run's stderr, which must be exactly one ``<prog>: error: ...`` line."""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


@pytest.fixture
def bus(make_bus):
    bus = make_bus(["pub", "r1"])
    # fedmsg-relay's endpoint entry: a bus has it, but no process publishes as it.
    bus.config["endpoints"]["relay_outbound"] = ["tcp://127.0.0.1:1"]
    bus.write_config()
    return bus


# --- wall 3: messages that do not say what to do --------------------------------------------


def test_outbox_run_without_name_says_to_pass_name(bus):
    run = command(bus, "gilmsg-outbox", "--config-filename", str(bus.config_file), "--outbox",
                  str(bus.root / "o.sqlite"), "run", "--until-empty", "--timeout", "5")
    assert run.returncode == 4
    line = one_error_line(run, "gilmsg-outbox")
    assert "--name NAME" in line and "one of: pub, r1" in line
    assert "relay_outbound" not in line and "pass name=<" not in line


def test_name_nobody_says_which_names_exist(bus):
    run = command(bus, "gilmsg-outbox", "--config-filename", str(bus.config_file), "--outbox",
                  str(bus.root / "o.sqlite"), "run", "--name", "nobody", "--until-empty",
                  "--timeout", "5")
    assert run.returncode == 4
    line = one_error_line(run, "gilmsg-outbox")
    assert "'nobody' is not an identity of this bus" in line
    assert "one of: pub, r1" in line and "add endpoints['nobody']" in line
    # the same rule for a publisher
    run = command(bus, "gilmsg-logger", "--config-filename", str(bus.config_file), "--name",
                  "nobody", "-r", "r1", "-m", "hello")
    assert run.returncode == 4
    assert "'nobody' is not an identity of this bus" in one_error_line(run, "gilmsg-logger")


@pytest.mark.parametrize("text, found", [
    ("endpoints = {}\n", "sets no 'config'"),
    ("config = [1, 2]\n", "sets 'config' to something other than a dict (list)"),
])
def test_config_file_without_config_dict_says_what_it_must_define(bus, text, found):
    path = bus.root / "broken.py"
    path.write_text(text)
    run = command(bus, "gilmsg-tail", "--config-filename", str(path), "--name", "r1",
                  "--count", "1")
    assert run.returncode == 4
    line = one_error_line(run, "gilmsg-tail")
    assert f"{path} {found}" in line and "config = dict(" in line
    assert ": 'config'" not in line  # the bare KeyError of before


# --- wall 5: bad input and rough edges -------------------------------------------------------


def test_ack_timeout_below_a_round_trip_is_refused(bus):
    with pytest.raises(gilmsg.InvalidInput, match="at least 0.001 seconds"):
        wire.check_timeout(1e-9)
    assert wire.check_timeout(wire.MIN_ACK_TIMEOUT) == 0.001
    run = command(bus, "gilmsg-logger", "--config-filename", str(bus.config_file), "--name",
                  "pub", "-r", "r1", "--ack-timeout", "1e-9", "-m", "hello")
    assert run.returncode == 2, run.stderr
    assert "at least 0.001 seconds" in run.stderr


def test_blank_recipient_is_refused_without_a_warning_first(bus, caplog):
    config = {**bus.config_for("pub"), "gilmsg.known_recipients": ["r1"]}
    with caplog.at_level(logging.WARNING), pytest.raises(gilmsg.InvalidInput,
                                                         match="non-empty string"):
        gilmsg.publish(topic="t", modname="m", msg={}, recipients=[""], **config)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("gilmsg")] == []


TYPO_SCRIPT = """
import logging, sys
if sys.argv[1] == "configured":
    logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
from gilmsg import groups
config = {"endpoints": {}, "gilmsg.known_recipients": ["recipient-a"]}
groups.resolve(["recipeint-a"], config)
"""


@pytest.mark.parametrize("mode, start", [
    ("plain", "gilmsg: warning: recipeint-a: "),
    ("configured", "WARNING gilmsg.groups recipeint-a: "),
])
def test_typo_warning_says_it_is_a_warning(mode, start):
    run = subprocess.run([sys.executable, "-c", TYPO_SCRIPT, mode], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), run.stderr
    assert lines[0].endswith("a typo?)"), run.stderr


def test_outbox_run_stopped_by_sigterm_prints_its_summary(bus):
    outbox = bus.root / "outbox.sqlite"
    # One message stored for r1, which is not running: it stays pending.
    stored = command(bus, "gilmsg-logger", "--config-filename", str(bus.config_file), "--name",
                     "pub", "--outbox", str(outbox), "-r", "r1", "--ack-timeout", "0.2", "-m",
                     "hello")
    assert stored.returncode == 7, stored.stderr
    runner = bus.spawn([str(BIN / "gilmsg-outbox"), "--config-filename", str(bus.config_file),
                        "--outbox", str(outbox), "run", "--name", "pub"])
    runner.wait_for(lambda line: line.startswith("sending "), timeout=TIMEOUT)
    runner.signal(signal.SIGTERM)
    assert runner.wait(TIMEOUT) == 143
    last = runner.stderr.splitlines()[-1]
    assert last.startswith("gilmsg-outbox: 0 delivered, 0 expired, "), runner.stderr
    assert last.endswith("attempts; 1 still pending"), runner.stderr
    assert "Traceback" not in runner.stderr

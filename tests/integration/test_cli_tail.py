"""gilmsg-tail: options and formats in-process (CliRunner), acknowledging with real processes.

The subprocess tests run the installed ``gilmsg-tail`` (through ``DevBus.spawn_tail`` where the
``--json`` line contract suits) and feed it with ``gilmsg-logger``; they wait on output lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gilmsg import config as gconfig
from gilmsg.commands import _common
from gilmsg.commands import tail as cli
from gilmsg.core import wire
from gilmsg.crypto import signing
from gilmsg.testing import DevBus, Process

LOGGER = str(Path(sys.executable).parent / "gilmsg-logger")
TAIL = str(Path(sys.executable).parent / "gilmsg-tail")


# --------------------------------------------------------------------------------------------
# in-process


@pytest.fixture(scope="module")
def quiet_bus(tmp_path_factory) -> Iterator[DevBus]:
    """Certificates and a config file; no process of it is started."""
    bus = DevBus(tmp_path_factory.mktemp("tail-cli"), ["pub", "r1", "nokey"])
    (bus.ssldir / "nokey.key").unlink()
    yield bus
    bus.close()


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args), prog_name="gilmsg-tail")


def test_help_shows_examples_and_exit_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output and "gilmsg-tail --name worker" in result.output
    codes = re.findall(r"^ +(\d+) +\S", result.output.split("Exit codes:")[1], re.M)
    assert codes == ["0", "1", "2", "4", "5", "6", "130"]  # 6: --dedup-file


def test_unknown_option_is_a_usage_error():
    result = invoke("--follow")
    assert result.exit_code == _common.EXIT_USAGE
    assert "No such option" in result.stderr


@pytest.mark.parametrize("args, fmt", [
    ((), None), (("--pretty",), "pretty"), (("--json", "--terse"), "terse"),
    (("--terse", "--format", "json"), "json"), (("--format", "line", "--pretty"), "pretty"),
])
def test_the_last_format_option_wins(args, fmt):
    # DevBus.spawn_tail passes --json first: spawn_tail("r1", "--terse") gives terse lines.
    assert cli.main.make_context("gilmsg-tail", list(args)).params["fmt"] == fmt


def test_missing_config_file_is_exit_4(tmp_path):
    result = invoke("--config-filename", str(tmp_path / "nope.py"), "--name", "r1")
    assert result.exit_code == _common.EXIT_CONFIG
    assert result.stderr.startswith("gilmsg-tail: error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_no_identity_suggests_name_or_no_ack(quiet_bus):
    result = invoke("--config-filename", str(quiet_bus.config_file))
    assert result.exit_code == _common.EXIT_CONFIG
    assert "pass --name NAME (one of: nokey, pub, r1), or --no-ack" in result.stderr


def test_missing_key_is_exit_4(quiet_bus):
    result = invoke("--config-filename", str(quiet_bus.config_file), "--name", "nokey")
    assert result.exit_code == _common.EXIT_CONFIG
    assert "nokey.key" in result.stderr and result.stderr.count("\n") == 1


@pytest.fixture(scope="module")
def sample(quiet_bus) -> tuple[str, dict, str, dict]:
    """A signed gilmsg message from pub and r1's signed ACK of it."""
    cfg = quiet_bus.config_for("pub")
    topic = gconfig.full_topic(cfg, "log", "logger")
    env = signing.signer_for(cfg).sign(
        wire.new_envelope(topic, {"log": "disk  full\non db1"}, 1, ["r1"], now=0))
    r1 = quiet_bus.config_for("r1")
    ack_topic = gconfig.ack_topic(r1)
    ack = signing.signer_for(r1).sign(
        wire.new_envelope(ack_topic, wire.ack_body(env), 1, now=0))
    return topic, env, ack_topic, ack


def test_line_format(sample):
    topic, env, ack_topic, ack = sample
    assert cli.format_line(topic, env) == (
        f'{topic} {env["msg_id"]} {{"log": "disk  full\\non db1"}}')
    assert cli.format_line(ack_topic, ack, is_ack=True) == (
        f"{ack_topic} {ack['msg_id']} ACK received of {env['msg_id']} from r1")


def test_json_format_is_one_line_without_credentials_unless_asked(sample):
    topic, env, _, _ = sample
    text = cli.format_json(topic, env)
    bare = {k: v for k, v in env.items() if k not in ("signature", "certificate")}
    assert "\n" not in text and json.loads(text) == bare and bare != env
    whole = cli.format_json(topic, env, credentials=True)
    assert "\n" not in whole and json.loads(whole) == env


def test_really_pretty_is_pretty_in_colour_and_credentials_is_a_flag():
    params = cli.main.make_context("gilmsg-tail", ["--really-pretty", "--credentials"]).params
    assert params["fmt"] == "really-pretty" and params["credentials"] is True
    assert cli.main.make_context("gilmsg-tail", ["--json"]).params["credentials"] is False


def test_terse_format(sample):
    topic, env, ack_topic, ack = sample
    assert re.fullmatch(rf"\d\d:\d\d:\d\d {re.escape(topic)} disk full on db1",
                        cli.format_terse(topic, env))
    assert cli.format_terse(ack_topic, ack, is_ack=True).endswith(f"of {env['msg_id']} from r1")
    long = dict(env, msg={"x": "y" * 500})
    assert len(cli.format_terse(topic, long, width=40).split(" ", 2)[2]) == 40


def test_pretty_format_drops_credentials_and_colours_only_when_asked(sample):
    topic, env, ack_topic, ack = sample
    plain = cli.format_pretty(topic, env)
    shown = json.loads(plain)
    assert "signature" not in shown and "certificate" not in shown
    assert shown["msg"] == env["msg"] and "\x1b[" not in plain
    assert "\x1b[" in cli.format_pretty(topic, env, color=True)
    assert json.loads(cli.format_pretty(ack_topic, ack, is_ack=True))["signed_by"] == "r1"


def test_colour_only_on_a_terminal(monkeypatch):
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd) as _, os.fdopen(write_fd, "w") as pipe:
        monkeypatch.delenv("NO_COLOR", raising=False)
        assert cli.use_color(None, pipe) is False
        assert cli.use_color(True, pipe) is True

        class Tty:
            def isatty(self) -> bool:
                return True

        assert cli.use_color(None, Tty()) is True
        assert cli.use_color(False, Tty()) is False
        monkeypatch.setenv("NO_COLOR", "1")
        assert cli.use_color(None, Tty()) is False


# --------------------------------------------------------------------------------------------
# real processes on a DevBus


def publish(bus: DevBus, *lines: str, recipients: str = "r1", timeout: str = "30",
            keep_open: bool = False) -> Process:
    """Run gilmsg-logger as ``pub`` with --json-report, one message per line."""
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--name", "pub",
                      "--recipients", recipients, "--ack-timeout", timeout, "--json-report"],
                     stdin=subprocess.PIPE)
    proc.proc.stdin.write("".join(f"{line}\n" for line in lines))
    proc.proc.stdin.flush()
    if not keep_open:
        proc.proc.stdin.close()
    return proc


def msg_ids(proc: Process, n: int) -> list[str]:
    return [json.loads(proc.next_line())["msg_id"] for _ in range(n)]


def test_acknowledges_and_prints_each_message_once(make_bus):
    bus = make_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1", "--show-acks")  # prints the ACKs it sends: one per copy it got
    first = publish(bus, "one")
    sent = msg_ids(first, 1)
    assert first.wait() == 0, first.stderr  # r1 is up, acknowledging and heard by the logger
    # Nobody answers as "absent": "two" is re-sent to r1 until the timeout. r1 acknowledges
    # every copy and prints the message once.
    second = publish(bus, "two", recipients="r1 absent", timeout="1")
    [report] = [json.loads(second.next_line())]
    sent.append(report["msg_id"])
    assert second.wait() == _common.EXIT_NOT_ACKNOWLEDGED, second.stderr
    assert list(report["acked"]) == ["r1"] and report["missing"] == ["absent"]
    third = publish(bus, "three")
    sent += msg_ids(third, 1)
    assert third.wait() == 0, third.stderr
    envelopes = [json.loads(tail.wait_for(lambda line: "gilmsg.ack" not in line))
                 for _ in range(3)]  # after "three", r1 acknowledged no more copies of "two"
    tail.signal(signal.SIGINT)
    assert tail.wait() == _common.EXIT_INTERRUPTED
    assert "Traceback" not in tail.stderr
    while not tail.lines.empty():
        tail.next_line()
    shown = [json.loads(line) for line in tail.seen]
    messages = [e for e in shown if not e["topic"].endswith(".gilmsg.ack")]
    assert messages == envelopes
    assert [e["msg_id"] for e in messages] == sent
    assert [e["msg"]["log"] for e in messages] == ["one", "two", "three"]
    copies = [e for e in shown if e["topic"].endswith(".gilmsg.ack")
              and e["msg"]["ack_msg_id"] == sent[1]]
    assert len(copies) > 1, "r1 was never sent the same message twice"


def test_no_ack_watches_without_acknowledging(make_bus):
    bus = make_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1", "--no-ack")
    proc = publish(bus, "are you there?", timeout="60")
    # The tail prints the message (re-sent until it connected) but sends no ACK: the logger is
    # still waiting when it is interrupted.
    assert json.loads(tail.next_line())["msg"] == {"log": "are you there?"}
    proc.signal(signal.SIGINT)
    report = json.loads(proc.next_line())
    assert proc.wait() == _common.EXIT_INTERRUPTED
    assert report["status"] == "not_acknowledged" and report["missing"] == ["r1"]


def test_show_acks_prints_ack_traffic(make_bus):
    bus = make_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1", "--show-acks")
    # Two messages: the tail hears its own ACKs once its SUB has joined its own publisher, which
    # it surely has by the second one.
    proc = publish(bus, "ack me", "and me")
    sent = msg_ids(proc, 2)
    assert proc.wait() == 0, proc.stderr
    assert json.loads(tail.next_line())["msg_id"] == sent[0]
    ack = json.loads(tail.wait_for(lambda line: "gilmsg.ack" in line))
    assert ack["topic"] == "org.gilmsg.test.gilmsg.ack"
    assert ack["msg"]["ack_msg_id"] in sent and "gilmsg_version" not in ack


def test_exec_runs_a_command_per_message_and_count_stops(make_bus):
    bus = make_bus(["pub", "r1"])
    command = ('read -r env; printf "%s %s %s\\n" "$GILMSG_TOPIC" "$GILMSG_MSG_ID" "$env"; '
               'case "$env" in *good*) exit 0;; *) exit 3;; esac')
    tail = bus.spawn([TAIL, "--config-filename", str(bus.config_file), "--name", "r1",
                      "--exec", command, "--count", "2"])
    proc = publish(bus, "good", "bad")  # one run: see test_pretty_on_a_pipe_has_no_colour
    sent = msg_ids(proc, 2)
    assert proc.wait() == 0, proc.stderr  # ACKs do not depend on the command's outcome
    for msg_id, word in zip(sent, ("good", "bad"), strict=True):
        topic, got_id, env = tail.next_line().split(" ", 2)
        assert (topic, got_id) == ("org.gilmsg.test.logger.log", msg_id)
        assert json.loads(env)["msg"] == {"log": word}
    assert tail.wait() == _common.EXIT_NOT_ACKNOWLEDGED  # --count reached, one command failed
    assert f"--exec command failed (exit status 3) for {sent[1]}" in tail.stderr
    assert "good" not in tail.stderr


def test_sigterm_stops_cleanly(make_bus):
    bus = make_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1", "--terse")
    proc = publish(bus, "hello")
    assert proc.wait() == 0, proc.stderr
    assert tail.next_line().endswith("org.gilmsg.test.logger.log hello")
    tail.signal(signal.SIGTERM)
    assert tail.wait() == 128 + signal.SIGTERM
    assert tail.stderr == ""


def test_pretty_on_a_pipe_has_no_colour(make_bus):
    bus = make_bus(["pub", "r1"])
    tail = bus.spawn([TAIL, "--config-filename", str(bus.config_file), "--name", "r1",
                      "--pretty", "--count", "2"])
    # Two messages in one logger run: r1's ACK of the first proves the logger hears r1, so the
    # ACK of the second (after which the tail exits) cannot be lost to a late connection.
    proc = publish(bus, "first", "pretty")
    assert proc.wait() == 0, proc.stderr
    assert tail.wait() == 0, tail.stderr
    text = "\n".join(tail.lines.get_nowait() for _ in range(tail.lines.qsize()))
    assert "\x1b[" not in text
    decoder, shown, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        obj, pos = decoder.raw_decode(text, pos)
        shown.append(obj["msg"]["log"])
        pos += 1
    assert shown == ["first", "pretty"]


@pytest.mark.parametrize("stamp", [1e20, float("nan"), float("inf"), -1e20, True, "x", None])
def test_timestamps_that_are_not_times_do_not_crash_the_formats(stamp):
    assert cli.local_time(stamp, "%H:%M:%S") is None
    envelope = {"topic": "t", "msg_id": "m", "msg": {"log": "x"}, "timestamp": stamp}
    assert "--:--:--" in cli.format_terse("t", envelope)
    assert '"timestamp"' in cli.format_pretty("t", envelope)


def test_json_leaves_credentials_out_and_really_pretty_colours_a_pipe(make_bus):
    bus = make_bus(["pub", "r1", "r2"])
    base = [TAIL, "--config-filename", str(bus.config_file)]
    plain = bus.spawn([*base, "--name", "r1", "--json"])
    fancy = bus.spawn([*base, "--name", "r2", "--really-pretty"])
    # Both acknowledged before the logger exits 0, so both print the message (no --count: a
    # tail that exits right after its ACK may leave before the publisher listens to it).
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--name", "pub",
                      "--recipients", "r1 r2", "--ack-timeout", "20", "--message", "hi"])
    assert proc.wait(30) == 0, proc.stderr
    shown = json.loads(plain.next_line())
    assert shown["msg"] == {"log": "hi"} and shown["crypto"] == "x509"
    assert "signature" not in shown and "certificate" not in shown
    text = fancy.wait_for(lambda line: "\x1b[" in line and '"hi"' in line)
    assert "hi" in text

"""gilmsg-logger: option parsing and messages in-process (CliRunner), delivery with real processes.

The subprocess tests run the installed ``gilmsg-logger`` and ``gilmsg-tail`` on a DevBus (real
certificates, sockets on 127.0.0.1 with free ports). They synchronise on output lines only; ACK
timeouts are long where delivery is expected and short only where a timeout is the point.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gilmsg.commands import _common, _input, _publishing, _results, _setup
from gilmsg.commands import logger as cli
from gilmsg.testing import DevBus, Process, free_port

LOGGER = str(Path(sys.executable).parent / "gilmsg-logger")
OK_TIMEOUT = "30"  # delivery expected: recipients may still be starting (~1 s)


# --------------------------------------------------------------------------------------------
# in-process: parsing, messages, exit codes (no socket is opened by these)


@pytest.fixture(scope="module")
def quiet_bus(tmp_path_factory) -> Iterator[DevBus]:
    """A bus whose processes are never started: certificates and a config file only."""
    bus = DevBus(tmp_path_factory.mktemp("logger-cli"), ["pub", "r1", "nokey"])
    (bus.ssldir / "nokey.key").unlink()
    yield bus
    bus.close()


def invoke(*args: str, input: str | bytes | None = None):
    return CliRunner().invoke(cli.main, list(args), input=input, prog_name="gilmsg-logger")


def cfg_args(bus: DevBus, name: str = "pub") -> list[str]:
    return ["--config-filename", str(bus.config_file), "--name", name]


def test_help_shows_examples_and_exit_codes():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output and "gilmsg-logger --recipients" in result.output
    codes = re.findall(r"^ +(\d+) +\S", result.output.split("Exit codes:")[1], re.M)
    assert codes == ["0", "1", "2", "3", "4", "5", "6", "7", "130"]


def test_unknown_option_is_a_usage_error():
    result = invoke("--recipient", "a")
    assert result.exit_code == _common.EXIT_USAGE == 2
    assert "No such option" in result.stderr


@pytest.mark.parametrize("value", ["", "  ", "a,,b", "a,", ",a"])
def test_empty_recipient_name_is_a_usage_error(value):
    result = invoke("--recipients", value, "--message", "hi")
    assert result.exit_code == _common.EXIT_USAGE
    assert "empty recipient name" in result.stderr
    assert "Traceback" not in result.output


def test_recipients_are_repeatable_and_space_or_comma_separated():
    assert _setup.split_recipients(["a", "b c", "d,e", " f , g ", "a"]) == (
        "a", "b", "c", "d", "e", "f", "g")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_bad_ack_timeout_is_a_usage_error(value):
    result = invoke("--recipients", "a", "--ack-timeout", value, "--message", "hi")
    assert result.exit_code == _common.EXIT_USAGE
    assert "--ack-timeout" in result.stderr


def test_missing_config_file_is_one_line_and_exit_4(tmp_path):
    result = invoke("--config-filename", str(tmp_path / "nope.py"), "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG == 4
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("gilmsg-logger: error: ")
    assert "nope.py" in result.stderr and "Traceback" not in result.stderr


def test_broken_config_file_is_exit_4(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("config = {\n")
    result = invoke("--config-filename", str(path), "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG
    assert "broken.py" in result.stderr and "Traceback" not in result.stderr


def test_missing_certificate_is_exit_4(quiet_bus):
    result = invoke(*cfg_args(quiet_bus, "nokey"), "-r", "r1", "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG
    assert "nokey.key" in result.stderr and "gilmsg-certs" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def config_with(bus: DevBus, path: Path, **keys: object) -> Path:
    """A config file: ``bus``'s, with ``keys`` (dotted names) set over it."""
    lines = [f"exec(open({str(bus.config_file)!r}).read())"]
    lines += [f"config[{key.replace('__', '.')!r}] = {value!r}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_misspelt_gilmsg_key_is_a_warning_or_in_strict_mode_exit_4(quiet_bus, tmp_path):
    typo = config_with(quiet_bus, tmp_path / "typo.py", gilmsg__strict_recipents=True)
    result = invoke("--config-filename", str(typo), "--name", "nokey", "-r", "r1",
                    "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG  # nokey has no key: stops before sending
    assert ("unknown config key 'gilmsg.strict_recipents' (did you mean "
            "'gilmsg.strict_recipients'?)") in result.stderr
    strict = config_with(quiet_bus, tmp_path / "strict.py", gilmsg__strict_recipents=True,
                         gilmsg__strict_config=True)
    result = invoke("--config-filename", str(strict), "--name", "pub", "-r", "r1",
                    "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG == 4
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("gilmsg-logger: error: unknown config key "
                                    "'gilmsg.strict_recipents' (did you mean")


def test_unknown_name_is_exit_4(quiet_bus):
    result = invoke(*cfg_args(quiet_bus, "ghost"), "-r", "r1", "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG
    assert "endpoints['ghost']" in result.stderr


def test_no_name_and_no_relay_says_what_to_pass(quiet_bus):
    result = invoke("--config-filename", str(quiet_bus.config_file), "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG
    assert "--name NAME (one of: nokey, pub, r1)" in result.stderr


def test_endpoint_in_use_stops_at_the_first_message_with_exit_4(quiet_bus):
    [endpoint] = quiet_bus.config["endpoints"]["pub"]
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = invoke(*cfg_args(quiet_bus), "-r", "r1", "--json-report", input="a\nb\n")
    assert result.exit_code == _common.EXIT_CONFIG
    [report] = [json.loads(line) for line in result.stdout.splitlines()]
    assert report["status"] == "failed" and "cannot bind" in report["error"]
    assert "pass another --name" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "gilmsg-logger: stopped: 1 failed; input after line 1 was not read")


def test_without_name_the_relay_identity_is_checked_first(quiet_bus, tmp_path):
    path = tmp_path / "relay.py"
    path.write_text("config = " + repr({**quiet_bus.config,
                                        "relay_inbound": "tcp://127.0.0.1:9"}) + "\n")
    result = invoke("--config-filename", str(path), "-r", "r1", "--message", "hi")
    assert result.exit_code == _common.EXIT_CONFIG
    assert "certnames['shell." in result.stderr
    assert "pass --name NAME (one of: nokey, pub, r1)" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("stdin", ["", "\n  \n\n"])
def test_empty_stdin_is_bad_input(quiet_bus, stdin):
    result = invoke(*cfg_args(quiet_bus), "-r", "r1", input=stdin)
    assert result.exit_code == _common.EXIT_BAD_INPUT == 3
    assert "no input" in result.stderr


def test_empty_message_is_bad_input(quiet_bus):
    result = invoke(*cfg_args(quiet_bus), "-r", "r1", "--message", " ")
    assert result.exit_code == _common.EXIT_BAD_INPUT
    assert "--message is empty" in result.stderr


def test_invalid_json_lines_are_reported_with_their_line_number(quiet_bus):
    result = invoke(*cfg_args(quiet_bus), "-r", "r1", "--json-input", "--json-report",
                    input="{oops\n\n[1,\n")
    assert result.exit_code == _common.EXIT_BAD_INPUT
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["line"], r["status"]) for r in reports] == [(1, "invalid"), (3, "invalid")]
    assert "line 1: not sent: invalid JSON" in result.stderr
    assert "line 3: not sent: invalid JSON" in result.stderr
    assert "2 invalid" in result.stderr


def test_read_items_numbers_lines_and_skips_blank_ones():
    stream = io.BytesIO(b"first\n\n  \n{\"a\": 1}\n\xff\n")
    items = list(_input.read_items(None, False, stream))
    assert [(i.line, i.body, i.problem) for i in items[:2]] == [
        (1, {"log": "first"}, None), (4, {"log": '{"a": 1}'}, None)]
    assert items[2].line == 5 and "UTF-8" in items[2].problem
    stream = io.BytesIO(b'{"a": 1}\n"text"\n')
    assert [i.body for i in _input.read_items(None, True, stream)] == [{"a": 1}, "text"]
    [item] = _input.read_items('{"b": 2}', True, io.BytesIO(b"ignored\n"))
    assert (item.line, item.body) == (None, {"b": 2})


def test_deeply_nested_json_is_a_bad_line_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000
    items = list(_input.read_items(None, True, io.BytesIO(deep + b'\n{"ok": 1}\n')))
    assert items[0].line == 1 and "invalid JSON" in items[0].problem
    assert items[1].body == {"ok": 1}


def test_exit_code_precedence():
    def session(*statuses: str) -> _publishing.Session:
        s = _publishing.Session({}, "t", "m", ("r1",), 1.0, quiet=True, json_report=False)
        s.results = [_results.Result(n, st) for n, st in enumerate(statuses, 1)]
        return s

    assert session(_results.DELIVERED, _results.SENT).exit_code(None) == 0
    assert session(_results.DELIVERED, _results.INVALID).exit_code(None) == 3
    assert session(_results.INVALID, _results.NOT_ACKNOWLEDGED).exit_code(None) == 1
    assert session(_results.DELIVERED).exit_code(_common.Interrupted(signal.SIGTERM)) == 143
    assert session(_results.DELIVERED).exit_code(KeyboardInterrupt()) == 130


# --------------------------------------------------------------------------------------------
# real processes on a DevBus


def spawn_logger(bus: DevBus, *args: str, stdin: str | None = None,
                 keep_open: bool = False) -> Process:
    """Start gilmsg-logger (config of ``bus``, --json-report); write ``stdin`` to it."""
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--json-report", *args],
                     stdin=subprocess.PIPE)
    if stdin:
        proc.proc.stdin.write(stdin)
        proc.proc.stdin.flush()
    if not keep_open:
        proc.proc.stdin.close()
    return proc


def reports(proc: Process, n: int) -> list[dict]:
    return [json.loads(proc.next_line()) for _ in range(n)]


def test_delivers_a_stream_to_every_recipient(make_bus):
    bus = make_bus(["pub", "r1", "r2"])
    tails = [bus.spawn_tail("r1"), bus.spawn_tail("r2")]
    proc = spawn_logger(bus, "--name", "pub", "--recipients", "r1", "--recipients", "r2",
                        "--ack-timeout", OK_TIMEOUT, "--json-input",
                        stdin='{"n": 1}\n{"n": 2}\n\n{"n": 3}\n')
    results = reports(proc, 3)
    assert proc.wait() == 0, proc.stderr
    assert [(r["line"], r["status"]) for r in results] == [
        (1, "delivered"), (2, "delivered"), (4, "delivered")]
    assert all(set(r["acked"]) == {"r1", "r2"} and r["missing"] == [] for r in results)
    assert all(r["topic"] == "org.gilmsg.test.logger.log" for r in results)
    for tail in tails:
        got = [json.loads(tail.next_line()) for _ in range(3)]
        assert [(e["msg_id"], e["msg"]) for e in got] == [
            (r["msg_id"], {"n": n}) for r, n in zip(results, (1, 2, 3), strict=True)]
    assert "line 4: delivered, acknowledged by r1" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "gilmsg-logger: 3 delivered"


def test_timeout_when_nobody_acknowledges(make_bus):
    bus = make_bus(["pub", "r1"])
    proc = spawn_logger(bus, "--name", "pub", "-r", "r1", "--ack-timeout", "0.5",
                        "--message", "anyone?")
    [result] = reports(proc, 1)
    assert proc.wait() == _common.EXIT_NOT_ACKNOWLEDGED == 1
    assert result["status"] == "not_acknowledged" and result["line"] is None
    assert result["missing"] == ["r1"] and result["acked"] == {}
    assert "message: NOT acknowledged by r1: no ACK within 0.5s" in proc.stderr


def test_partial_delivery_names_who_acknowledged(make_bus):
    bus = make_bus(["pub", "r1", "r2"])
    bus.spawn_tail("r1")
    warm = spawn_logger(bus, "--name", "pub", "-r", "r1", "--ack-timeout", OK_TIMEOUT,
                        "--message", "are you up?")
    assert warm.wait() == 0, warm.stderr  # r1 is up and acknowledging; r2 never starts
    proc = spawn_logger(bus, "--name", "pub", "--recipients", "r1 r2", "--ack-timeout", "3",
                        stdin="half of it\n")
    [result] = reports(proc, 1)
    assert proc.wait() == _common.EXIT_NOT_ACKNOWLEDGED, proc.stderr
    assert result["status"] == "not_acknowledged"
    assert list(result["acked"]) == ["r1"] and result["missing"] == ["r2"]
    assert ("line 1: NOT acknowledged by r2: no ACK within 3s; r2: subscribed, no ACK "
            "(acknowledged by: r1)") in proc.stderr  # r1's tail subscribes to everything
    assert proc.stderr.splitlines()[-1] == "gilmsg-logger: 1 not acknowledged"


def test_invalid_json_line_is_reported_and_the_others_are_sent(make_bus):
    bus = make_bus(["pub", "r1"])
    tail = bus.spawn_tail("r1")
    proc = spawn_logger(bus, "--name", "pub", "-r", "r1", "--ack-timeout", OK_TIMEOUT,
                        "--json-input", stdin='{"n": 1}\n{"n": oops}\n{"n": 3}\n')
    results = reports(proc, 3)
    assert proc.wait() == _common.EXIT_BAD_INPUT, proc.stderr
    assert [(r["line"], r["status"]) for r in results] == [
        (1, "delivered"), (2, "invalid"), (3, "delivered")]
    assert "line 2: not sent: invalid JSON" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "gilmsg-logger: 2 delivered, 1 invalid"
    assert [json.loads(tail.next_line())["msg"] for _ in range(2)] == [{"n": 1}, {"n": 3}]


def test_without_recipients_it_says_delivery_is_not_confirmed(make_bus):
    bus = make_bus(["pub", "watcher"])
    watcher = bus.spawn_tail("watcher", "--no-ack")
    proc = spawn_logger(bus, "--name", "pub", "--ack-timeout", OK_TIMEOUT,
                        "--message", "fire and forget")
    [result] = reports(proc, 1)
    assert proc.wait() == 0, proc.stderr
    assert result["status"] == "sent" and result["msg_id"]
    assert "delivery is not confirmed" in proc.stderr
    assert "message: sent, delivery not confirmed (no --recipients)" in proc.stderr
    assert json.loads(watcher.next_line())["msg_id"] == result["msg_id"]


def test_without_recipients_and_nobody_subscribed_nothing_is_reported_sent(make_bus):
    bus = make_bus(["pub"])
    proc = spawn_logger(bus, "--name", "pub", "--ack-timeout", "0.5", stdin="one\ntwo\n")
    results = reports(proc, 2)
    assert proc.wait() == _common.EXIT_NOT_ACKNOWLEDGED, proc.stderr
    assert [r["status"] for r in results] == ["not_sent", "not_sent"]
    assert "line 1: not sent: nobody subscribed to org.gilmsg.test.logger.log" in proc.stderr
    assert proc.stderr.splitlines()[-1] == "gilmsg-logger: 2 not sent"


def test_active_mode_without_recipients_and_no_relay_is_not_reported_sent(make_bus):
    bus = make_bus(["pub"])
    inbound, _ = with_relay_config(bus)  # but no relay runs: fedmsg-logger would exit 0 here
    proc = spawn_logger(bus, "--active", "--name", "pub", "--ack-timeout", "0.5",
                        "--message", "into the void")
    [result] = reports(proc, 1)
    assert proc.wait() == _common.EXIT_NOT_ACKNOWLEDGED, proc.stderr
    assert result["status"] == "not_sent"
    assert f"no fedmsg-relay connected at {inbound} within 0.5s" in proc.stderr


def test_sigint_while_reading_stdin_reports_what_was_delivered(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    proc = spawn_logger(bus, "--name", "pub", "-r", "r1", "--ack-timeout", OK_TIMEOUT,
                        stdin="first\n", keep_open=True)
    [first] = reports(proc, 1)
    assert first["status"] == "delivered"
    proc.signal(signal.SIGINT)  # the logger now waits for line 2 on its stdin
    assert proc.wait() == _common.EXIT_INTERRUPTED == 130
    assert proc.stderr.splitlines()[-1] == (
        "gilmsg-logger: interrupted (SIGINT): 1 delivered; input after line 1 was not read")
    assert "Traceback" not in proc.stderr


def test_sigint_while_waiting_for_acks_reports_the_message_in_flight(make_bus):
    bus = make_bus(["pub", "r1", "watcher"])
    r1 = bus.spawn_tail("r1")
    watcher = bus.spawn_tail("watcher", "--no-ack")
    proc = spawn_logger(bus, "--name", "pub", "-r", "r1", "--ack-timeout", "60",
                        stdin="first\n", keep_open=True)
    [first] = reports(proc, 1)
    assert first["status"] == "delivered"
    r1.stop()  # nobody will acknowledge line 2
    proc.proc.stdin.write("second\nthird\n")
    proc.proc.stdin.flush()
    watcher.wait_for(lambda line: json.loads(line)["msg"] == {"log": "second"})
    proc.signal(signal.SIGINT)  # line 2 has been sent (the watcher saw it): no ACK can come
    [second] = reports(proc, 1)
    assert proc.wait() == _common.EXIT_INTERRUPTED, proc.stderr
    assert second["line"] == 2 and second["status"] == "not_acknowledged"
    assert second["missing"] == ["r1"] and "interrupted" in second["error"]
    assert proc.stderr.splitlines()[-1] == (
        "gilmsg-logger: interrupted (SIGINT): 1 delivered, 1 not acknowledged; "
        "input after line 2 was not read")
    assert "Traceback" not in proc.stderr


def test_sigterm_stops_like_sigint(make_bus):
    bus = make_bus(["pub", "watcher"])
    bus.spawn_tail("watcher", "--no-ack")
    proc = spawn_logger(bus, "--name", "pub", "--ack-timeout", OK_TIMEOUT, stdin="first\n",
                        keep_open=True)
    [first] = reports(proc, 1)
    assert first["status"] == "sent"
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 128 + signal.SIGTERM
    assert proc.stderr.splitlines()[-1] == (
        "gilmsg-logger: interrupted (SIGTERM): 1 sent (not confirmed); "
        "input after line 1 was not read")


def with_relay_config(bus: DevBus) -> tuple[str, str]:
    inbound = f"tcp://127.0.0.1:{free_port()}"
    outbound = f"tcp://127.0.0.1:{free_port()}"
    bus.config["relay_inbound"] = inbound
    bus.config["endpoints"]["relay_outbound"] = [outbound]
    bus.write_config()
    return inbound, outbound


def test_active_mode_without_a_relay_is_never_reported_as_delivered(make_bus):
    bus = make_bus(["pub", "r1"])
    with_relay_config(bus)  # but no relay runs: fedmsg-logger would exit 0 here
    proc = spawn_logger(bus, "--active", "--name", "pub", "-r", "r1", "--ack-timeout", "1",
                        "--message", "into the void")
    [result] = reports(proc, 1)
    assert proc.wait() == _common.EXIT_NOT_ACKNOWLEDGED
    assert result["status"] == "not_acknowledged" and result["missing"] == ["r1"]


def test_active_mode_delivers_through_a_real_fedmsg_relay(make_bus):
    bus = make_bus(["pub", "r1"])
    with_relay_config(bus)
    relay = bus.spawn([str(Path(sys.executable).parent / "fedmsg-relay"),
                       "--config-filename", str(bus.config_file)])
    tail = bus.spawn_tail("r1")
    proc = spawn_logger(bus, "--active", "--name", "pub", "-r", "r1",
                        "--ack-timeout", OK_TIMEOUT, "--message", "via the relay")
    [result] = reports(proc, 1)
    assert proc.wait() == 0, proc.stderr
    assert result["status"] == "delivered" and list(result["acked"]) == ["r1"]
    assert json.loads(tail.next_line())["msg_id"] == result["msg_id"]
    assert relay.proc.poll() is None, relay.stderr


def test_config_filename_replaces_the_search_of_fedmsg_d(make_bus):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")
    # A broken file where fedmsg would look (./fedmsg.d of the working directory).
    (bus.root / "fedmsg.d" / "zz_broken.py").write_text("config = {\n")
    proc = spawn_logger(bus, "--name", "pub", "--recipients", "r1", "--ack-timeout", OK_TIMEOUT,
                        stdin="hello\n")
    assert reports(proc, 1)[0]["status"] == "delivered"
    assert proc.wait() == 0, proc.stderr

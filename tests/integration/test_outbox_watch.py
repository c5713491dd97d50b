"""Loud when nothing will deliver: an outbox nobody runs is said so, once, with the command.

Real processes: gilmsg-logger --outbox, gilmsg-outbox run and stats, on a DevBus; the runner
and check tests once per backend (``store_location``: an SQLite file, a database of a real
PostgreSQL server).
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import time
from pathlib import Path

from gilmsg.commands import _common
from gilmsg.outbox import Outbox
from gilmsg.outbox.postgres import redact

BIN = Path(sys.executable).parent
#: Bound on waiting for a started runner's first recorded activity.
RUNNER_TIMEOUT = 30.0


def logger(bus, path: Path, text: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "gilmsg-logger"), "--config-filename", str(bus.config_file), "--name", "pub",
         "--outbox", str(path), "-r", "r1", "--ack-timeout", "0.2"], input=text,
        capture_output=True, text=True, timeout=60, cwd=bus.root, env=bus.env())


def stats(bus, path: Path) -> dict:
    run = subprocess.run([str(BIN / "gilmsg-outbox"), "--outbox", str(path), "stats", "--json"],
                         capture_output=True, text=True, timeout=60, cwd=bus.root,
                         env=bus.env())
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_logger_warns_once_while_no_runner_runs_and_stats_shows_the_last_one(make_bus,
                                                                            store_location):
    bus = make_bus(["pub", "r1", "runner"])
    path = store_location()
    stored = logger(bus, path, "one\ntwo\n")
    assert stored.returncode == _common.EXIT_STORED, stored.stderr
    warnings = [line for line in stored.stderr.splitlines() if "no outbox runner" in line]
    assert len(warnings) == 1, stored.stderr  # once, for two messages
    shown = shlex.quote(redact(path))  # an SQLite path as it is, a URL without its password
    assert "(never)" in warnings[0] and f"gilmsg-outbox --outbox {shown} run" in warnings[0]
    assert stats(bus, path)["last_runner"] is None
    assert "still owed to r1 (no ACK within 0.2s; r1: no subscriber connected;" in stored.stderr

    runner = bus.spawn([str(BIN / "gilmsg-outbox"), "--outbox", str(path), "--config-filename",
                        str(bus.config_file), "run", "--name", "runner"])
    deadline = time.monotonic() + RUNNER_TIMEOUT
    while (seen := stats(bus, path))["last_runner"] is None:  # its first step records it
        assert time.monotonic() < deadline and runner.proc.poll() is None, runner.stderr
    assert seen["last_runner_age"] >= 0 and f":{runner.proc.pid}:" in seen["last_runner"]

    again = logger(bus, path, "three\n")
    assert again.returncode == _common.EXIT_STORED, again.stderr
    assert "no outbox runner" not in again.stderr


def test_outbox_publish_warns_once_with_the_command(make_bus, tmp_path, caplog):
    bus = make_bus(["pub", "r1"])
    path = tmp_path / "outbox.db"
    caplog.set_level(logging.WARNING, logger="gilmsg.outbox")
    with Outbox(path, **bus.config_for("pub")) as outbox:
        for n in range(2):
            outbox.publish_async("t", {"n": n}, modname="watchtest", recipients=["r1"],
                                 ack_timeout=0.1)
    said = [r.getMessage() for r in caplog.records if "no outbox runner" in r.getMessage()]
    assert len(said) == 1 and f"gilmsg-outbox --outbox {path} run" in said[0]


def check(bus, path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gilmsg-outbox"), "--outbox", str(path), "check", *args],
                          capture_output=True, text=True, timeout=60, cwd=bus.root,
                          env=bus.env())


def test_check_thresholds_outputs_and_exit_codes(make_bus, tmp_path, store_location):
    from prometheus_client.parser import text_string_to_metric_families

    bus = make_bus(["pub", "r1"])
    path = store_location()
    assert logger(bus, path, "one\ntwo\n").returncode == _common.EXIT_STORED

    ok = check(bus, path, "--pending-warning", "3", "--oldest-critical", "3600")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("GILMSG_OUTBOX OK - pending 2, oldest pending ")
    assert "| pending=2;3; oldest_pending=" in ok.stdout and ok.stdout.endswith(";;3600\n")

    warn = check(bus, path, "--pending-warning", "2", "--pending-critical", "5")
    assert warn.returncode == 1 and warn.stdout.startswith(
        "GILMSG_OUTBOX WARNING - pending 2 >= 2 ("), warn.stdout

    crit = check(bus, path, "--json", "--pending-warning", "1", "--oldest-critical", "0")
    assert crit.returncode == 2, crit.stdout
    report = json.loads(crit.stdout)
    assert report["status"] == "CRITICAL" and report["backlog"] == {"r1": 2}
    assert report["measures"]["pending"] == {"value": 2, "unit": "", "warning": 1,
                                             "critical": None}
    assert len(report["reasons"]) == 2

    prom = check(bus, path, "--prometheus", "--pending-critical", "10")
    assert prom.returncode == 0
    got = {(s.name, tuple(s.labels.items())): s.value
           for f in text_string_to_metric_families(prom.stdout) for s in f.samples}
    assert got[("gilmsg_outbox_pending", (("recipient", "r1"),))] == 2
    assert got[("gilmsg_outbox_check_status", ())] == 0
    assert got[("gilmsg_outbox_oldest_pending_seconds", ())] > 0

    missing = check(bus, tmp_path / "nope.db")
    assert missing.returncode == 3 and missing.stdout.startswith("GILMSG_OUTBOX UNKNOWN - ")
    bad = check(bus, path, "--oldest-warning", "60", "--oldest-critical", "10")
    assert bad.returncode == 2 and "above --oldest-critical" in bad.stderr

"""The durable outbox with real processes: publishers killed, recipients late, runners racing.

Every process is real (gilmsg-logger, gilmsg-tail, gilmsg-outbox, fedmsg-hub, a publisher
script), on 127.0.0.1 with free ports and the bus's own certificates. "Consumed once" is proven
with a barrier: after the runner is done, a plain acknowledged publish to the same recipient
must be the very next thing it prints.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gilmsg
from gilmsg.outbox import Outbox
from gilmsg.testing import DevBus, Process

HERE = Path(__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE_SRC = REPO / "examples" / "gilmsg_example"
EXAMPLE = "gilmsg_example.consumers:ExampleConsumer"
SERVICES = ["pub", "r1", "r2", "runner", "runner2", "hub"]
CLI_TIMEOUT = 60


def outbox_cli(bus: DevBus, path: Path, *args: str, timeout: float = CLI_TIMEOUT
               ) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gilmsg-outbox"), "--outbox", str(path),
                           "--config-filename", str(bus.config_file), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=bus.root,
                          env=bus.env())


def logger(bus: DevBus, *args: str, input: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gilmsg-logger"), "--config-filename",
                           str(bus.config_file), *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, cwd=bus.root, env=bus.env(), input=input)


def stats(bus: DevBus, path: Path) -> dict[str, Any]:
    run = outbox_cli(bus, path, "stats", "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def tail(bus: DevBus, name: str, *args: str) -> Process:
    """A real ``gilmsg-tail --json`` acknowledging as ``name``."""
    return bus.spawn_tail(name, *args)


def barrier(bus: DevBus, proc: Process, recipient: str) -> None:
    """Publish a marker to ``recipient``; its tail's next printed line must be that marker."""
    report = gilmsg.publish(topic="barrier", msg={"barrier": True}, modname="outboxtest",
                            recipients=[recipient], ack_timeout=20, **bus.config_for("pub"))
    line = json.loads(proc.next_line())
    assert line["msg_id"] == report.msg_id, f"printed before the barrier: {line}"


def ready_tail(bus: DevBus, name: str, *args: str) -> Process:
    """gilmsg-tail as ``name``, proven subscribed and acknowledging by a first barrier."""
    proc = tail(bus, name, *args)
    barrier(bus, proc, name)
    return proc


def wait_line(proc: Process, needle: str) -> None:
    """Await a line containing ``needle``, whether already read or still to come."""
    if not any(needle in line for line in proc.seen):
        proc.wait_for(lambda line: needle in line)


def drain(proc: Process) -> list[str]:
    """Every stdout line of an exited process (its reader threads are joined by wait())."""
    lines = list(proc.seen)
    while not proc.lines.empty():
        lines.append(proc.lines.get_nowait())
    return lines


@pytest.fixture
def bus(make_bus, request) -> DevBus:
    """A bus with the services the test's ``services`` marker names (certificates cost time)."""
    marker = request.node.get_closest_marker("services")
    return make_bus(marker.args if marker else SERVICES)


def services(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.services(*names)


@services("pub", "r1", "runner")
@pytest.mark.parametrize("mode", ["die-before-send", "wait"])
def test_publisher_killed_then_late_recipient_gets_it_once_from_a_runner(bus, tmp_path, mode,
                                                                       store_location):
    """SIGKILL between store and first send, and between send and ACK: nothing is lost."""
    path = store_location()
    argv = [sys.executable, str(HERE / "outbox_publisher.py"), str(bus.config_file), "pub",
            str(path), "r1", mode]
    watcher = None
    if mode == "wait":  # proves the message left before the kill
        watcher = bus.spawn([str(BIN / "gilmsg-tail"), "--config-filename",
                             str(bus.config_file), "--no-ack", "--json", "--topic",
                             "org.gilmsg.test.outboxtest"])
    publisher = bus.spawn(argv)
    word, msg_id = publisher.next_line().split()
    if mode == "wait":
        assert word == "sent"
        assert json.loads(watcher.next_line())["msg_id"] == msg_id  # it was on the wire
        publisher.signal(signal.SIGKILL)
    else:
        assert word == "stored"
    assert publisher.wait() == -signal.SIGKILL  # reaped: its lease is void now

    listed = outbox_cli(bus, path, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["msg_id"], row["recipient"], row["status"]) == (msg_id, "r1", "pending")

    r1 = ready_tail(bus, "r1", "--dedup-file", store_location())
    run = outbox_cli(bus, path, "run", "--name", "runner", "--until-empty", "--timeout", "30",
                     "--window", "2")
    assert run.returncode == 0, run.stderr
    assert f"delivered {msg_id}" in run.stdout
    line = json.loads(r1.next_line())
    assert line["msg_id"] == msg_id and line["msg"] == {"mode": mode}
    barrier(bus, r1, "r1")  # nothing else was printed: consumed once
    s = stats(bus, path)
    assert (s["pending"], s["delivered"]) == (0, 1)


@services("pub", "r2", "runner", "hub")
def test_hub_plugin_redelivers_and_restarted_consumer_consumes_once(bus, tmp_path,
                                                                   store_location):
    """The runner inside fedmsg-hub; the hub restarted mid-redelivery consumes once (dedup).

    On PostgreSQL the consumed-message record is a database too (a recipient service's hosts
    would share it): the restarted hub finds the message consumed there."""
    path = store_location()
    seen = store_location()
    records = tmp_path / "consumed.jsonl"
    stored = logger(bus, "--name", "pub", "--outbox", str(path), "-r", "hub r2",
                    "--ack-timeout", "0.2", "--json-report", "-m", "durable hello")
    assert stored.returncode == 7, stored.stderr  # stored, delivery continues
    msg_id = json.loads(stored.stdout)["msg_id"]
    assert json.loads(stored.stdout)["status"] == "stored"

    def start_hub() -> Process:
        hub = bus.spawn_hub("hub", consumers=[EXAMPLE], pythonpath=[EXAMPLE_SRC], **{
            "gilmsg_example": True, "gilmsg_example.output": str(records),
            "gilmsg_example.gilmsg_dedup_path": seen,
            "gilmsg.outbox": str(path), "gilmsg.outbox.runner": True,
            "gilmsg.outbox.runner_name": "runner"})
        wait_line(hub, "gilmsg outbox runner started")
        return hub

    hub = start_hub()
    wait_line(hub, f"ExampleConsumer consumed {msg_id}")
    assert hub.stop() is not None  # SIGINT: a clean stop; r2 still owes its ACK
    hub = start_hub()
    # The new hub's runner re-sends (r2 is still owed); its consumer gets it again and skips it.
    wait_line(hub, f"{msg_id} consumed before")
    r2 = tail(bus, "r2")
    assert json.loads(r2.next_line())["msg_id"] == msg_id
    wait_line(hub, f"outbox: {msg_id} delivered")
    assert [json.loads(x)["msg_id"] for x in records.read_text().splitlines()] == [msg_id]
    s = stats(bus, path)
    assert (s["pending"], s["delivered"]) == (0, 1)


@services("pub", "runner")
def test_expiry_is_reported_and_kept(bus, tmp_path):
    bus.config["gilmsg.outbox.expiry"] = 1.0
    bus.write_config()
    path = tmp_path / "outbox.db"
    stored = logger(bus, "--name", "pub", "--outbox", str(path), "-r", "r1", "--ack-timeout",
                    "0.2", "--json-report", "-m", "nobody home")
    assert stored.returncode == 7, stored.stderr
    msg_id = json.loads(stored.stdout)["msg_id"]
    run = outbox_cli(bus, path, "run", "--name", "runner", "--until-empty", "--timeout", "30",
                     "--window", "0.2")
    assert run.returncode == 1, run.stderr
    assert f"expired {msg_id} owed to r1" in run.stdout
    listed = outbox_cli(bus, path, "list", "--state", "expired", "--json")
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["msg_id"], row["status"]) == (msg_id, "expired")
    assert stats(bus, path)["expired"] == 1
    shown = json.loads(outbox_cli(bus, path, "show", msg_id, "--json").stdout)
    assert shown["status"] == "expired" and shown["recipients"] == {"r1": None}
    assert shown["events"][0]["kind"] == "expired"


@services("pub", "r1", "runner")
def test_commands_against_a_live_outbox(bus, store_location):
    path = store_location()
    stored = logger(bus, "--name", "pub", "--outbox", str(path), "-r", "r1", "--ack-timeout",
                    "0.2", "--json-report", input="m1\nm2\n")
    assert stored.returncode == 7, stored.stderr
    ids = [json.loads(line)["msg_id"] for line in stored.stdout.splitlines()]
    assert len(ids) == 2
    runner = bus.spawn([str(BIN / "gilmsg-outbox"), "--outbox", str(path), "--config-filename",
                        str(bus.config_file), "run", "--name", "runner", "--window", "0.3"])

    s = stats(bus, path)
    assert s["pending"] == 2 and s["backlog"] == {"r1": 2} and s["oldest_pending_age"] > 0
    listed = outbox_cli(bus, path, "list")
    assert listed.returncode == 0 and all(i in listed.stdout for i in ids)
    shown = outbox_cli(bus, path, "show", ids[0], "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["recipients"] == {"r1": None}
    assert outbox_cli(bus, path, "show", "no-such-id").returncode == 1

    dropped = outbox_cli(bus, path, "drop", ids[1], "--reason", "test says so")
    assert dropped.returncode == 0, dropped.stderr
    again = outbox_cli(bus, path, "drop", ids[1], "--reason", "twice")
    assert again.returncode == 1 and "not pending" in again.stderr
    assert outbox_cli(bus, path, "drop", ids[0]).returncode == 2  # --reason is required
    assert outbox_cli(bus, path, "retry").returncode == 0

    r1 = tail(bus, "r1")
    assert json.loads(r1.next_line())["msg_id"] == ids[0]  # the dropped one never comes
    runner.wait_for(lambda line: line == f"delivered {ids[0]}")
    barrier(bus, r1, "r1")
    s = stats(bus, path)
    assert (s["pending"], s["delivered"], s["dropped"]) == (0, 1, 1)
    shown = json.loads(outbox_cli(bus, path, "show", ids[1], "--json").stdout)
    assert shown["status"] == "dropped" and shown["reason"] == "test says so"
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 143


@services("pub", "r1", "runner", "runner2")
def test_two_runners_one_outbox_and_a_killed_runner(bus, store_location):
    """Each message is sent by one runner at a time; a SIGKILLed runner's work is taken over.

    On PostgreSQL (runners on several hosts) the killed runner runs as another host where root
    can give it one (its own UTS namespace and hostname, on the same loopback: its pid means
    nothing here), so the others must wait out its lease; the recipient keeps a PostgreSQL
    consumed-message record."""
    from gilmsg.outbox.store import is_url, open_store

    path = store_location()
    other_host = is_url(path) and _can_rename_host()
    window = "3" if other_host else "30"  # a foreign lease is waited out: window + 5 s grace
    with Outbox(path, **bus.config_for("pub")) as outbox:
        pending = outbox.publish_many([("many", {"n": n}) for n in range(6)], "outboxtest",
                                      ["r1"], ack_timeout=0.2)
        for p in pending:
            with pytest.raises(gilmsg.Timeout):
                p.result()
            assert p.settled.wait(10)
    ids = {p.msg_id for p in pending}

    argv = [str(BIN / "gilmsg-outbox"), "--outbox", str(path), "--config-filename",
            str(bus.config_file), "run", "--name", "runner2", "--window", window]
    if other_host:
        argv = ["unshare", "-u", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh", *argv]
    doomed = bus.spawn(argv)
    # Its attempts are leased (committed) before it says it is sending them.
    doomed.wait_for(lambda line: line.startswith("sending "))
    doomed.signal(signal.SIGKILL)
    assert doomed.wait() == -signal.SIGKILL
    if other_host:
        store = open_store(path)
        owners = {e.lease_owner.split(":")[0] for e in store.entries() if e.lease_owner}
        store.close()
        assert owners == {OTHER_HOST}  # leased by the dead "host": only its lease end frees them

    r1 = ready_tail(bus, "r1", *(["--dedup-file", store_location()] if is_url(path) else []))
    runs = [bus.spawn([str(BIN / "gilmsg-outbox"), "--outbox", str(path), "--config-filename",
                       str(bus.config_file), "run", "--name", name, "--until-empty",
                       "--timeout", "30", "--window", "2"]) for name in ("runner", "runner2")]
    assert [r.wait(40) for r in runs] == [0, 0], [r.stderr for r in runs]
    delivered = [{line.split()[1] for line in drain(r) if line.startswith("delivered")}
                 for r in runs]
    assert delivered[0] | delivered[1] == ids
    assert not delivered[0] & delivered[1]  # no message was delivered by both
    got = [json.loads(r1.next_line())["msg_id"] for _ in ids]
    assert sorted(got) == sorted(ids)  # each consumed once ...
    barrier(bus, r1, "r1")  # ... and nothing more


OTHER_HOST = "gilmsg-host-b"


def _can_rename_host() -> bool:
    """Can a child get its own hostname (root, unshare -u)?"""
    try:
        run = subprocess.run(["unshare", "-u", "hostname", OTHER_HOST], capture_output=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0


@services("pub")
def test_unusable_outbox_exit_codes(bus, tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 1000)
    run = logger(bus, "--name", "pub", "--outbox", str(corrupt), "-r", "r1", "-m", "x")
    assert run.returncode == 6, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "not a usable SQLite file" in run.stderr
    assert corrupt.read_bytes() == b"garbage" * 1000

    newer = tmp_path / "newer.db"
    Outbox(newer, **bus.config_for("pub")).close()
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    run = logger(bus, "--name", "pub", "--outbox", str(newer), "-r", "r1", "-m", "x")
    assert run.returncode == 6 and "newer gilmsg" in run.stderr
    for args in (["list"], ["stats", "--json"]):
        run = outbox_cli(bus, newer, *args)
        assert run.returncode == 6 and "Traceback" not in run.stderr, run.stderr
    run = outbox_cli(bus, tmp_path / "missing.db", "stats")
    assert run.returncode == 6 and "no such file" in run.stderr

    run = logger(bus, "--name", "pub", "--outbox", str(tmp_path / "o.db"), "-m", "x")
    assert run.returncode == 2 and "--outbox needs --recipients" in run.stderr
    assert not (tmp_path / "o.db").exists()


@services("pub", "r1")
def test_in_process_runner_sends_at_once_when_the_recipient_comes_back(bus, tmp_path):
    """Outbox.start_runner: a Timeout ends the wait, not the delivery; a join makes it due."""
    import logging
    import threading

    from gilmsg.outbox import Status

    delivered = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if " delivered " in record.getMessage():
                delivered.set()

    watch = Watch()
    logging.getLogger("gilmsg.outbox").addHandler(watch)
    logging.getLogger("gilmsg.outbox").setLevel(logging.INFO)
    try:
        with Outbox(tmp_path / "outbox.db", **bus.config_for("pub")) as outbox:
            with pytest.raises(gilmsg.Timeout) as caught:
                outbox.publish("late", {"x": 1}, modname="outboxtest", recipients=["r1"],
                               ack_timeout=0.2)
            msg_id = caught.value.msg_id
            entry = outbox.store.get(msg_id)
            assert entry.status is Status.PENDING and entry.attempts == 1
            assert entry.next_attempt - entry.created < 5  # 1 s backoff, not the caller's wait
            outbox.start_runner(window=30)  # one long attempt: only a join re-sends at once
            r1 = tail(bus, "r1")
            assert json.loads(r1.next_line())["msg_id"] == msg_id
            assert delivered.wait(20)
            assert outbox.store.get(msg_id).status is Status.DELIVERED
            barrier(bus, r1, "r1")
    finally:
        logging.getLogger("gilmsg.outbox").removeHandler(watch)


@services("pub")
def test_full_disk_logger_reports_not_stored(bus, tmp_path):
    """A write past RLIMIT_FSIZE: exit 6, the line reported not stored, and it is not there."""
    import resource

    path = tmp_path / "outbox.db"
    Outbox(path, **bus.config_for("pub")).close()
    size = path.stat().st_size

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 64 * 1024, size + 64 * 1024))

    big = json.dumps({"blob": "x" * 400_000})
    run = subprocess.run([str(BIN / "gilmsg-logger"), "--config-filename", str(bus.config_file),
                          "--name", "pub", "--outbox", str(path), "-r", "nobody",
                          "--json-input", "--json-report"], input=big + "\n",
                         capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=bus.root,
                         env=bus.env(), preexec_fn=limit)
    assert run.returncode == 6, run.stderr
    report = json.loads(run.stdout)
    assert report["status"] == "not_sent" and report["msg_id"] is None
    assert "not stored" in report["error"] and "cannot write" in report["error"]
    assert "Traceback" not in run.stderr
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    conn.close()

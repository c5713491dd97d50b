"""Faults injected into real processes on a loopback bus: frozen, killed and restarted peers.

Recipients are real ``gilmsg-tail`` processes (or a real ``fedmsg-hub``), the publisher this
process (or a real ``gilmsg-logger``). For every publish: a report naming every recipient, or a
Timeout naming exactly those that could not answer; each message reaches each recipient's
application once per process. The frozen and killed recipient run by default; hub and publisher
restarts with ``./run tests -m faults``. Network partitions: ``tests/faults/test_partitions.py``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import gilmsg
from gilmsg.publish import publish_async
from tests.faults.checks import assert_once_each, assert_outcome, await_delivered, delivered

pytestmark = pytest.mark.faults

BIN = Path(sys.executable).parent


def _publish(bus, recipients, timeout=30.0, **kw):
    return publish_async(topic="t", msg=kw.pop("msg", {}), modname="faults",
                         recipients=recipients, ack_timeout=timeout, **bus.config_for("pub"))


def _outcome(pending):
    try:
        return pending.result()
    except gilmsg.Timeout as exc:
        return exc


def test_a_frozen_recipient_is_named_then_counted_once_resumed(make_bus):
    """SIGSTOP r1: a publish timing out names r1 alone; one in flight when SIGCONT comes succeeds;
    the copies queued while r1 was frozen reach its application once."""
    bus = make_bus(["pub", "r1", "r2"])
    r1, r2 = bus.spawn_tail("r1"), bus.spawn_tail("r2")
    assert_outcome(_outcome(_publish(bus, ["r1", "r2"])), ["r1", "r2"])  # both connected
    r1.signal(signal.SIGSTOP)
    try:
        timed_out = _outcome(_publish(bus, ["r1", "r2"], timeout=1.5))
        assert_outcome(timed_out, ["r1", "r2"], down=["r1"])
        in_flight = _publish(bus, ["r1", "r2"])
        await_delivered(r2, [in_flight.msg_id])
        assert "r1" in in_flight.missing
    finally:
        r1.signal(signal.SIGCONT)
    assert_outcome(_outcome(in_flight), ["r1", "r2"])
    marker = _outcome(_publish(bus, ["r1", "r2"]))  # sent after every copy of the others
    assert_outcome(marker, ["r1", "r2"])
    await_delivered(r1, [in_flight.msg_id, marker.msg_id])
    await_delivered(r2, [timed_out.msg_id, marker.msg_id])
    assert delivered(r1)[timed_out.msg_id] <= 1
    assert_once_each(r1, r2)


def _stream(bus, recipients, count, results, stop):
    """Publish ``count`` messages one after the other (each waits for its outcome)."""
    for i in range(count):
        if stop.is_set():
            return
        results.append(_outcome(_publish(bus, recipients, msg={"i": i})))


def test_a_recipient_killed_mid_stream_and_restarted_within_the_timeout(make_bus):
    """SIGKILL r1 while messages flow, start it again: every publish still gets both ACKs.

    ACKs go out before the application gets a message (``docs/protocol.rst``), so the one
    message r1 may have acknowledged at the instant it was killed may never reach its
    application; every other one reaches the old or the new r1, each at most once.
    """
    bus = make_bus(["pub", "r1", "r2"])
    r1, r2 = bus.spawn_tail("r1"), bus.spawn_tail("r2")
    assert_outcome(_outcome(_publish(bus, ["r1", "r2"])), ["r1", "r2"])
    results: list = []
    stop = threading.Event()
    thread = threading.Thread(target=_stream, args=(bus, ["r1", "r2"], 16, results, stop),
                              daemon=True)
    thread.start()
    try:
        r1.wait_for(lambda line: '"i": 5' in line)  # mid-stream
        r1.proc.send_signal(signal.SIGKILL)
        r1.wait(10)
        r1_again = bus.spawn_tail("r1")
        thread.join(120)
        assert not thread.is_alive()
    finally:
        stop.set()
    assert len(results) == 16
    for outcome in results:
        assert_outcome(outcome, ["r1", "r2"])
    ids = [outcome.msg_id for outcome in results]
    await_delivered(r2, ids)
    await_delivered(r1_again, [ids[-1]])
    seen = set(delivered(r1)) | set(delivered(r1_again))
    assert len(set(ids) - seen) <= 1, sorted(set(ids) - seen)
    assert_once_each(r1, r1_again, r2)


@pytest.mark.faults_full
def test_a_hub_restarted_mid_stream(make_bus):
    """The hub recipient is stopped (SIGTERM) and started again while messages flow."""
    from tests.integration.test_hub import records, start_hub

    bus = make_bus(["pub", "hub"])
    hub = start_hub(bus)
    out = bus.root / "consumed.jsonl"
    assert_outcome(_outcome(_publish(bus, ["hub"])), ["hub"])
    results: list = []
    stop = threading.Event()
    thread = threading.Thread(target=_stream, args=(bus, ["hub"], 12, results, stop),
                              daemon=True)
    thread.start()
    try:
        hub.wait_for(lambda line: "consumed" in line and len(records(out)) >= 5)
        assert hub.stop() is not None
        start_hub(bus)
        thread.join(120)
        assert not thread.is_alive()
    finally:
        stop.set()
    assert len(results) == 12
    for outcome in results:
        assert_outcome(outcome, ["hub"])
    ids = {outcome.msg_id for outcome in results}
    by_pid: dict[int, list[str]] = {}
    for record in records(out):
        by_pid.setdefault(record["pid"], []).append(record["msg_id"])
    assert len(by_pid) == 2, by_pid.keys()
    for pid, consumed in by_pid.items():
        assert len(consumed) == len(set(consumed)), f"hub {pid} consumed a message twice"
    seen = {m for consumed in by_pid.values() for m in consumed}
    assert len(ids - seen) <= 1, sorted(ids - seen)  # acknowledged as the hub stopped


def _logger(bus):
    return bus.spawn([str(BIN / "gilmsg-logger"), "--config-filename", str(bus.config_file),
                      "--name", "pub", "--recipients", "r1 r2", "--ack-timeout", "30",
                      "--json-report", "--modname", "faults"], stdin=subprocess.PIPE)


def _say(logger, text):
    logger.proc.stdin.write(text + "\n")
    logger.proc.stdin.flush()


@pytest.mark.faults_full
def test_a_publisher_killed_mid_publish_and_restarted(make_bus):
    """gilmsg-logger is SIGKILLed with a message in flight; a new one on the same endpoint
    publishes again: the recipients reconnect to it and every new message is acknowledged."""
    bus = make_bus(["pub", "r1", "r2"])
    r1, r2 = bus.spawn_tail("r1"), bus.spawn_tail("r2")
    first = _logger(bus)
    reports = []
    for i in range(4):
        _say(first, f"first {i}")
        reports.append(json.loads(first.next_line(60)))
    _say(first, "in flight")
    first.proc.send_signal(signal.SIGKILL)
    first.wait(10)
    second = _logger(bus)
    for i in range(4):
        _say(second, f"second {i}")
        reports.append(json.loads(second.next_line(60)))
    assert [r["status"] for r in reports] == ["delivered"] * 8, reports
    for r in reports:
        assert set(r["acked"]) == {"r1", "r2"} and not r["missing"], r
    ids = [r["msg_id"] for r in reports]
    await_delivered(r1, ids)
    await_delivered(r2, ids)
    assert_once_each(r1, r2)
    second.proc.stdin.close()
    assert second.wait() == 0

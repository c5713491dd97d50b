"""Beyond "received": processed / rejected ACKs and many messages in flight, with real processes.

Real ``fedmsg-hub`` (the example consumer), real ``gilmsg-tail`` and ``gilmsg-logger``, real
sockets on 127.0.0.1 and certificates made by the test. Every wait is bounded and awaits an
event; a consumer is kept busy by a gate file the test creates, never by a delay.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

import pytest

import gilmsg
from gilmsg.crypto import certs
from gilmsg.testing import DEFAULT_WAIT, DevBus

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SRC = REPO / "examples" / "gilmsg_example"
EXAMPLE = "gilmsg_example.consumers:ExampleConsumer"
LOGGER = str(Path(sys.executable).parent / "gilmsg-logger")


def start_hub(bus: DevBus, **extra: Any):
    extra.setdefault("gilmsg_example", True)
    extra.setdefault("gilmsg_example.output", str(bus.root / "consumed.jsonl"))
    return bus.spawn_hub("hub", consumers=[EXAMPLE], pythonpath=[EXAMPLE_SRC], **extra)


def consumed(bus: DevBus) -> list[str]:
    path = bus.root / "consumed.jsonl"
    return [json.loads(x)["msg_id"] for x in path.read_text().splitlines()] if path.exists() \
        else []


def publish_async(bus: DevBus, recipients, msg=None, timeout: float = 60, **kw):
    return gilmsg.publish_async(topic="test", msg=msg or {}, modname="semtest",
                                recipients=recipients, ack_timeout=timeout,
                                **bus.config_for("pub"), **kw)


def until(predicate, timeout: float = DEFAULT_WAIT, what: str = "condition") -> None:
    """Poll ``predicate`` (state kept by gilmsg's own thread) until true, bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.005)


# -- GilmsgConsumer in a real fedmsg-hub ---------------------------------------------------------

def test_processed_only_after_consume_returned_and_a_busy_consume_delays_no_receipt(
        make_bus, tmp_path):
    bus = make_bus(["pub", "hub"])
    start_hub(bus, **{"gilmsg_example.gilmsg_ack_mode": "processed"})
    gate = tmp_path / "gate"
    busy = publish_async(bus, ["hub"], {"gate": str(gate)}, require="processed")
    until(lambda: busy.answers["hub"].status == "received", what="the receipt ACK")
    # consume() is blocked on the gate: another message's receipt ACK must still come back
    other = gilmsg.publish(topic="test", msg={"n": 2}, modname="semtest", recipients=["hub"],
                           ack_timeout=60, **bus.config_for("pub"))
    assert other.answers["hub"].status == "received"
    assert not busy.future.done() and consumed(bus) == []  # no processed ACK before consume
    gate.touch()
    report = busy.result()
    assert report.require == "processed" and report.answers["hub"].status == "processed"
    assert consumed(bus)[0] == report.msg_id  # written by consume() before it returned


def test_a_raising_consume_gives_rejected_with_its_reason_before_the_timeout(make_bus):
    bus = make_bus(["pub", "hub"])
    start_hub(bus, **{"gilmsg_example.gilmsg_ack_mode": "processed"})
    huge = "disk \x00full\n" + "x" * 100_000  # huge, with control characters
    pending = publish_async(bus, ["hub"], {"fail": huge}, timeout=120, require="processed")
    with pytest.raises(gilmsg.Rejected) as info:
        pending.result()
    err = info.value
    assert isinstance(err, gilmsg.NotDelivered) and not isinstance(err, gilmsg.Timeout)
    reason = err.rejected["hub"]
    assert reason.startswith("RuntimeError: disk full xxx") and len(reason) <= 500
    assert "Traceback" not in reason and err.answers["hub"].status == "rejected"
    assert pending.state is gilmsg.core.delivery.State.REJECTED  # not EXPIRED: no deadline
    # a publisher requiring only receipt is satisfied by the receipt ACK of the same consumer
    report = gilmsg.publish(topic="test", msg={"fail": "again"}, modname="semtest",
                            recipients=["hub"], ack_timeout=60, **bus.config_for("pub"))
    assert report.answers["hub"].status in ("received", "processed")


def recorded(path: Path) -> list[str]:
    """The msg_ids in a consumed-message record (read while the hub may still write it)."""
    import sqlite3

    conn = sqlite3.connect(str(path), timeout=DEFAULT_WAIT)
    try:
        return [row[0] for row in conn.execute("SELECT msg_id FROM consumed ORDER BY at")]
    finally:
        conn.close()


def test_a_processed_hub_records_before_it_acknowledges_and_never_a_raising_consume(
        make_bus, tmp_path):
    """Issue 23: the durable record is committed before the processed ACK is signed (so once
    the publisher has it, the record has the message), and a consume() that raises keeps no
    record of the message (a copy after a restart is consumed again)."""
    bus = make_bus(["pub", "hub"])
    seen = tmp_path / "hub-seen.db"
    start_hub(bus, **{"gilmsg_example.gilmsg_ack_mode": "processed",
                      "gilmsg_example.gilmsg_dedup_path": str(seen)})
    failing = publish_async(bus, ["hub"], {"fail": "disk full"}, require="processed")
    with pytest.raises(gilmsg.Rejected):
        failing.result()
    assert failing.msg_id in consumed(bus)  # consume() ran (and wrote its line) before raising
    assert recorded(seen) == []
    report = publish_async(bus, ["hub"], {"n": 1}, require="processed").result()
    assert report.answers["hub"].status == "processed"
    assert recorded(seen) == [report.msg_id]  # committed before its processed ACK left


def test_a_processed_hub_killed_inside_consume_consumes_the_message_after_its_restart(
        make_bus, tmp_path):
    """Issue 23: SIGKILL while consume() runs: nothing was recorded, so the restarted hub
    consumes the copy a runner re-sends (a new attempt with the same signed bytes), settles it
    processed, and records it."""
    from gilmsg.core.delivery import Delivery
    from gilmsg.core.wire import digest, encode
    from gilmsg.crypto import signing
    from gilmsg.link import link_for

    bus = make_bus(["pub", "hub"])
    seen = tmp_path / "hub-seen.db"
    keys = {"gilmsg_example.gilmsg_ack_mode": "processed",
            "gilmsg_example.gilmsg_dedup_path": str(seen)}
    hub = start_hub(bus, **keys)
    gate = tmp_path / "gate"
    sent: list[dict[str, Any]] = []
    pending = publish_async(bus, ["hub"], {"gate": str(gate)}, timeout=120, require="processed",
                            pre_fire_hook=sent.append)
    until(lambda: pending.answers["hub"].status == "received", what="the receipt ACK")
    hub.signal(signal.SIGKILL)  # consume() is blocked on the gate
    assert hub.wait() == -signal.SIGKILL
    pending.cancel()  # a live publisher re-sends nothing once it heard "received"
    assert consumed(bus) == [] and recorded(seen) == []
    gate.touch()
    start_hub(bus, **keys)
    [envelope] = sent
    cfg = bus.config_for("pub")
    now = time.monotonic()
    attempt = Delivery(envelope["msg_id"], digest(envelope), envelope["topic"], ("hub",), now,
                       now + 60, require="processed")
    report = link_for(cfg).start(attempt, encode(envelope["topic"], envelope),
                                 signing.validator_for(cfg).validate).result(DEFAULT_WAIT * 3)
    assert report.answers["hub"].status == "processed"
    assert consumed(bus) == [pending.msg_id] and recorded(seen) == [pending.msg_id]


def test_an_unknown_ack_mode_is_a_configuration_error_of_the_consumer(make_bus):
    bus = make_bus(["pub", "hub"])
    with pytest.raises(AssertionError, match="status 4 (.|\n)*gilmsg_ack_mode must be one of"):
        start_hub(bus, **{"gilmsg_example.gilmsg_ack_mode": "eventually"})


# -- gilmsg-tail --exec --settle ------------------------------------------------------------------

def test_tail_exec_settles_processed_on_exit_0_and_rejected_with_status_and_last_stderr(
        make_bus):
    bus = make_bus(["pub", "r1"])
    script = ('read line; case "$line" in *boom*) echo "first" >&2; '
              'echo "cannot open db" >&2; exit 3;; esac; exit 0')
    bus.spawn_tail("r1", "--exec", script, "--settle")
    report = gilmsg.publish(topic="test", msg={"ok": 1}, modname="semtest", recipients=["r1"],
                            ack_timeout=60, require="processed", **bus.config_for("pub"))
    assert report.answers["r1"].status == "processed"
    with pytest.raises(gilmsg.Rejected) as info:
        gilmsg.publish(topic="test", msg={"boom": 1}, modname="semtest", recipients=["r1"],
                       ack_timeout=60, require="processed", **bus.config_for("pub"))
    assert info.value.rejected == {"r1": "exit status 3: cannot open db"}


def test_tail_settle_without_exec_is_a_usage_error(make_bus):
    bus = make_bus(["r1"])
    proc = bus.spawn([str(Path(sys.executable).parent / "gilmsg-tail"), "--config-filename",
                      str(bus.config_file), "--name", "r1", "--settle"])
    assert proc.wait() == 2
    assert "--settle needs --exec" in proc.stderr and "Traceback" not in proc.stderr


# -- gilmsg.tail_messages(ack_mode="processed") in a thread --------------------------------------

def _run_loop(bus, gate: threading.Event):
    errors: list[BaseException] = []

    def loop():
        try:
            with gilmsg.tail_messages(topic="org.gilmsg.test.semtest", ack_mode="processed",
                                      **bus.config_for("r1")) as feed:
                for _name, _endpoint, _topic, envelope in feed:
                    if envelope["msg"].get("stop"):
                        raise KeyError("no such key")
                    if envelope["msg"].get("hold"):
                        gate.wait(DEFAULT_WAIT)  # the loop body is busy until the test says so
        except KeyError as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread, errors


def test_tail_messages_processed_mode(make_bus):
    bus = make_bus(["pub", "r1"])
    gate = threading.Event()
    thread, errors = _run_loop(bus, gate)
    # First one through: the publisher then hears r1 (a receipt ACK sent before it listens is
    # lost, and a loop body that is busy reads no re-sent copy to acknowledge again).
    assert publish_async(bus, ["r1"], {"n": 0}, require="processed").result()
    first = publish_async(bus, ["r1"], {"hold": True}, require="processed")
    until(lambda: first.answers["r1"].status == "received" or first.future.done(),
          what=f"receipt of the first {first.msg_id}")
    assert not first.future.done()  # the loop body has not finished with it
    gate.set()
    assert first.result().answers["r1"].status == "processed"
    second = publish_async(bus, ["r1"], {"stop": True}, require="processed")
    with pytest.raises(gilmsg.Rejected) as info:
        second.result()
    assert info.value.rejected == {"r1": "KeyError: 'no such key'"}
    thread.join(DEFAULT_WAIT)
    assert not thread.is_alive() and len(errors) == 1


def test_tail_messages_refuses_an_unknown_ack_mode():
    with pytest.raises(gilmsg.InvalidInput, match="ack_mode must be one of"):
        gilmsg.tail_messages(ack_mode="later")


@pytest.mark.parametrize("value", ["eventually", None, 3])
def test_publish_refuses_an_unknown_require_before_sending(value):
    with pytest.raises(gilmsg.InvalidInput, match="require must be one of"):
        gilmsg.publish(topic="t", msg={}, recipients=["r1"], require=value)


# -- revoked recipient: the Timeout says why (issue 12) ------------------------------------------

def test_a_revoked_recipients_acks_are_refused_and_the_logger_says_why_once(make_bus):
    bus = make_bus(["pub", "logger", "r1", "r2"])
    bus.spawn_tail("r1", "--no-validate")
    bus.spawn_tail("r2")
    gilmsg.publish(topic="test", msg={}, modname="semtest", recipients=["r1", "r2"],
                   ack_timeout=60, **bus.config_for("pub"))  # both up and answering
    certs.revoke(bus.ssldir, "r1")
    with pytest.raises(gilmsg.Timeout) as info:
        gilmsg.publish(topic="test", msg={}, modname="semtest", recipients=["r1", "r2"],
                       ack_timeout=1.5, **bus.config_for("pub"))
    err = info.value
    assert err.missing == ("r1",) and "revoked" in err.refused["r1"]
    assert err.answers["r1"].status == "missing" and "revoked" in err.answers["r1"].reason
    assert str(err).count("r1 (ACKs refused: ") == 1  # the cause, said once (issue 21)
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--json-report",
                      "--name", "logger", "-r", "r1", "-r", "r2", "--ack-timeout", "1.5",
                      "--message", "hello"])
    result = json.loads(proc.next_line())
    assert proc.wait() == 1
    assert result["status"] == "not_acknowledged" and "revoked" in result["answers"]["r1"][
        "reason"]
    assert result["answers"]["r2"]["status"] == "received"
    assert proc.stderr.count("r1: ACKs refused:") == 1 and "revoked" in proc.stderr


# -- many in flight --------------------------------------------------------------------------

def _resources() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/fd"))


def test_2000_async_publishes_to_3_recipients_all_resolve_and_nothing_grows(make_bus):
    bus = make_bus(["pub", "r1", "r2", "r3"])
    for name in ("r1", "r2", "r3"):
        bus.spawn_tail(name, "--format", "terse", "--topic", "org.gilmsg.test.semtest.warm")
    gilmsg.publish(topic="warm", msg={}, modname="semtest", recipients=["r1", "r2", "r3"],
                   ack_timeout=60, **bus.config_for("pub"))  # all three connected
    from gilmsg.link import link_for

    link = link_for(bus.config_for("pub"))
    after: list[tuple[int, int]] = []
    for _round in range(2):
        pendings = [gilmsg.publish_async(topic="warm", msg={"n": n}, modname="semtest",
                                         recipients=["r1", "r2", "r3"], ack_timeout=120,
                                         **bus.config_for("pub"))
                    for n in range(1000)]
        done, not_done = wait_futures([p.future for p in pendings], timeout=180)
        assert not not_done
        reports = [p.future.result() for p in pendings]  # raises if any failed
        assert all(set(r.acks) == {"r1", "r2", "r3"} for r in reports)
        assert len({r.msg_id for r in reports}) == 1000
        assert link.pending == 0 and not link._futures
        gc.collect()
        after.append(_resources())
    assert after[0] == after[1], f"threads/descriptors grew: {after}"
    assert len(link._machine._resends) <= 64 and len(link._machine._deadlines) <= 64 + 1


def test_a_cancelled_future_stops_redelivery_and_is_forgotten(make_bus):
    bus = make_bus(["pub", "absent"])
    pending = publish_async(bus, ["absent"], timeout=60)
    until(lambda: pending.sends >= 2, what="a re-send")
    assert pending.future.cancel()
    until(lambda: pending.state is gilmsg.core.delivery.State.CANCELLED, what="cancellation")
    sends = pending.sends
    from gilmsg.link import link_for

    link = link_for(bus.config_for("pub"))
    until(lambda: link.pending == 0 and not link._futures, what="the link forgot it")
    # a later delivery's re-sends prove the link thread went round many times since
    probe = publish_async(bus, ["absent"], timeout=60)
    until(lambda: probe.sends >= 4, what="probe re-sends")
    probe.cancel()
    assert pending.sends == sends


# -- gilmsg-logger --max-in-flight ---------------------------------------------------------------

def test_logger_max_in_flight_keeps_input_order(make_bus):
    bus = make_bus(["pub", "r1", "r2"])
    bus.spawn_tail("r1")
    bus.spawn_tail("r2")
    lines = "".join(f'{{"n": {n}}}\n' for n in range(1, 41))
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--json-report",
                      "--name", "pub", "-r", "r1,r2", "--ack-timeout", "60", "--json-input",
                      "--max-in-flight", "16", "-q"], stdin=subprocess.PIPE)
    proc.proc.stdin.write(lines)
    proc.proc.stdin.close()
    results = [json.loads(proc.next_line()) for _ in range(40)]
    assert proc.wait(60) == 0, proc.stderr
    assert [r["line"] for r in results] == list(range(1, 41))
    assert all(r["status"] == "delivered" for r in results)


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_logger_max_in_flight_below_1_is_a_usage_error(make_bus, value):
    bus = make_bus(["pub"])
    proc = bus.spawn([LOGGER, "--config-filename", str(bus.config_file), "--name", "pub",
                      "--max-in-flight", value, "--message", "x"])
    assert proc.wait() == 2
    assert "--max-in-flight" in proc.stderr and "Traceback" not in proc.stderr


# -- the Twisted form, in a real reactor -------------------------------------------------------

DEFERRED_SCRIPT = r'''
import json, sys, threading
from twisted.internet import defer, task
import gilmsg

cfg = json.loads(sys.argv[1])
out = {}


def main(reactor):
    ticks = []
    task.LoopingCall(lambda: ticks.append(1)).start(0.005)
    main_thread = threading.current_thread()

    def pub(recipients, timeout, **kw):
        return gilmsg.publish_deferred(topic="test", msg={}, modname="semtest",
                                       recipients=recipients, ack_timeout=timeout, **kw, **cfg)

    def note(key, value):
        out[key] = value
        out[key + "_in_reactor"] = threading.current_thread() is main_thread

    d1 = pub(["r1"], 60, require="processed")
    d1.addCallback(lambda r: note("ok", r.answers["r1"].status))
    started = len(ticks)
    d2 = pub(["absent"], 1)
    d2.addCallbacks(lambda r: note("timeout", "no error"),
                    lambda f: note("timeout", [f.type.__name__, len(ticks) > started + 1]))
    d3 = pub(["absent"], 60)
    d1.addBoth(lambda _: d3.cancel())
    d3.addCallbacks(lambda r: note("cancelled", "no error"),
                    lambda f: note("cancelled", f.type.__name__))
    d4 = pub(["r1"], 60, require="whenever")
    d4.addCallbacks(lambda r: note("invalid", "no error"),
                    lambda f: note("invalid", f.type.__name__))
    done = defer.DeferredList([d1, d2, d3, d4])
    done.addCallback(lambda _: print(json.dumps(out), flush=True))
    return done


task.react(main)
'''


def test_publish_deferred_fires_in_the_reactor_which_keeps_running(make_bus):
    bus = make_bus(["pub", "r1", "absent"])
    bus.spawn_tail("r1", "--exec", "cat > /dev/null", "--settle")
    proc = bus.spawn([sys.executable, "-c", DEFERRED_SCRIPT,
                      json.dumps(bus.config_for("pub"))])
    out = json.loads(proc.next_line(60))
    assert proc.wait() == 0, proc.stderr
    assert out == {
        "ok": "processed", "ok_in_reactor": True,
        "timeout": ["Timeout", True], "timeout_in_reactor": True,
        "cancelled": "CancelledError", "cancelled_in_reactor": True,
        "invalid": "InvalidInput", "invalid_in_reactor": True,
    }

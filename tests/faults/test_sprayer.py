"""A live sprayer on a real bus while real publishes run (``tests/faults/sprayer.py``).

The sprayer is a bus member (valid certificate, its own endpoint, to which the publisher's ACK
listener and the tails connect) that replays, mutates, truncates and re-signs every frame it
hears. Every publish must still get a full report, each tail must print exactly the published
messages, each once, and every process must still be running.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import gilmsg
from tests.faults.checks import assert_once_each, await_delivered, delivered

pytestmark = pytest.mark.faults

SPRAYER = Path(__file__).with_name("sprayer.py")


def test_publishes_go_through_a_live_sprayer(make_bus, request, caplog):
    caplog.set_level("ERROR", logger="gilmsg")  # every ignored ACK logs a WARNING
    count = 200 if "faults" in (request.config.option.markexpr or "") else 25
    bus = make_bus(["pub", "r1", "r2", "mallory"])
    sprayer = bus.spawn([sys.executable, str(SPRAYER), str(bus.config_file), "mallory"],
                        stdin=subprocess.PIPE)
    assert sprayer.next_line() == "ready", sprayer.stderr
    r1, r2 = bus.spawn_tail("r1"), bus.spawn_tail("r2")
    ids = []
    for i in range(count):
        report = gilmsg.publish(topic="t", msg={"i": i}, modname="spray", recipients=["r1", "r2"],
                                ack_timeout=30, **bus.config_for("pub"))
        assert set(report.acks) == {"r1", "r2"}, report
        ids.append(report.msg_id)
    await_delivered(r1, ids)
    await_delivered(r2, ids)
    sprayer.proc.stdin.close()
    line = sprayer.next_line()
    assert line.startswith("sprayed "), line
    sprayed = int(line.split()[1])
    print(f"\nsprayer: {sprayed} frame pairs during {count} publishes")
    assert sprayed > count
    for tail in (r1, r2):
        assert tail.proc.poll() is None, tail.stderr
        assert set(delivered(tail)) == set(ids), "a tail delivered something not published"
        assert "Traceback" not in tail.stderr, tail.stderr
    assert_once_each(r1, r2)

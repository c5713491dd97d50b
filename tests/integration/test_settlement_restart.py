"""A restarted recipient in processed mode answers a re-sent copy with the settlement it recorded.

Real processes: ``gilmsg-tail --exec ... --settle --dedup-file F`` settles one message
``processed`` and one ``rejected``, is SIGKILLed, and is restarted with the same file; a
publisher re-sending the same signed bytes with ``require="processed"`` gets ``processed`` and
``rejected`` with the same reason, and the command is not run again. Once per backend of the
record (``store_location``: an SQLite file, a database of a real PostgreSQL server).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

import gilmsg
from gilmsg.testing import DEFAULT_WAIT

SCRIPT = ('echo run >> "$RUNS"; read line; case "$line" in *boom*) echo "cannot open db" >&2; '
          'exit 3;; esac; exit 0')


def resend(bus, envelope: dict[str, Any]):
    """Re-send ``envelope``'s signed bytes as an outbox runner does; the answers."""
    from gilmsg.core.delivery import Delivery
    from gilmsg.core.wire import digest, encode
    from gilmsg.crypto import signing
    from gilmsg.link import link_for

    cfg = bus.config_for("pub")
    now = time.monotonic()
    attempt = Delivery(envelope["msg_id"], digest(envelope), envelope["topic"], ("r1",), now,
                       now + 60, require="processed")
    report = link_for(cfg).start(attempt, encode(envelope["topic"], envelope),
                                 signing.validator_for(cfg).validate).result(DEFAULT_WAIT * 3)
    return report.answers["r1"]


def test_a_restarted_tail_answers_a_copy_with_its_recorded_settlement(make_bus, tmp_path,
                                                                      monkeypatch,
                                                                      store_location):
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    bus = make_bus(["pub", "r1"])
    seen = store_location()
    args = ("--exec", SCRIPT, "--settle", "--dedup-file", str(seen))
    tail = bus.spawn_tail("r1", *args)
    sent: list[dict[str, Any]] = []
    report = gilmsg.publish(topic="test", msg={"ok": 1}, modname="semtest", recipients=["r1"],
                            ack_timeout=60, require="processed", pre_fire_hook=sent.append,
                            **bus.config_for("pub"))
    assert report.answers["r1"].status == "processed"
    with pytest.raises(gilmsg.Rejected) as first:
        gilmsg.publish(topic="test", msg={"boom": 1}, modname="semtest", recipients=["r1"],
                       ack_timeout=60, require="processed", pre_fire_hook=sent.append,
                       **bus.config_for("pub"))
    reason = first.value.rejected["r1"]
    assert reason == "exit status 3: cannot open db"
    ok, boom = sent
    tail.signal(signal.SIGKILL)
    assert tail.wait() == -signal.SIGKILL
    bus.spawn_tail("r1", *args)  # the same file: the in-memory settlements are gone
    answer = resend(bus, ok)
    assert answer.status == "processed"
    with pytest.raises(gilmsg.Rejected) as info:
        resend(bus, boom)
    assert info.value.rejected == {"r1": reason}
    assert (tmp_path / "runs").read_text().splitlines() == ["run", "run"]  # never run again

"""A durable publish keeps the promise it was asked for (issue 19, finding 9): real
``gilmsg-tail`` recipients, the real ``gilmsg-outbox`` and ``gilmsg-logger`` commands; each
test once per backend (``store_location``: an SQLite file, a database of a real PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import gilmsg
from gilmsg.commands import _common
from gilmsg.outbox import Outbox
from gilmsg.outbox.policy import Status

BIN = Path(sys.executable).parent


def cli(bus, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / argv[0]), "--config-filename", str(bus.config_file),
                           *argv[1:]], capture_output=True, text=True, timeout=60, cwd=bus.root,
                          env=bus.env())


def test_require_processed_is_not_satisfied_by_received(make_bus, store_location):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1")  # answers "received" only
    path = store_location()
    with Outbox(path, **bus.config_for("pub")) as outbox:
        with pytest.raises(gilmsg.Timeout) as info:
            outbox.publish(topic="t", msg={"n": 1}, modname="req", recipients=["r1"],
                           ack_timeout=3, require="processed")
        assert info.value.answers["r1"].status == "received"  # heard, but not what was asked
        entry = outbox.store.get(info.value.msg_id)
    assert entry.require == "processed" and entry.status is Status.PENDING
    assert entry.owed == ("r1",)


def test_a_rejection_ends_redelivery_with_its_reason_shown_by_list_and_show(make_bus,
                                                                            store_location):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1", "--exec", "echo broken input >&2; exit 3", "--settle")
    path = store_location()
    with Outbox(path, **bus.config_for("pub")) as outbox:
        with pytest.raises(gilmsg.Rejected) as info:
            outbox.publish(topic="t", msg={"n": 2}, modname="req", recipients=["r1"],
                           ack_timeout=30, require="processed")
        msg_id = info.value.msg_id
    listed = cli(bus, "gilmsg-outbox", "--outbox", str(path), "list", "--state", "rejected",
                 "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["msg_id"], r["recipient"], r["status"]) for r in rows] == [
        (msg_id, "r1", "rejected")]
    assert "broken input" in rows[0]["rejected"]
    shown = cli(bus, "gilmsg-outbox", "--outbox", str(path), "show", msg_id, "--json")
    data = json.loads(shown.stdout)
    assert data["status"] == "rejected" and "broken input" in data["rejected"]["r1"]
    assert data["require"] == "processed"
    pending = cli(bus, "gilmsg-outbox", "--outbox", str(path), "list", "--json")
    assert pending.stdout.strip() == ""  # nothing owed: no runner sends it again


def test_gilmsg_logger_outbox_require_processed(make_bus, store_location):
    bus = make_bus(["pub", "r1"])
    bus.spawn_tail("r1", "--exec", "cat >/dev/null", "--settle")
    path = store_location()
    done = cli(bus, "gilmsg-logger", "--name", "pub", "--recipients", "r1", "--outbox",
               str(path), "--require", "processed", "--ack-timeout", "30", "--message", "hi")
    assert done.returncode == _common.EXIT_OK, done.stdout + done.stderr
    listed = cli(bus, "gilmsg-outbox", "--outbox", str(path), "list", "--state", "delivered",
                 "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["recipient"], r["require"]) for r in rows] == [("r1", "processed")]


def test_an_unsupported_keyword_is_invalid_input_not_a_config_key(make_bus, tmp_path):
    bus = make_bus(["pub", "r1"])
    with Outbox(tmp_path / "outbox.db", **bus.config_for("pub")) as outbox:
        with pytest.raises(gilmsg.InvalidInput, match="pre_fire_hook"):
            outbox.publish(topic="t", msg={}, modname="req", recipients=["r1"],
                           ack_timeout=1, pre_fire_hook=print)
        with pytest.raises(gilmsg.InvalidInput, match="require"):
            outbox.publish(topic="t", msg={}, modname="req", recipients=["r1"],
                           ack_timeout=1, require="stored")
        assert outbox.store.entries() == []  # nothing stored

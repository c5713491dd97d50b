"""A PostgreSQL outbox and consumed-message record of schema version 1 (what gilmsg wrote
before rejections, required levels and settlements were kept there) are refused with the
command that migrates them, and keep their rows through ``gilmsg-outbox migrate``.

The server is the session's throw-away PostgreSQL (``postgres`` fixture, tests/conftest.py);
version 1's tables are made by this gilmsg with its version set back to 1 (version 1 is
``pgconn.SCHEMAS``, the tables gilmsg created before version 2), and its rows are written as
that gilmsg wrote them, in SQL. The migration runs in the real ``gilmsg-outbox`` command.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gilmsg.errors import OutboxError
from gilmsg.outbox import Status
from gilmsg.outbox import postgres as pg
from gilmsg.outbox.dedup import open_consumed
from gilmsg.outbox.store import open_store

pytest.importorskip("psycopg", reason="psycopg 3 is not installed "
                                      "(pip install 'gilmsg[postgresql]')")

BIN = Path(sys.executable).parent


def migrate(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "gilmsg-outbox"), "--outbox", url, "migrate"],
                          capture_output=True, text=True, timeout=60)


def make_version_1(postgres, monkeypatch, kinds=("outbox", pg.PgConsumed.KIND)) -> str:
    """A database holding a version 1 outbox with one message owed to a and b, and a
    version 1 consumed-message record with one key (of ``kinds``); its URL."""
    url = postgres.create_database()
    db = url.rsplit("/", 1)[1]
    with monkeypatch.context() as m:
        for kind in kinds:
            m.setitem(pg.VERSIONS, kind, 1)
            pg.connect(url, kind).close()
    if pg.PgConsumed.KIND in kinds:
        postgres.sql(db, "INSERT INTO gilmsg.consumed VALUES ('k1', 'm0', 50)")
    if "outbox" not in kinds:
        return url
    postgres.sql(db, "INSERT INTO gilmsg.messages (msg_id, topic, digest, frame, created, "
                     "expires) VALUES ('m1', 't', 'd', '\\x6d31', 100, 1e12)")
    postgres.sql(db, "INSERT INTO gilmsg.recipients VALUES ('m1', 0, 'a', NULL), "
                     "('m1', 1, 'b', NULL)")
    return url


def test_version_1_is_refused_then_migrated_with_its_rows(postgres, monkeypatch):
    url = make_version_1(postgres, monkeypatch)
    with pytest.raises(OutboxError, match="version 1 is older .* migrate"):
        open_store(url)
    with pytest.raises(OutboxError, match="version 1 is older .* migrate"):
        open_consumed(url)

    run = migrate(url)
    assert run.returncode == 0, run.stderr
    assert "outbox schema version 1 -> 2" in run.stderr
    assert "consumed-message record schema version 1 -> 2" in run.stderr
    db = url.rsplit("/", 1)[1]
    assert sorted(postgres.sql(db, "SELECT kind, version FROM gilmsg.meta")) == [
        ("consumed-message record", 2), ("outbox", 2)]

    store = open_store(url)
    old = store.get("m1")
    assert (old.status, old.owed, old.require, old.rejected) == (
        Status.PENDING, ("a", "b"), "received", {})
    assert store.record_acks("m1", {"a": 101.0}, rejected={"b": "bad schema"}) \
        is Status.REJECTED
    assert store.get("m1").last_error == "rejected by b: bad schema"
    consumed = open_consumed(url)
    assert consumed.done("k1") and consumed.settlement("k1") is None  # kept, not settled
    consumed.record("k2", "m2", status="processed")
    assert consumed.settlement("k2") == ("processed", None)


def test_a_database_with_only_a_record_is_migrated(postgres, monkeypatch):
    url = make_version_1(postgres, monkeypatch, kinds=(pg.PgConsumed.KIND,))
    run = migrate(url)
    assert run.returncode == 0, run.stderr
    assert "consumed-message record schema version 1 -> 2" in run.stderr
    assert "outbox" not in run.stderr.replace("gilmsg-outbox", "")  # none made
    consumed = open_consumed(url)
    assert consumed.done("k1") and consumed.settlement("k1") is None
    consumed.record("k2", "m2", status="rejected", reason="bad schema")
    assert consumed.settlement("k2") == ("rejected", "bad schema")
    with pytest.raises(OutboxError, match="not a gilmsg outbox"):
        open_store(url, create=False)

"""The durable consumed-message record (gilmsg.outbox.dedup.Consumed) keeps settlements.

Real SQLite files: the round trip across a reopen, the first record standing, and the migration
of a file written at schema version 1 (before settlements were kept): its rows stay consumed,
without a settlement, and new rows keep theirs.
"""

from __future__ import annotations

import sqlite3

import pytest

from gilmsg.errors import InvalidInput
from gilmsg.outbox import dedup, sqlite
from gilmsg.outbox.dedup import Consumed


def test_a_settlement_survives_a_reopen(tmp_path):
    path = tmp_path / "seen.db"
    one = Consumed(path)
    one.record("k1", "m1", status="processed")
    one.record("k2", "m2", status="rejected", reason="no thanks")
    one.record("k3", "m3")  # received mode, or ended without a verdict
    one.close()
    two = Consumed(path)
    try:
        assert two.settlement("k1") == ("processed", None)
        assert two.settlement("k2") == ("rejected", "no thanks")
        assert two.done("k3") and two.settlement("k3") is None
        assert not two.done("k4") and two.settlement("k4") is None
        assert len(two) == 3
    finally:
        two.close()


def test_the_first_record_stands(tmp_path):
    record = Consumed(tmp_path / "seen.db")
    try:
        record.record("k1", "m1", status="rejected", reason="first")
        record.record("k1", "m1", status="processed")
        record.record("k1", "m1")
        assert record.settlement("k1") == ("rejected", "first") and len(record) == 1
    finally:
        record.close()


def test_a_processed_record_keeps_no_reason_and_bad_statuses_are_refused(tmp_path):
    record = Consumed(tmp_path / "seen.db")
    try:
        record.record("k1", "m1", status="processed", reason="ignored")
        assert record.settlement("k1") == ("processed", None)
        for status in ("received", "done", ""):
            with pytest.raises(InvalidInput, match="processed, rejected"):
                record.record("k2", "m2", status=status)
        assert not record.done("k2")
    finally:
        record.close()


def version_1_file(path) -> None:
    """A consumed-message record as gilmsg wrote it at schema version 1."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE consumed (key TEXT PRIMARY KEY, msg_id TEXT, at REAL NOT NULL) "
                 "WITHOUT ROWID")
    conn.execute(f"PRAGMA application_id={sqlite.APPLICATION_IDS['consumed-message record']}")
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO consumed VALUES ('old', 'm-old', 1.0)")
    conn.commit()
    conn.close()


def test_a_version_1_file_is_migrated_and_its_rows_kept_without_a_settlement(tmp_path):
    path = tmp_path / "old.db"
    version_1_file(path)
    record = Consumed(path)
    try:
        assert record.done("old") and record.settlement("old") is None
        record.record("new", "m-new", status="rejected", reason="why")
        assert record.settlement("new") == ("rejected", "why")
    finally:
        record.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == dedup.SCHEMA_VERSION == 2
        columns = [row[1] for row in conn.execute("PRAGMA table_info(consumed)")]
        assert columns == ["key", "msg_id", "at", "status", "reason"]
        assert conn.execute("SELECT msg_id, status FROM consumed WHERE key='old'").fetchone() \
            == ("m-old", None)
    finally:
        conn.close()
    again = Consumed(path)  # a migrated file opens as it is
    try:
        assert again.settlement("new") == ("rejected", "why") and len(again) == 2
    finally:
        again.close()

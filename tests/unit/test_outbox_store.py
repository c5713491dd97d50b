"""The outbox's decisions (pure) and its stores, without sockets.

The store tests run once per backend (``store_location``: an SQLite file, then a fresh database
of a throw-away PostgreSQL server); the SQLite-only faults follow. Faults are real: a corrupt
file, a file of a newer schema, a write past ``RLIMIT_FSIZE`` in a child process, a read-only
file system (root only, in a private mount namespace), two stores (as two processes would)
claiming from one outbox, a lease holder that died.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from gilmsg.errors import InvalidInput, OutboxError
from gilmsg.outbox import policy
from gilmsg.outbox.dedup import Consumed, open_consumed
from gilmsg.outbox.policy import Entry, Status
from gilmsg.outbox.store import SCHEMA_VERSION, Store, open_store

FRAMES = [b"org.gilmsg.test.x", b'{"msg_id": "m1"}']


def entry(**kw) -> Entry:
    base = dict(msg_id="m1", topic="t", recipients=("a", "b"), created=100.0, expires=1000.0)
    base.update(kw)
    return Entry(**base)


# -- policy -----------------------------------------------------------------------------------


def test_retry_delay_doubles_and_is_capped_at_30s():
    assert [policy.retry_delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert policy.retry_delay(10_000) == policy.RETRY_CEILING == 30


def test_due_rules_lease_join_expiry():
    e = entry(next_attempt=50.0)
    assert policy.is_due(e, 60.0)
    assert not policy.is_due(entry(next_attempt=70.0), 60.0)
    assert policy.is_due(entry(next_attempt=70.0), 60.0, joined=True)  # a subscriber came back
    leased = entry(lease_owner="h:1:x", lease_until=65.0)
    assert not policy.is_due(leased, 60.0)
    assert policy.is_due(leased, 60.0, alive=lambda owner: False)  # its holder died
    assert policy.is_due(leased, 65.0)  # the lease ran out
    assert not policy.is_due(entry(expires=60.0), 60.0)
    assert policy.should_expire(entry(expires=60.0), 60.0)
    done = entry(acked={"a": 1.0, "b": 2.0})
    assert not policy.is_due(done, 60.0)


def test_owner_alive_only_judges_its_own_host():
    assert not policy.owner_alive("h:12:x", "h", lambda pid: False)
    assert policy.owner_alive("h:12:x", "h", lambda pid: True)
    assert policy.owner_alive("other:12:x", "h", lambda pid: False)  # cannot tell: wait lease


def test_after_attempt_backs_off_or_delivers():
    e = entry(lease_owner="me", lease_until=99.0, acked={"a": 5.0})
    policy.after_attempt(e, 10.0, "no ACK from b")
    assert (e.status, e.attempts, e.next_attempt, e.lease_owner) == (Status.PENDING, 1, 11.0,
                                                                      None)
    assert e.last_error == "no ACK from b"
    e.acked["b"] = 12.0
    policy.after_attempt(e, 12.0, None)
    assert (e.status, e.finished, e.last_error) == (Status.DELIVERED, 12.0, None)


def test_stats_backlog_per_recipient():
    entries = [entry(msg_id="1", created=10.0), entry(msg_id="2", created=40.0, acked={"a": 1}),
               entry(msg_id="3", status=Status.EXPIRED)]
    s = policy.stats(entries, 100.0).to_json()
    assert s["pending"] == 2 and s["expired"] == 1
    assert s["oldest_pending_age"] == 90.0
    assert s["backlog"] == {"a": 1, "b": 2}
    assert s["oldest_by_recipient"] == {"a": 90.0, "b": 90.0}


# -- the file ---------------------------------------------------------------------------------


def put(store, msg_id: str = "m1", recipients=("a", "b"), now: float = 100.0,
        expiry: float = 1000.0, lease: float = 0.0) -> None:
    store.put([(msg_id, "d" * 64, [FRAMES[0], msg_id.encode()], recipients)], now, expiry, lease)


def test_stored_message_is_claimed_once_between_two_stores(store_location):
    path = store_location()
    one, two = open_store(path), open_store(path)
    put(one, "m1")
    put(one, "m2")
    got = one.claim(100.0, lease=10.0)
    assert [s.entry.msg_id for s in got] == ["m1", "m2"]
    assert got[0].frames == [FRAMES[0], b"m1"] and got[0].digest == "d" * 64
    assert two.claim(105.0, lease=10.0) == []  # leased by the other store
    assert two.claim(105.0, lease=10.0, joined=True) == []  # even when a subscriber joins
    assert [s.entry.msg_id for s in two.claim(110.0, lease=10.0)] == ["m1", "m2"]  # ran out


def test_acks_recorded_once_and_delivery_kept(store_location):
    store = open_store(store_location())
    put(store)
    store.claim(100.0, lease=10.0)
    after = store.finish_attempt("m1", {"a": 101.0}, "no ACK from b", 102.0)
    assert after is not None
    assert (after.status, after.owed, after.attempts) == (Status.PENDING, ("b",), 1)
    assert after.next_attempt == 103.0
    assert store.claim(102.5, lease=10.0) == []  # backing off
    assert store.record_acks("m1", {"a": 999.0, "b": 104.0, "intruder": 1.0}) is Status.DELIVERED
    again = store.get("m1")
    assert again.acked == {"a": 101.0, "b": 104.0}  # the first ACK time wins; strangers ignored
    assert again.status is Status.DELIVERED
    assert store.claim(1e9, lease=10.0) == []


def test_expiry_marks_and_keeps(store_location):
    store = open_store(store_location())
    put(store, expiry=5.0)
    assert store.expire(104.0) == []
    [gone] = store.expire(105.0)
    assert gone.status is Status.EXPIRED and gone.owed == ("a", "b")
    assert store.get("m1").status is Status.EXPIRED  # never deleted
    assert store.events("m1")[0][1:] == ("expired", "still owed to a, b")
    assert store.stats(200.0).counts["expired"] == 1


def test_drop_records_reason_and_retry_makes_due(store_location):
    store = open_store(store_location())
    put(store, "m1")
    put(store, "m2")
    store.claim(100.0, lease=1.0)
    store.finish_attempt("m1", {}, "x", 101.0)
    store.finish_attempt("m2", {}, "x", 101.0)
    assert store.claim(101.5, lease=1.0) == []
    assert store.retry("m1", 101.5) == 1
    assert [s.entry.msg_id for s in store.claim(101.5, lease=1.0)] == ["m1"]
    dropped = store.drop("m2", "retired recipient", 102.0)
    assert dropped.status is Status.DROPPED and dropped.reason == "retired recipient"
    assert store.retry("m2", 103.0) == 0
    assert store.events("m2")[-1][1:] == ("dropped", "retired recipient")
    assert store.drop("nope", "x", 1.0) is None


def test_dead_lease_holder_is_taken_over_at_once(store_location):
    path = store_location()
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            from gilmsg.outbox.store import open_store
            s = open_store({str(path)!r})
            s.put([("m1", "d", [b"t", b"m1"], ["a"])], 100.0, 1000.0, lease=500.0)
        """)], timeout=30)
    assert child.returncode == 0
    store = open_store(path)
    assert store.get("m1").lease_until == 600.0
    assert [s.entry.msg_id for s in store.claim(101.0, lease=10.0)] == ["m1"]


def test_a_rejection_owes_nothing_more_and_the_level_is_kept(store_location):
    store = open_store(store_location())
    store.put([("m1", "d" * 64, [FRAMES[0], b"m1"], ("a", "b", "c"))], 100.0, 1000.0,
              require="processed")
    store.claim(100.0, lease=10.0)
    after = store.finish_attempt("m1", {"a": 101.0}, "no ACK from b, c", 102.0,
                                 rejected={"b": "bad schema"})
    assert (after.status, after.owed, after.require) == (Status.PENDING, ("c",), "processed")
    assert after.rejected == {"b": "bad schema"}
    # the first answer stands: neither a later ACK nor a second rejection changes b's
    assert store.record_acks("m1", {"b": 103.0}, rejected={"a": "late", "b": "other"}) \
        is Status.PENDING
    assert store.record_acks("m1", {"c": 104.0}) is Status.REJECTED
    done = store.get("m1")
    assert (done.status, done.acked, done.rejected) == (
        Status.REJECTED, {"a": 101.0, "c": 104.0}, {"b": "bad schema"})
    assert done.last_error == "rejected by b: bad schema" and done.require == "processed"
    assert store.claim(1e9, lease=10.0) == []


def test_runner_activity_keeps_the_latest_only(store_location):
    path = store_location()
    one, two = open_store(path), open_store(path)
    assert one.last_runner() is None
    one.runner_seen(10.0)
    two.runner_seen(20.0)
    assert one.last_runner() == (20.0, two.owner)
    assert [kind for _at, kind, _detail in one.events("")] == ["runner"]  # one row, not two


def test_a_settlement_survives_a_reopen_on_either_backend(store_location):
    path = store_location()
    one = open_consumed(path)
    one.record("k1", "m1", status="processed")
    one.record("k2", "m2", status="rejected", reason="bad schema")
    one.record("k2", "m2", status="processed")  # the first record stands
    one.record("k3", "m3")
    one.close()
    two = open_consumed(path)
    assert [two.settlement(k) for k in ("k1", "k2", "k3", "k4")] == [
        ("processed", None), ("rejected", "bad schema"), None, None]
    with pytest.raises(InvalidInput, match="settlement"):
        two.record("k5", status="received")
    assert not two.done("k5") and len(two) == 3


# -- faults -----------------------------------------------------------------------------------


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "o.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(OutboxError, match="newer gilmsg"):
        Store(path)


def test_corrupt_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "o.db"
    garbage = b"this is not sqlite at all" * 100
    path.write_bytes(garbage)
    with pytest.raises(OutboxError, match="not a usable SQLite file"):
        Store(path)
    assert path.read_bytes() == garbage


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "o.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    with pytest.raises(OutboxError, match="not a gilmsg outbox"):
        Store(path)


def test_missing_file_without_create(tmp_path):
    with pytest.raises(OutboxError, match="no such file"):
        Store(tmp_path / "nope.db", create=False)


def test_full_disk_stores_nothing(tmp_path):
    """A put past RLIMIT_FSIZE fails with OutboxError, and the file holds no part of it."""
    path = tmp_path / "o.db"
    Store(path).close()
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        from gilmsg.errors import InvalidInput, OutboxError
        from gilmsg.outbox.store import Store
        s = Store({str(path)!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        try:
            s.put([("big", "d", [b"t", b"x" * 1_000_000], ["a"])], 1.0, 10.0)
        except OutboxError as exc:
            print("ERR", exc)
            sys.exit(3)
        print("STORED")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    assert run.returncode == 3, run.stdout + run.stderr
    assert "cannot write" in run.stdout
    assert Store(path).get("big") is None


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/unshare"),
                                reason="a read-only mount needs root and unshare")


@needs_root
def test_read_only_file_system_stores_nothing(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = textwrap.dedent(f"""
        import subprocess, sys
        from gilmsg.errors import InvalidInput, OutboxError
        from gilmsg.outbox.store import Store
        Store({str(mnt / 'o.db')!r}).close()
        subprocess.run(["mount", "-o", "remount,ro", {str(mnt)!r}], check=True)
        try:
            s = Store({str(mnt / 'o.db')!r})
            s.put([("m1", "d", [b"t", b"x"], ["a"])], 1.0, 10.0)
        except OutboxError as exc:
            print("ERR", exc)
            sys.exit(3)
        print("STORED")
    """)
    (tmp_path / "child.py").write_text(script)
    run = subprocess.run(["unshare", "-m", "sh", "-c",
                          f"mount -t tmpfs -o size=1m tmpfs {mnt} && "
                          f"exec {sys.executable} {tmp_path / 'child.py'}"],
                         capture_output=True, text=True, timeout=30)
    if "mount" in run.stderr and run.returncode != 3:
        pytest.skip(f"cannot mount here: {run.stderr.strip()}")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "read-only" in run.stdout or "cannot open" in run.stdout


def test_consumed_record_survives_reopen(store_location):
    path = store_location()
    one = open_consumed(path)
    assert not one.done("k1")
    one.record("k1", "m1")
    one.record("k1", "m1")
    one.close()
    two = open_consumed(path)
    assert two.done("k1") and not two.done("k2") and len(two) == 1
    with pytest.raises(OutboxError, match="not a gilmsg outbox"):
        open_store(path, create=False)  # a consumed-message record is not an outbox
    if isinstance(two, Consumed):
        with pytest.raises(OutboxError, match="not a gilmsg outbox"):
            open_store(path)  # and SQLite refuses to make it one


# -- gilmsg-outbox bad input (in-process, no bus) ---------------------------------------------


def invoke(*args: str):
    from click.testing import CliRunner

    from gilmsg.commands import outbox as cli

    return CliRunner().invoke(cli.main, list(args), prog_name="gilmsg-outbox")


def test_outbox_command_bad_input(tmp_path, store_location):
    path = store_location()
    put(open_store(path))
    assert invoke("--outbox", str(path), "drop", "m1", "--reason", "  ").exit_code == 2
    assert invoke("--outbox", str(path), "run", "--window", "0").exit_code == 2
    assert invoke("--outbox", str(path), "list", "--state", "lost").exit_code == 2
    shown = invoke("--outbox", str(path), "show", "m1", "--json")
    assert shown.exit_code == 0 and '"status": "pending"' in shown.output
    missing = invoke("--outbox", str(tmp_path / "none.db"), "list")
    assert missing.exit_code == 6 and "no such file" in missing.output
    assert not (tmp_path / "none.db").exists()  # a read never creates the file
    help_text = invoke("--help").output
    assert "Exit codes:" in help_text and "6" in help_text.split("Exit codes:")[1]

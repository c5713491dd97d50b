"""The PostgreSQL outbox: its faults, the transactional outbox, with a real server.

The server is the session's throw-away PostgreSQL (``postgres`` fixture, tests/conftest.py) on
127.0.0.1; each test has its own database. Commands run as real processes. Faults are real: a
port with no server, a wrong password, a database with tables of its own, a database made
read-only (``default_transaction_read_only``: what a client meets on a hot standby), schema
versions changed in ``gilmsg.meta``, the store's server process terminated while it waits
inside a write, the server restarted between two writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import gilmsg
from gilmsg.errors import InvalidInput, OutboxError
from gilmsg.outbox import Outbox, Status
from gilmsg.outbox import postgres as pg
from gilmsg.outbox.store import open_store
from gilmsg.testing import DevBus, free_port

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed "
                                                "(pip install 'gilmsg[postgresql]')")

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
FRAMES = [b"org.gilmsg.test.x", b'{"msg_id": "m1"}']
CLI_TIMEOUT = 60


def put(store, msg_id: str = "m1", now: float = 100.0) -> None:
    store.put([(msg_id, "d" * 64, [FRAMES[0], msg_id.encode()], ["a"])], now, 1000.0)


def outbox_cli(url: str, *args: str, config: Path | None = None,
               cwd: Path | None = None) -> subprocess.CompletedProcess:
    extra = ["--config-filename", str(config)] if config else []
    return subprocess.run([str(BIN / "gilmsg-outbox"), "--outbox", url, *extra, *args],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT, cwd=cwd)


def one_line_error(run: subprocess.CompletedProcess, code: int = 6) -> str:
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


# -- choosing, refusing -----------------------------------------------------------------------


def test_unreachable_server_is_one_line_and_exit_6(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/outbox"
    with pytest.raises(OutboxError, match="cannot reach the server"):
        open_store(url)
    line = one_line_error(outbox_cli(url, "stats", "--json"))
    assert "cannot reach the server" in line
    line = one_line_error(outbox_cli("postgresql://me:s3cret@[broken/db", "list"))
    assert "s3cret" not in line  # the driver quotes the URL: the password is cut out


def test_wrong_credentials_are_refused_and_never_printed(postgres):
    url = postgres.create_database()
    wrong = url.replace(postgres.password, "not-the-password")
    line = one_line_error(outbox_cli(wrong, "list"))
    assert "refused the credentials" in line and "not-the-password" not in line
    assert ":***@" in line
    with pytest.raises(OutboxError, match="refused the credentials"):
        postgres_consumed(wrong)


def postgres_consumed(url: str):
    from gilmsg.outbox.dedup import open_consumed

    return open_consumed(url)


def gilmsg_schema(postgres, url: str) -> bool:
    return bool(postgres.sql(dbname(url), "SELECT 1 FROM pg_namespace WHERE nspname = 'gilmsg'"))


def test_database_that_is_not_gilmsgs_is_refused_before_anything_is_written(postgres):
    url = postgres.create_database()
    postgres.sql(dbname(url), "CREATE TABLE orders (n INTEGER)")
    with pytest.raises(OutboxError, match="not gilmsg's .*nothing written.*init"):
        open_store(url)
    with pytest.raises(OutboxError, match="not gilmsg's"):
        postgres_consumed(url)
    line = one_line_error(outbox_cli(url, "run", "--until-empty"))
    assert "not gilmsg's" in line
    assert not gilmsg_schema(postgres, url)  # nothing written
    # A foreign schema that happens to be called gilmsg is not taken for one either.
    postgres.sql(dbname(url), "CREATE SCHEMA gilmsg")
    with pytest.raises(OutboxError, match="is not gilmsg's"):
        open_store(url)
    postgres.sql(dbname(url), "DROP SCHEMA gilmsg")
    # The operator says so: init adopts the database (the transactional outbox lives there).
    init = outbox_cli(url, "init", "--dedup")
    assert init.returncode == 0, init.stderr
    assert "gilmsg outbox ready" in init.stderr
    store = open_store(url)
    put(store)
    assert [e.msg_id for e in store.entries()] == ["m1"]
    assert len(postgres_consumed(url)) == 0
    store.close()


def test_sqlite_commands_refuse_init_and_migrate(tmp_path):
    for command in ("init", "migrate"):
        run = outbox_cli(str(tmp_path / "o.db"), command)
        assert run.returncode == 2 and "is for a postgresql:// outbox" in run.stderr
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "o.db").exists()


def test_read_only_database_refuses_writes_and_still_lists(postgres):
    url = postgres.create_database()
    store = open_store(url)
    put(store)
    store.close()
    postgres.sql("postgres", f'ALTER DATABASE "{dbname(url)}" SET '
                             "default_transaction_read_only = on")
    with pytest.raises(OutboxError, match="read-only"):
        open_store(url)
    listed = outbox_cli(url, "list", "--state", "all", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(x)["msg_id"] for x in listed.stdout.splitlines()] == ["m1"]
    line = one_line_error(outbox_cli(url, "retry", "m1"))
    assert "read-only" in line
    # A store opened before the switch meets the refusal at its next write: nothing stored.
    postgres.sql("postgres", f'ALTER DATABASE "{dbname(url)}" RESET '
                             "default_transaction_read_only")
    early = open_store(url)
    early._conn.execute("SET default_transaction_read_only = on")
    with pytest.raises(OutboxError, match="read-only"):
        put(early, "m2")
    assert [e.msg_id for e in open_store(url).entries()] == ["m1"]


def test_newer_schema_refused_older_refused_with_the_command_to_migrate(postgres, monkeypatch):
    url = postgres.create_database()
    open_store(url).close()
    postgres.sql(dbname(url), "UPDATE gilmsg.meta SET version = 99 WHERE kind = 'outbox'")
    with pytest.raises(OutboxError, match="newer gilmsg .*version 99"):
        open_store(url)
    assert "newer gilmsg" in one_line_error(outbox_cli(url, "stats"))

    postgres.sql(dbname(url), "UPDATE gilmsg.meta SET version = 0 WHERE kind = 'outbox'")
    with pytest.raises(OutboxError, match="older .* gilmsg-outbox --outbox '.*' migrate"):
        open_store(url)
    line = one_line_error(outbox_cli(url, "migrate"))  # no path from 0 in this gilmsg
    assert "no migration from schema version 0" in line
    monkeypatch.setitem(pg.MIGRATIONS["outbox"], 0,
                        ["ALTER TABLE gilmsg.messages ADD COLUMN IF NOT EXISTS note TEXT"])
    assert pg.migrate(url, "outbox") == (0, pg.VERSIONS["outbox"])
    store = open_store(url)
    put(store)
    assert store.get("m1") is not None


@pytest.fixture
def server(postgres):
    """The session's server, under a name that says so."""
    return postgres


def _wait_for_lock_waiter(server, db: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = server.sql("postgres", "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                                      "AND wait_event_type = 'Lock'", (db,))
        if rows:
            return rows[0][0]
        time.sleep(0.02)
    raise AssertionError("the store's write never waited on the lock")


def test_server_process_lost_mid_write_stores_nothing_and_the_next_write_reconnects(server):
    url = server.create_database()
    store = open_store(url)
    locker = psycopg.connect(url)
    locker.execute("LOCK TABLE gilmsg.messages IN EXCLUSIVE MODE")  # held until rollback
    failed: list[BaseException] = []

    def write() -> None:
        try:
            put(store, "lost")
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failed.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    backend = _wait_for_lock_waiter(server, dbname(url))  # the INSERT is under way
    server.sql("postgres", "SELECT pg_terminate_backend(%s)", (backend,))
    writer.join(20)
    assert not writer.is_alive()
    locker.rollback()
    locker.close()
    assert len(failed) == 1 and isinstance(failed[0], OutboxError), failed
    assert "connection to the server was lost" in str(failed[0])
    assert "\n" not in str(failed[0])
    put(store, "after")  # reconnects
    assert [e.msg_id for e in store.entries()] == ["after"]
    store.close()


def test_server_restart_between_writes(server):
    url = server.create_database()
    store = open_store(url)
    put(store, "before")
    server.restart()
    with pytest.raises(OutboxError):
        put(store, "during")  # its connection died with the server: not stored
    put(store, "after")
    assert sorted(e.msg_id for e in store.entries()) == ["after", "before"]
    store.close()


# -- the transactional outbox -----------------------------------------------------------------


@pytest.fixture
def pub_bus(make_bus) -> DevBus:
    return make_bus(["pub", "r1", "runner"])


def test_logger_with_an_unusable_postgresql_outbox_stores_nothing_and_exits_6(pub_bus, server):
    url = server.create_database()
    for bad, cause in ((url.replace(server.password, "wrong"), "refused the credentials"),
                       (f"postgresql://postgres@127.0.0.1:{free_port()}/x", "cannot reach")):
        run = subprocess.run([str(BIN / "gilmsg-logger"), "--config-filename",
                              str(pub_bus.config_file), "--name", "pub", "--outbox", bad,
                              "-r", "r1", "-m", "x"], capture_output=True, text=True,
                             timeout=CLI_TIMEOUT, cwd=pub_bus.root, env=pub_bus.env())
        assert run.returncode == 6, run.stderr
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert cause in run.stderr and "wrong" not in run.stderr
    assert not gilmsg_schema(server, url)


def test_publish_in_the_callers_transaction(pub_bus, server, tmp_path):
    url = server.create_database()
    with Outbox(url, **pub_bus.config_for("pub")) as outbox:
        conn = psycopg.connect(url)
        queued = outbox.publish("order.created", {"n": 1}, modname="outboxtest",
                                recipients=["r1"], connection=conn)
        assert queued.recipients == ("r1",)
        assert outbox.store.get(queued.msg_id) is None  # not committed: nobody else sees it
        conn.rollback()
        assert outbox.store.get(queued.msg_id) is None  # and a rollback leaves nothing
        assert outbox.store.entries() == []

        kept = outbox.publish("order.created", {"n": 2}, modname="outboxtest",
                              recipients=["r1"], connection=conn)
        conn.commit()
        entry = outbox.store.get(kept.msg_id)
        assert entry is not None and entry.status is Status.PENDING
        assert (entry.attempts, entry.lease_owner) == (0, None)  # due for a runner at once

        auto = psycopg.connect(url, autocommit=True)
        with pytest.raises(InvalidInput, match="autocommit"):
            outbox.publish("x", {}, modname="outboxtest", recipients=["r1"], connection=auto)
        with auto.transaction():  # an explicit transaction on an autocommit connection is fine
            inside = outbox.publish("x", {}, modname="outboxtest", recipients=["r1"],
                                    connection=auto)
        assert outbox.store.get(inside.msg_id).require == "received"
        with auto.transaction():  # the level asked for is kept with the message
            strict = outbox.publish("x", {}, modname="outboxtest", recipients=["r1"],
                                    require="processed", connection=auto)
        assert outbox.store.get(strict.msg_id).require == "processed"
        other = psycopg.connect(server.create_database())
        with pytest.raises(InvalidInput, match="another database|connected to database"):
            outbox.publish("x", {}, modname="outboxtest", recipients=["r1"], connection=other)
        with pytest.raises(InvalidInput, match="psycopg 3 Connection"):
            outbox.publish("x", {}, modname="outboxtest", recipients=["r1"], connection=object())
        for c in (conn, auto, other):
            c.close()
    with Outbox(tmp_path / "o.db", **pub_bus.config_for("pub")) as sqlite_outbox:
        with pytest.raises(InvalidInput, match="needs a postgresql:// outbox"):
            sqlite_outbox.publish("x", {}, modname="outboxtest", recipients=["r1"],
                                  connection=object())


def test_rolled_back_never_sent_committed_delivered_after_the_publisher_is_killed(pub_bus,
                                                                                  server):
    """A runner and the recipient run throughout; the publisher process rolls one message
    back, commits another and is SIGKILLed right after the commit: only the committed one is
    delivered, once (the runner is woken by the commit's notification)."""
    import signal

    url = server.create_database()
    server.sql(dbname(url), "CREATE TABLE orders (n INTEGER)")
    init = outbox_cli(url, "init")
    assert init.returncode == 0, init.stderr
    r1 = pub_bus.spawn_tail("r1", "--dedup-file", url)
    report = gilmsg.publish(topic="barrier", msg={}, modname="outboxtest", recipients=["r1"],
                            ack_timeout=20, **pub_bus.config_for("pub"))
    assert json.loads(r1.next_line())["msg_id"] == report.msg_id  # r1 listens and acknowledges
    runner = pub_bus.spawn([str(BIN / "gilmsg-outbox"), "--outbox", url, "--config-filename",
                            str(pub_bus.config_file), "run", "--name", "runner",
                            "--window", "2"])
    publisher = pub_bus.spawn([sys.executable, str(HERE / "outbox_tx_publisher.py"),
                               str(pub_bus.config_file), "pub", url, "r1"])
    word, rolled_back = publisher.next_line().split()
    assert word == "rolled-back"
    word, committed = publisher.next_line().split()
    assert word == "committed"
    assert publisher.wait() == -signal.SIGKILL

    runner.wait_for(lambda line: line == f"delivered {committed}")
    line = json.loads(r1.next_line())
    assert (line["msg_id"], line["msg"]) == (committed, {"n": 2})
    report = gilmsg.publish(topic="barrier", msg={}, modname="outboxtest", recipients=["r1"],
                            ack_timeout=20, **pub_bus.config_for("pub"))
    assert json.loads(r1.next_line())["msg_id"] == report.msg_id  # nothing else came
    assert f"sending {rolled_back}" not in runner.seen
    assert server.sql(dbname(url), "SELECT n FROM orders") == [(2,)]
    store = open_store(url)
    assert store.get(rolled_back) is None
    assert store.get(committed).status is Status.DELIVERED
    store.close()
    runner.signal(signal.SIGTERM)
    assert runner.wait() == 143


def test_hot_standby_refuses_writes_and_serves_reads(server):
    """A real read-only replica: a streaming hot standby of the session's server."""
    from gilmsg.testing.postgres import LocalPostgres, ServerError

    url = server.create_database()
    store = open_store(url)
    put(store)
    store.close()
    try:
        standby = LocalPostgres(fsync=False, primary=server)
    except ServerError as exc:
        pytest.skip(f"no standby here: {exc}")
    try:
        standby.start()
        replica = standby.url(dbname(url))
        deadline = time.monotonic() + 30
        while not standby.sql(dbname(url), "SELECT 1 FROM gilmsg.messages WHERE msg_id = 'm1'"):
            assert time.monotonic() < deadline, "the standby never caught up"
            time.sleep(0.05)
        with pytest.raises(OutboxError, match="read-only .*replica in recovery"):
            open_store(replica)
        line = one_line_error(outbox_cli(replica, "drop", "m1", "--reason", "x"))
        assert "read-only" in line
        shown = outbox_cli(replica, "show", "m1", "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "pending"
        assert outbox_cli(replica, "stats", "--json").returncode == 0
    finally:
        standby.cleanup()


def test_sqlalchemy_session_connection_as_documented(pub_bus, server):
    """docs/outbox.rst's SQLAlchemy recipe: the message commits and rolls back with the
    session (skipped where SQLAlchemy is not installed: it is no dependency of gilmsg)."""
    sqlalchemy = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
    from sqlalchemy.orm import Session

    url = server.create_database()
    server.sql(dbname(url), "CREATE TABLE orders (n INTEGER)")
    assert outbox_cli(url, "init").returncode == 0
    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    insert = sqlalchemy.text("INSERT INTO orders (n) VALUES (:n)")
    with Outbox(url, **pub_bus.config_for("pub")) as outbox:
        with Session(engine) as session, session.begin():
            session.execute(insert, {"n": 1})
            conn = session.connection().connection.driver_connection
            kept = outbox.publish("order.created", {"n": 1}, modname="outboxtest",
                                  recipients=["r1"], connection=conn)
        with pytest.raises(RuntimeError), Session(engine) as session, session.begin():
            session.execute(insert, {"n": 2})
            conn = session.connection().connection.driver_connection
            lost = outbox.publish("order.created", {"n": 2}, modname="outboxtest",
                                  recipients=["r1"], connection=conn)
            raise RuntimeError("the application fails: the session rolls back")
        assert outbox.store.get(kept.msg_id).status is Status.PENDING
        assert outbox.store.get(lost.msg_id) is None
    assert server.sql(dbname(url), "SELECT n FROM orders") == [(1,)]
    engine.dispose()

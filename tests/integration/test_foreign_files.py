"""Bad input leaves no trace (issue 19, finding 8): another application's SQLite database given
as an outbox or a de-duplication record is refused before anything is written to it.

Real ``gilmsg-outbox``, ``gilmsg-logger --outbox`` and ``gilmsg-tail --dedup-file`` processes;
the file's bytes (header bytes 18-19, the journal mode, included) are compared afterwards.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gilmsg.commands import _common

BIN = Path(sys.executable).parent


@pytest.fixture
def foreign(tmp_path) -> Path:
    """Another application's SQLite file, in the default rollback-journal mode."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
    conn.commit()
    conn.close()
    assert path.read_bytes()[18:20] == b"\x01\x01"  # not WAL
    return path


def run(bus, argv, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60,
                          cwd=bus.root, env=bus.env())


@pytest.mark.parametrize("command", [["stats"], ["list"]])
def test_gilmsg_outbox_refuses_a_foreign_database_untouched(make_bus, foreign, command):
    bus = make_bus(["pub"])
    before = foreign.read_bytes()
    done = run(bus, [str(BIN / "gilmsg-outbox"), "--config-filename", str(bus.config_file),
                     "--outbox", str(foreign), *command])
    assert done.returncode == _common.EXIT_OUTBOX, done.stdout + done.stderr
    assert "not a gilmsg outbox" in done.stderr and "Traceback" not in done.stderr
    assert foreign.read_bytes() == before
    assert not Path(f"{foreign}-wal").exists() and not Path(f"{foreign}-shm").exists()


def test_gilmsg_logger_outbox_refuses_a_foreign_database_untouched(make_bus, foreign):
    bus = make_bus(["pub", "r1"])
    before = foreign.read_bytes()
    done = run(bus, [str(BIN / "gilmsg-logger"), "--config-filename", str(bus.config_file),
                     "--name", "pub", "--recipients", "r1", "--outbox", str(foreign),
                     "--message", "hello"])
    assert done.returncode == _common.EXIT_OUTBOX, done.stdout + done.stderr
    assert "not a gilmsg outbox" in done.stderr and "Traceback" not in done.stderr
    assert foreign.read_bytes() == before


def test_gilmsg_tail_dedup_file_refuses_a_foreign_database_untouched(make_bus, foreign):
    bus = make_bus(["pub", "r1"])
    before = foreign.read_bytes()
    tail = bus.spawn_tail("r1", "--dedup-file", str(foreign))
    code = tail.wait()
    assert code != 0 and "not a gilmsg consumed-message record" in tail.stderr, tail.stderr
    assert "Traceback" not in tail.stderr
    assert foreign.read_bytes() == before

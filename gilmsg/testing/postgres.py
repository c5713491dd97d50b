"""A throw-away PostgreSQL server for tests and benchmarks, on 127.0.0.1 only.

Uses Debian's ``postgresql`` package (``/usr/lib/postgresql/<version>/bin``): ``initdb`` and the
server run as the ``postgres`` user when the caller is root (PostgreSQL refuses root), else as
the caller, in a directory this helper makes and owns (data and unix socket inside it), with
TCP on 127.0.0.1 at a port picked free at run time and password (SCRAM) logins only. The server
is stopped by its pid in :meth:`LocalPostgres.stop` (and at interpreter exit as a last resort),
and the directory removed::

    with LocalPostgres() as server:
        url = server.create_database("outbox")   # postgresql://postgres:...@127.0.0.1:PORT/outbox
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from gilmsg.testing.bus import free_port

#: Where Debian's packages put the server binaries (newest version first).
BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: Environment variable where ``./run tests`` leaves why it could not install the package.
INSTALL_NOTE_ENV = "GILMSG_POSTGRESQL_INSTALL_NOTE"
#: Bounds on initdb, on a start and on a stop (seconds).
INIT_TIMEOUT = 120.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0

_running: set[LocalPostgres] = set()


def bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with ``initdb`` and ``postgres`` (None: none)."""
    found = [Path(p) for p in glob.glob(BIN_GLOB)
             if (Path(p) / "initdb").exists() and (Path(p) / "postgres").exists()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    return found[0] if found else None


def missing_reason() -> str | None:
    """Why no server can be started here (None if one can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg 3 is not installed (pip install 'gilmsg[postgresql]')"
    if bin_dir() is None:
        why = os.environ.get(INSTALL_NOTE_ENV)
        return ("the PostgreSQL server is not installed (Debian package postgresql; ./run tests "
                "installs it when run as root with apt-get)" + (f": {why}" if why else ""))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


class ServerError(RuntimeError):
    """The server did not initialise, start or stop in time; the message has its log's tail."""


class LocalPostgres:
    """One PostgreSQL cluster on 127.0.0.1; :meth:`start` / :meth:`stop` (again, to restart).

    Args:
        fsync: keep the server's fsync on (benchmarks); tests may turn it off (nothing here
            survives a power loss anyway, and it saves the shared machine's disk).
        primary: make this a hot standby (read-only, streaming) of that running server, from
            a ``pg_basebackup`` of it, instead of a new cluster (same password).

    Attributes:
        port: its TCP port on 127.0.0.1.
        password: the superuser ``postgres``'s password (logins need it).
        root: the directory it owns (removed by :meth:`cleanup`).
    """

    def __init__(self, fsync: bool = True, primary: LocalPostgres | None = None) -> None:
        reason = missing_reason()
        if reason:
            raise ServerError(reason)
        found = bin_dir()
        assert found is not None
        self.bin: Path = found
        self.root = Path(tempfile.mkdtemp(prefix="gilmsg-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.password: str = (primary.password if primary is not None
                              else secrets.token_hex(12))
        self.fsync = fsync
        self._user: str | None = None
        self._proc: subprocess.Popen | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            info = pwd.getpwnam("postgres")
            os.chown(self.root, info.pw_uid, info.pw_gid)
        self.root.chmod(0o700)
        if primary is None:
            self._initdb()
        else:
            self._basebackup(primary)

    def _run_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"cwd": str(self.root), "env": self._env()}
        if self._user is not None:
            kwargs["user"] = self._user
            kwargs["group"] = pwd.getpwnam(self._user).pw_gid
            kwargs["extra_groups"] = []
        return kwargs

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update({"LC_ALL": "C", "LANG": "C", "HOME": str(self.root)})
        return env

    def _initdb(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._user is not None:
            info = pwd.getpwnam(self._user)
            os.chown(pwfile, info.pw_uid, info.pw_gid)
        pwfile.chmod(0o600)
        try:
            done = subprocess.run(
                [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                 f"--pwfile={pwfile}", "--auth-local=scram-sha-256",
                 "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                capture_output=True, text=True, timeout=INIT_TIMEOUT, **self._run_kwargs())
        except subprocess.TimeoutExpired:
            self.cleanup()
            raise ServerError(f"initdb took more than {INIT_TIMEOUT:g}s") from None
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            self.cleanup()
            raise ServerError("initdb failed: " + " | ".join(tail))
        self.sockets.mkdir()
        if self._user is not None:
            info = pwd.getpwnam(self._user)
            os.chown(self.sockets, info.pw_uid, info.pw_gid)

    def _basebackup(self, primary: LocalPostgres) -> None:
        env = self._env()
        env["PGPASSWORD"] = self.password
        kwargs = self._run_kwargs()
        kwargs["env"] = env
        try:
            done = subprocess.run(
                [str(self.bin / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                 "-U", "postgres", "-D", str(self.data), "-R", "-X", "stream", "--no-sync",
                 "--checkpoint=fast"],
                capture_output=True, text=True, timeout=INIT_TIMEOUT, **kwargs)
        except subprocess.TimeoutExpired:
            self.cleanup()
            raise ServerError(f"pg_basebackup took more than {INIT_TIMEOUT:g}s") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            self.cleanup()
            raise ServerError("pg_basebackup failed: " + " | ".join(tail))
        self.sockets.mkdir()
        if self._user is not None:
            info = pwd.getpwnam(self._user)
            os.chown(self.sockets, info.pw_uid, info.pw_gid)

    def url(self, dbname: str = "postgres", user: str = "postgres",
            password: str | None = None) -> str:
        """``postgresql://user:password@127.0.0.1:port/dbname`` (the superuser's by default)."""
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        """True while the server process lives."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server; return once it accepts logins on 127.0.0.1.

        Raises:
            ServerError: not up within ``timeout`` (the process is stopped again).
        """
        if self.running:
            return
        log = open(self.log, "ab")
        if self._user is not None:
            info = pwd.getpwnam(self._user)
            os.chown(self.log, info.pw_uid, info.pw_gid)
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.sockets}",
                "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=100",
                "-c", "shared_buffers=32MB", "-c", "logging_collector=off"]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      **self._run_kwargs())
        log.close()
        _running.add(self)
        deadline = time.monotonic() + timeout
        import psycopg

        while True:
            if self._proc.poll() is not None:
                self._proc = None
                _running.discard(self)
                raise ServerError(f"postgres exited at start: {self._log_tail()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerError(f"postgres not accepting logins after {timeout:g}s: "
                                      f"{self._log_tail()}") from None
                time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])

    def stop(self, timeout: float = STOP_TIMEOUT, kill: bool = False) -> None:
        """Stop the server: a fast shutdown (SIGINT), SIGKILL after ``timeout``; idempotent.

        ``kill``: SIGKILL at once (a crash; the next start recovers from its WAL). Its backends
        are reaped with it: the postmaster's process group is killed too.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            sig = signal.SIGKILL if kill else signal.SIGINT
            try:
                os.killpg(proc.pid, sig) if kill else proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5.0)
        if kill:  # the backends of a killed postmaster may linger a moment: same group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc = None
        _running.discard(self)

    def restart(self) -> None:
        """Stop (fast shutdown) and start again on the same port and data."""
        self.stop()
        self.start()

    def create_database(self, name: str | None = None, **settings: str) -> str:
        """Create an empty database (a fresh name unless given); its URL.

        ``settings``: ``ALTER DATABASE ... SET key = value`` for each (e.g.
        ``default_transaction_read_only="on"``: a stand-in for a read-only replica).
        """
        import psycopg

        name = name or f"db_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            for key, value in settings.items():
                conn.execute(f'ALTER DATABASE "{name}" SET {key} = {value}')
        return self.url(name)

    def sql(self, dbname: str, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser in ``dbname`` (autocommit); its rows, if any."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            cur = conn.execute(statement, args)
            return cur.fetchall() if cur.description else []

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@atexit.register
def _stop_all() -> None:  # a last resort: fixtures stop their server themselves
    for server in list(_running):
        server.cleanup()

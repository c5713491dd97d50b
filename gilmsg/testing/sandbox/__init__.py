"""A whole gilmsg bus on 127.0.0.1: PKI, a complete ``fedmsg.d``, a relay and stand-in recipients.

Used by ``gilmsg-sandbox``, ``gilmsg-certs dev --fedmsg-d`` and the pytest plugin
(:mod:`gilmsg.testing.pytest_plugin`)::

    with Sandbox(tmp_path, standins=parse_standins(["worker", "slow:delay=0.5"])) as box:
        box.start()
        gilmsg.publish(topic="t", msg={}, recipients=["worker", "slow"],
                       **box.config_for("publisher"))

A **stand-in** is a real process (``python -m gilmsg.testing.sandbox``) that acknowledges as a named
identity: it holds that identity's certificate and endpoint, validates what it receives,
and answers the gilmsg messages addressed to it with signed ACKs, like ``gilmsg-tail`` would.
Its behaviour is written ``NAME[:OPTION[,OPTION...]]``:

=================  =========================================================================
``delay=SECONDS``  acknowledge each message that long after its first copy arrived (slow)
``fail=FRACTION``  never acknowledge that fraction of the messages (chosen at random per msg_id)
``reject=FRACTION`` answer that fraction with a ``rejected`` ACK (it does not count)
``absent``         an identity of the bus (certificate, endpoint) with no process behind it
``revoked``        its certificate is on the CRL: it answers, and every ACK is refused
=================  =========================================================================

Each stand-in prints one JSON object per line on stdout (``{"event": "ready"}``, then one
``received`` event per message it got, with the action it took), which the sandbox shows and the
pytest plugin records.

The parts: :mod:`.spec` (the stand-in syntax), :mod:`.pki` (CA, CRL, certificates),
:mod:`.config` (the bus configuration and its file), :mod:`.standin` (the stand-in process);
this module is the supervisor that starts and watches them.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gilmsg.errors import ConfigError, InvalidInput
from gilmsg.testing.bus import DEFAULT_WAIT, Process, child_env, config_copy, free_port
from gilmsg.testing.sandbox.config import CONFIG_NAME, bus_config, render_config, write_config
from gilmsg.testing.sandbox.pki import ensure_pki
from gilmsg.testing.sandbox.spec import (
    RESERVED_NAMES,
    StandInSpec,
    check_service_name,
    parse_standin,
    parse_standins,
    read_standins_file,
)
from gilmsg.testing.sandbox.standin import CREDENTIALS, run_standin, standin_main

#: The identity ``gilmsg-sandbox`` adds for your code when ``--service`` is not given.
DEFAULT_SERVICES = ("publisher",)
#: The lock file that keeps a second sandbox off a directory in use.
LOCK_NAME = ".gilmsg-sandbox.lock"
#: ``python -c`` program run before each child's own command: the child gets SIGTERM when the
#: sandbox process dies, however it dies (Linux PR_SET_PDEATHSIG survives the exec).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)

__all__ = [
    "CONFIG_NAME", "CREDENTIALS", "DEFAULT_SERVICES", "RESERVED_NAMES", "Sandbox", "StandIn",
    "StandInSpec", "bus_config", "check_service_name", "ensure_pki", "executable",
    "parse_standin", "parse_standins", "port_of", "read_standins_file", "render_config",
    "run_standin", "standin_main", "write_config",
]


@dataclass
class StandIn:
    """A running (or absent) stand-in: its spec, process and the events it reported."""

    spec: StandInSpec
    process: Process | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)

    def add(self, event: dict[str, Any]) -> None:
        """Record one event (called by the sandbox's reader thread)."""
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def received(self, everything: bool = False) -> list[dict[str, Any]]:
        """Envelopes (without credentials) of the messages received so far, in arrival order.

        Only gilmsg messages addressed to this stand-in (or to no one in particular), each once,
        unless ``everything``: then also plain fedmsg messages and those for other recipients.
        """
        with self.lock:
            return [e["envelope"] for e in self.events if e.get("event") == "received"
                    and (everything or e.get("action") != "ignore")]

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        """Wait until ``predicate(events)`` holds; False if it still does not after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
            return True


def _is_ready(events: list[dict[str, Any]]) -> bool:
    return any(e.get("event") == "ready" for e in events)


def port_of(endpoint: str) -> int:
    """The port of ``tcp://host:port``."""
    return int(endpoint.rsplit(":", 1)[1])


def _listening(endpoint: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port_of(endpoint)), timeout=0.2):
            return True
    except OSError:
        return False


def executable(name: str) -> str:
    """The path of an installed command, next to this interpreter when it is there."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


class Sandbox:
    """A local gilmsg bus: PKI, ``fedmsg.d``, fedmsg-relay, stand-ins and a traffic watcher.

    Args:
        root: directory for ``ssl/`` and ``fedmsg.d/`` (created; existing certificates reused).
        standins: the stand-in recipients.
        services: identities for your own code (certificate and endpoint, no process).
        relay: run fedmsg-relay (``relay_inbound``/``relay_outbound``).
        watch: run ``gilmsg-tail --no-ack`` to show the traffic (events with ``source`` "bus").
        extra: config keys added to (or replacing) those of :func:`bus_config`.
        on_line: called with ``(source, text)`` for every line a child prints; ``source`` is a
            stand-in name, ``"relay"`` or ``"bus"``. Stand-in lines are JSON events.
        seed: seed of the stand-ins' random choices (``fail=``, ``reject=``).
        record: keep every stand-in event in :attr:`standins` (for assertions); False keeps
            only what start-up needs, for a long-running sandbox.

    Every process is stopped (its whole process group) by :meth:`stop` or on leaving ``with``.
    """

    def __init__(self, root: str | os.PathLike[str], standins: Sequence[StandInSpec],
                 services: Sequence[str] = DEFAULT_SERVICES, *, relay: bool = True,
                 watch: bool = False, extra: Mapping[str, Any] | None = None,
                 on_line: Callable[[str, str], None] | None = None,
                 seed: int | None = None, record: bool = True) -> None:
        self.root = Path(root).resolve()
        self.ssldir = self.root / "ssl"
        self.config_dir = self.root / "fedmsg.d"
        self.specs = list(standins)
        self.services = [check_service_name(s) for s in services]
        clash = set(self.services) & {s.name for s in self.specs}
        if clash:
            raise InvalidInput(f"{', '.join(sorted(clash))}: both a service and a stand-in")
        self.relay = relay
        self.watch = watch
        self.extra = dict(extra or {})
        self.on_line = on_line
        self.seed = seed
        self.record = record
        self.standins: dict[str, StandIn] = {s.name: StandIn(s) for s in self.specs}
        self.processes: dict[str, Process] = {}
        self.config: dict[str, Any] = {}
        #: stand-in name -> ``http://127.0.0.1:PORT`` of its /live, /ready and /metrics.
        self.monitoring: dict[str, str] = {}
        self._threads: list[threading.Thread] = []
        self._lock: int | None = None

    @property
    def names(self) -> list[str]:
        """Every identity of the bus: services, then stand-ins."""
        return self.services + [s.name for s in self.specs]

    @property
    def config_file(self) -> Path:
        """The fedmsg.d file of the bus (for ``--config-filename``)."""
        return self.config_dir / CONFIG_NAME

    def prepare(self, log: Callable[[str], None] | None = None) -> Path:
        """Create the PKI and write the configuration (new free ports); returns the file.

        Raises:
            CertificateError: an existing CA in ``root/ssl`` cannot be used.
        """
        self._lock_root()
        ensure_pki(self.ssldir, self.names, revoked=[s.name for s in self.specs if s.revoked],
                   log=log)
        self.config = bus_config(self.ssldir, self.names, relay=self.relay, extra=self.extra)
        write_config(self.config_dir, self.config, comment=(
            "Written by gilmsg-sandbox: a local gilmsg bus on 127.0.0.1 (ports change on every\n"
            "start). Identities: " + ", ".join(self.names)))
        return self.config_file

    def _lock_root(self) -> None:
        """Hold ``root/.gilmsg-sandbox.lock`` until :meth:`stop`: a second sandbox on the same
        directory would rewrite its ``fedmsg.d`` with new ports under the first one's clients.

        Raises:
            ConfigError: another live sandbox holds the directory (nothing was written).
        """
        if self._lock is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"{self.root} is in use by another gilmsg-sandbox (pid {holder}): "
                              f"stop it, or give another --dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def config_for(self, name: str, **overrides: Any) -> dict[str, Any]:
        """The configuration of identity ``name`` (a fresh copy) to pass to gilmsg calls."""
        if name not in self.names:
            raise InvalidInput(f"{name!r} is not an identity of this sandbox "
                               f"({', '.join(self.names)})")
        return config_copy(self.config, name, overrides)

    def env(self) -> dict[str, str]:
        """Environment of child processes: unbuffered output, this interpreter's scripts first."""
        return child_env()

    def _spawn(self, source: str, argv: Sequence[str]) -> Process:
        # Every child dies with this process, even a SIGKILLed one (the relay and the watcher
        # have no --parent of their own): the guard sets PR_SET_PDEATHSIG, then execs argv.
        guard = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid())]
        proc = Process([*guard, *argv], cwd=self.root, env=self.env())
        self.processes[source] = proc
        thread = threading.Thread(target=self._pump, args=(source, proc), daemon=True,
                                  name=f"sandbox-{source}")
        thread.start()
        self._threads.append(thread)
        return proc

    def _pump(self, source: str, proc: Process) -> None:
        while True:
            try:
                line = proc.lines.get(timeout=0.5)
            except Exception:  # queue.Empty
                if proc.proc.poll() is not None and proc.lines.empty():
                    return
                continue
            proc.seen.append(line)
            del proc.seen[:-50]  # enough for error messages; a sandbox may run for days
            standin = self.standins.get(source)
            if standin is not None:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if isinstance(event, dict) and (self.record or event.get("event") == "ready"):
                    standin.add(event)
            if self.on_line is not None:
                self.on_line(source, line)

    def start(self, timeout: float = DEFAULT_WAIT, log: Callable[[str], None] | None = None
              ) -> None:
        """Prepare if needed, start relay, stand-ins and watcher, and wait until they are ready.

        Raises:
            ConfigError: a process exited or did not get ready within ``timeout`` (its last
                stderr line says why); everything started is stopped again.
        """
        if not self.config:
            self.prepare(log)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        config_file = str(self.config_file)
        if self.relay:
            self._spawn("relay", [executable("fedmsg-relay"), "--config-filename", config_file])
        for spec in self.specs:
            if spec.absent:
                continue
            argv = [sys.executable, "-m", "gilmsg.testing.sandbox",
                    "--config-filename", config_file, "--spec", spec.to_text(),
                    "--parent", str(os.getpid())]
            if self.seed is not None:
                argv += ["--seed", str(self.seed)]
            port = free_port()
            argv += ["--monitoring", f"127.0.0.1:{port}"]
            self.monitoring[spec.name] = f"http://127.0.0.1:{port}"
            self.standins[spec.name].process = self._spawn(spec.name, argv)
        if self.watch:
            self._spawn("bus", [executable("gilmsg-tail"), "--config-filename", config_file,
                                "--no-ack", "--show-acks", "--terse", "--no-validate"])
        deadline = time.monotonic() + timeout
        for spec in self.specs:
            standin = self.standins[spec.name]
            if standin.process is None:
                continue
            while not standin.wait(_is_ready, 0.2):  # in slices: it may die without a word
                if standin.process.proc.poll() is not None or time.monotonic() > deadline:
                    raise ConfigError(self._why(spec.name, "stand-in", timeout))
        if self.relay:
            ends = [self.config["relay_inbound"][0], self.config["endpoints"]["relay_outbound"][0]]
            while not all(_listening(e) for e in ends):
                if self.processes["relay"].proc.poll() is not None or time.monotonic() > deadline:
                    raise ConfigError(self._why("relay", "fedmsg-relay", timeout))
                time.sleep(0.05)

    def _why(self, source: str, what: str, timeout: float) -> str:
        proc = self.processes[source]
        code = proc.proc.poll()
        last = (proc.stderr_lines or ["no output"])[-1]
        if code is None:
            return f"{what} {source} not ready within {timeout:g}s ({last})"
        return f"{what} {source} exited with code {code}: {last}"

    def dead(self) -> list[tuple[str, int]]:
        """``(source, exit code)`` of every child that exited although it was not stopped."""
        return [(s, p.proc.returncode) for s, p in self.processes.items()
                if p.proc.poll() is not None]

    def stop_one(self, name: str) -> None:
        """Stop one child (a stand-in, ``relay`` or ``bus``), e.g. to make a recipient go away."""
        proc = self.processes.pop(name, None)
        if proc is not None:
            proc.stop()

    def stop(self) -> None:
        """Stop every child process (its whole process group); waits a few seconds at most."""
        for proc in self.processes.values():
            if proc.proc.poll() is None:
                proc.signal(15)
        for proc in self.processes.values():
            proc.stop(timeout=3.0)
        self.processes.clear()
        for thread in self._threads:
            thread.join(1.0)
        self._threads.clear()
        if self._lock is not None:
            os.close(self._lock)  # releases the directory (the file stays, harmlessly)
            self._lock = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
